"""The value head ``V(s_t)`` read on head 0's normed hidden state."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ValueHead(nn.Module):
    """``Linear(dim, 1, bias=False)``, unbounded output.

    The single parameter is ``weight [1, dim]`` (as an ``nn.Linear``), so a model directory
    stores it as ``value_head.weight``.
    """

    def __init__(self, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, dim))
        nn.init.normal_(self.weight, mean=0.0, std=init_std)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden [B, T, dim]`` (``MTPTransformer(..., return_hidden=True)[1]``) ->
        values ``[B, T]``."""
        return F.linear(hidden, self.weight).squeeze(-1)
