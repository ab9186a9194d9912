"""Pure-PyTorch Meta MTP transformer, value head, KV cache and model arguments.

The MTP loss lives in :mod:`weighted_mtp.losses`; model directories and
``weighted_mtp.model_io.load_model`` in :mod:`weighted_mtp.model_io`.
"""

from weighted_mtp.models.args import ModelArgs, ModelArgsError
from weighted_mtp.models.kv_cache import KVCache
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
    "KVCache",
    "MTPTransformer",
    "ModelArgs",
    "ModelArgsError",
    "RMSNorm",
    "TransformerBlock",
    "ValueHead",
    "apply_rope",
    "debug_args",
    "rope_tables",
]
