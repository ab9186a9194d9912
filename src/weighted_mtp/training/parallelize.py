"""Data parallelism, activation checkpointing and mixed precision applied to a training module
built on one device (torchtitan's split).

``ddp``: ``DistributedDataParallel`` around the whole module. ``fsdp``: FSDP2 ``fully_shard`` on
every transformer block (``module.blocks()``), on the value head (its own group) and on the
root, which then owns the embeddings and the shared norm + unembedding. Either way one forward
and one backward per micro-batch go through the wrapper, and gradient averaging is left to it.

Mixed precision (``param_dtype`` bf16/fp16 under FSDP2) keeps the maths that cannot afford it
in fp32: the value head has its own group whose parameters stay fp32 (V and the TD errors,
~1e-3, would otherwise sit on bf16's ~4e-3 grid near 0.5), and the root does not cast its
forward inputs, so loss inputs such as Rho-1's ``ref_ce`` and the step's token-count
denominators (``LossContext``) reach the loss as the caller made them. Gradients are reduced
in fp32. Under DDP the loop's ``torch.autocast`` gives the bf16 compute and the value head opts
out of it itself (:class:`weighted_mtp.models.value_head.ValueHead`).

Activation checkpointing (``blocks``) recomputes each block's forward in the backward instead
of keeping its activations: the composable, non-reentrant ``checkpoint`` runs on module hooks,
so module structure and state-dict keys stay exactly as they were (no
``_checkpoint_wrapped_module`` prefix in model directories or DCP checkpoints). Applied before
``fully_shard``, as torchtitan does, so FSDP2 re-gathers a block's parameters for the
recomputation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed._composable import checkpoint
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

ACTIVATION_CHECKPOINTING = ("none", "blocks")
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def apply_activation_checkpointing(module: nn.Module, mode: str) -> nn.Module:
    """Recompute every block of ``module.blocks()`` (trunk layers and heads) in the backward
    when ``mode`` is ``blocks``; ``none`` leaves ``module`` as it is. In place; returns it."""
    if mode not in ACTIVATION_CHECKPOINTING:
        raise ValueError(
            f"runtime.activation_checkpointing={mode!r}: expected one of {ACTIVATION_CHECKPOINTING}"
        )
    if mode == "blocks":
        for block in module.blocks():  # type: ignore[operator]
            checkpoint(block)
    return module


def mixed_precision_policies(
    param_dtype: torch.dtype | None,
) -> tuple[MixedPrecisionPolicy, MixedPrecisionPolicy, MixedPrecisionPolicy] | None:
    """FSDP2 policies ``(blocks, value head, root)`` for compute in ``param_dtype``; None when
    ``param_dtype`` is None or fp32 (nothing to cast).

    Blocks: parameters and inputs (the residual stream) in ``param_dtype``. Value head: fp32
    parameters, its input cast up to fp32. Root: parameters in ``param_dtype`` but inputs left
    alone (ids are integers; every float input is a loss input). All reduce in fp32."""
    if param_dtype is None or param_dtype == torch.float32:
        return None
    if param_dtype not in _LOW_PRECISION:
        raise ValueError(f"runtime.dtype={param_dtype}: expected float32, bfloat16 or float16")
    blocks = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    value_head = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    root = MixedPrecisionPolicy(
        param_dtype=param_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False
    )
    return blocks, value_head, root


def parallelize(
    module: nn.Module,
    strategy: str,
    device: torch.device,
    *,
    param_dtype: torch.dtype | None,
    activation_checkpointing: str = "none",
) -> nn.Module:
    """Wrap ``module`` (already on ``device``) for ``strategy`` (``ddp`` | ``fsdp``).

    ``param_dtype``: the compute dtype (``runtime.dtype``); under FSDP2 a bf16/fp16 value is
    the parameter policy described in the module docstring, on any device (CPU/gloo included).
    Under DDP it is the loop's autocast that applies it. ``activation_checkpointing``:
    ``none`` | ``blocks`` (:func:`apply_activation_checkpointing`)."""
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"runtime.strategy={strategy!r}: expected 'ddp' or 'fsdp'")
    apply_activation_checkpointing(module, activation_checkpointing)
    if strategy == "ddp":
        return DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,
        )
    policies = mixed_precision_policies(param_dtype)
    block_mp, head_mp, root_mp = policies if policies else (MixedPrecisionPolicy(),) * 3
    for block in module.blocks():  # type: ignore[operator]
        fully_shard(block, mp_policy=block_mp)
    value_head = getattr(module, "value_head", None)
    if value_head is not None:
        fully_shard(value_head, mp_policy=head_mp)
    fully_shard(module, mp_policy=root_mp)
    return module


def enable_tf32(device: torch.device) -> None:
    """Let fp32 matmuls and convolutions on CUDA use TF32 tensor cores (A100 and later): the
    fp32 parts that remain under bf16 training (value head, optimizer-side maths, the fp32
    runs) get 8x the fp32 throughput for a 10-bit mantissa in the products, fp32 accumulate.
    A no-op elsewhere. Process-wide: the worker calls it once before training."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


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
