"""Pure-PyTorch Meta MTP transformer, value head, KV cache and model arguments.

The MTP loss lives in :mod:`weighted_mtp.losses`; model directories in
:mod:`weighted_mtp.model_io` (``load_model`` is re-exported here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from weighted_mtp.model_io.loading import load_model

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
    "load_model",
    "rope_tables",
]


def __getattr__(name: str) -> Any:
    # load_model lives in model_io.loading, which imports this package's submodules: resolving it
    # on first access lets either package be imported first without a circular import.
    if name == "load_model":
        from weighted_mtp.model_io.loading import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
