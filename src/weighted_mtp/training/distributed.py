"""Process-group set-up and the few collectives the loop and the losses need (workers only).

Only the torchrun workers import this module (ARCHITECTURE.md: only the processes the
launcher starts touch ``torch.distributed``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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


def init_distributed(requested_device: str) -> WorldInfo:
    """Join the process group torchrun describes in the environment (gloo on CPU/MPS, nccl
    on CUDA)."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(requested_device, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, device_id=device if device.type == "cuda" else None
        )
    return WorldInfo(rank=rank, local_rank=local_rank, world_size=world, device=device)


def _comm_device(tensor: torch.Tensor) -> torch.device:
    # gloo works on CPU tensors; nccl on CUDA ones.
    backend = dist.get_backend()
    return tensor.device if backend == "nccl" else torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum across ranks (a new tensor, on ``tensor``'s device)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor.clone()
    t = tensor.detach().to(_comm_device(tensor)).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.to(tensor.device)


def all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    """``op`` in ``sum``/``min``/``max`` across ranks."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor.clone()
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    t = tensor.detach().to(_comm_device(tensor)).clone()
    dist.all_reduce(t, op=ops[op])
    return t.to(tensor.device)


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor of any length across ranks (rank order)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    world = dist.get_world_size()
    dev = _comm_device(tensor)
    local = tensor.detach().to(dev).reshape(-1)
    size = torch.tensor([local.numel()], device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, dtype=local.dtype, device=dev)
    padded[: local.numel()] = local
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.cat([p[: int(s)] for p, s in zip(parts, sizes, strict=True)])
    return out.to(tensor.device)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
