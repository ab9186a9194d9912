"""Data parallelism applied to a training module built on one device (torchtitan's split).

``ddp``: ``DistributedDataParallel`` around the whole module. ``fsdp``: FSDP2
``fully_shard`` on every transformer block (``module.blocks()``) and on the root, which then
owns the embeddings, the shared norm + unembedding and the value head; bf16 parameters with
fp32 gradient reduction on CUDA. Either way one forward and one backward per micro-batch go
through the wrapper, and gradient averaging is left to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel


def parallelize(
    module: nn.Module, strategy: str, device: torch.device, *, param_dtype: torch.dtype | None
) -> nn.Module:
    """Wrap ``module`` (already on ``device``) for ``strategy`` (``ddp`` | ``fsdp``)."""
    if strategy == "ddp":
        return DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,
        )
    if strategy == "fsdp":
        mp = None
        if param_dtype is not None and device.type == "cuda":
            mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        kwargs = {"mp_policy": mp} if mp is not None else {}
        for block in module.blocks():  # type: ignore[operator]
            fully_shard(block, **kwargs)
        fully_shard(module, **kwargs)
        return module
    raise ValueError(f"runtime.strategy={strategy!r}: expected 'ddp' or 'fsdp'")


def inner_module(wrapped: nn.Module) -> nn.Module:
    """The training module under a DDP wrapper (FSDP2 modifies the module in place)."""
    return wrapped.module if isinstance(wrapped, DistributedDataParallel) else wrapped


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, enabled: bool) -> Iterator[None]:
    """DDP: skip the gradient all-reduce on accumulation micro-batches (all but the last).

    FSDP2 reduce-scatters after every micro-batch: skipping it would keep an unsharded fp32
    gradient of the whole model on every rank until the last micro-batch (25 GiB at 7B), the
    very memory FSDP is there to save; the extra communication is the cheaper price."""
    if isinstance(wrapped, DistributedDataParallel) and not enabled:
        with wrapped.no_sync():
            yield
        return
    yield
