"""Process-group set-up and the few collectives the loop and the losses need (workers only).

Only the torchrun workers import this module (ARCHITECTURE.md: only the processes the
launcher starts touch ``torch.distributed``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class WorldInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(requested: str, local_rank: int) -> torch.device:
    """``cpu`` | ``cuda`` | ``mps`` | ``auto`` -> the device of this rank."""
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("runtime.device=cuda but CUDA is not available on this machine")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if requested == "mps":
        if not torch.backends.mps.is_available():
            raise RuntimeError("runtime.device=mps but the Metal device is not available")
        return torch.device("mps")
    return torch.device("cpu")


def process_group_backend(device: torch.device) -> str:
    """The backend string for a rank whose training device is ``device``.

    On CUDA the group is device-mapped: CUDA tensors travel over NCCL, CPU tensors (the
    pickles of object collectives, anything a caller keeps on the host) over gloo, inside one
    process group. NCCL alone has no CPU path ("No backend type associated with device type
    cpu")."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init_distributed(requested_device: str, timeout_s: float | None = None) -> WorldInfo:
    """Join the process group torchrun describes in the environment.

    ``timeout_s`` (``runtime.collective_timeout_s``) bounds every collective and barrier:
    rank 0's long checkpoint and model I/O must fit inside it, where NCCL's default of ten
    minutes would abort the job. ``None`` keeps torch's default."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"collective timeout must be > 0 seconds, got {timeout_s}")
    device = resolve_device(requested_device, local_rank)
    if not dist.is_initialized():
        options: dict = {}
        if timeout_s is not None:
            options["timeout"] = timedelta(seconds=timeout_s)
        dist.init_process_group(
            backend=process_group_backend(device),
            device_id=device if device.type == "cuda" else None,
            **options,
        )
    return WorldInfo(rank=rank, local_rank=local_rank, world_size=world, device=device)


# The collectives below run on the tensor's own device: the process group is device-mapped
# (see ``process_group_backend``), so a tensor on the training device stays there, and no
# collective costs a device-to-host copy.


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum across ranks (a new tensor, on ``tensor``'s device)."""
    return all_reduce(tensor, "sum")


def all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    """``op`` in ``sum``/``min``/``max`` across ranks (a new tensor, on ``tensor``'s device)."""
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    if op not in ops:
        raise ValueError(f"unknown reduction {op!r}; expected one of {sorted(ops)}")
    t = tensor.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=ops[op])
    return t


def all_gather_cat_at(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate a 1-D tensor of any length across ranks (rank order), on ``tensor``'s
    device, and say where this rank's part starts in the result.

    The lengths reach the host once (one small transfer): the padded receive buffers need
    them, and the offset comes from the same read. Callers on the hot path pay that one sync
    per call."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor, 0
    world = dist.get_world_size()
    local = tensor.detach().reshape(-1)
    size = torch.full((1,), local.numel(), dtype=torch.int64, device=local.device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    lengths = torch.cat(sizes).tolist()
    longest = max(lengths)
    padded = torch.zeros(longest, dtype=local.dtype, device=local.device)
    padded[: local.numel()] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    cat = torch.cat([p[:n] for p, n in zip(parts, lengths, strict=True)])
    return cat, sum(lengths[: dist.get_rank()])


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """:func:`all_gather_cat_at` without the offset."""
    return all_gather_cat_at(tensor)[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
