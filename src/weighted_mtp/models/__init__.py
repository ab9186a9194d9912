"""Pure-PyTorch Meta MTP transformer, value head, KV cache and the head-by-head MTP loss."""

from weighted_mtp.models.adapter import load_model
from weighted_mtp.models.args import ModelArgs, ModelArgsError
from weighted_mtp.models.kv_cache import KVCache
from weighted_mtp.models.mtp_loss import (
    IGNORE_INDEX,
    MTPLossOutput,
    mtp_loss_head_by_head,
    mtp_loss_naive,
    shift_labels,
)
from weighted_mtp.models.transformer import (
    MTPTransformer,
    RMSNorm,
    TransformerBlock,
    apply_rope,
    debug_args,
    rope_tables,
)
from weighted_mtp.models.value_head import ValueHead

__all__ = [
    "IGNORE_INDEX",
    "KVCache",
    "MTPLossOutput",
    "MTPTransformer",
    "ModelArgs",
    "ModelArgsError",
    "RMSNorm",
    "TransformerBlock",
    "ValueHead",
    "apply_rope",
    "debug_args",
    "load_model",
    "mtp_loss_head_by_head",
    "mtp_loss_naive",
    "rope_tables",
    "shift_labels",
]
