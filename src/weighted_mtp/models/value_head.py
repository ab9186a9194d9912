"""The value head ``V(s_t)`` read on head 0's normed hidden state."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    # torch.autocast refuses device types it has no policy for (meta, fake devices), even
    # to disable it: only step out of an autocast that is on.
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False) if enabled else contextlib.nullcontext()


class ValueHead(nn.Module):
    """``Linear(dim, 1, bias=False)``, unbounded output, computed in fp32 (or wider).

    The single parameter is ``weight [1, dim]`` (as an ``nn.Linear``), so a model directory
    stores it as ``value_head.weight``.

    Precision: the trunk may run in bf16, but V is read at every position and the TD errors
    are differences of neighbouring values (~1e-3..1e-2 around V ~ 0.5, where bf16's spacing
    is ~4e-3). So the input is cast up to at least fp32 and the product runs outside any
    autocast: the rounding of a bf16 hidden state then averages out over ``dim`` terms instead
    of V itself being rounded to bf16. A float64 module stays float64.
    """

    def __init__(self, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, dim))
        nn.init.normal_(self.weight, mean=0.0, std=init_std)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden [B, T, dim]`` (``MTPTransformer(..., return_hidden=True)[1]``) ->
        values ``[B, T]`` in ``promote(weight dtype, float32)``."""
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        with _autocast_off(hidden.device.type):
            # [B, T, dim] @ [dim]: a fresh [B, T] tensor (FSDP2 warns about returned views).
            return torch.matmul(hidden.to(dtype), self.weight.to(dtype)[0])
