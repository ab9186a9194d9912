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


def running_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, T, dim]``: at each position the mean of ``hidden`` over the masked positions up to
    and including it (causal); a position before a row's first masked one keeps its own
    hidden state. ``mask`` None counts every position."""
    if mask is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    m = mask.to(hidden.dtype)[..., None]
    count = m.cumsum(1)
    pooled = (hidden * m).cumsum(1) / count.clamp_min(1)
    return torch.where(count > 0, pooled, hidden)


class ValueHead(nn.Module):
    """``V(s_t) = w . mean(h_u : u <= t, u an output position) + b``: a linear readout, with
    a bias, of the running mean of head 0's normed hidden states over the output so far;
    unbounded, computed in fp32 (or wider).

    Why the running mean (measured, docs/experiment.md "The critic"): on the micro base model,
    the best linear readout of the hidden state at a single position (ridge regression to the
    Monte-Carlo target on 640 balanced training programs) ranks held-out programs at chance
    (last-token AUC 0.50, head 0; 0.53 on the trunk's output), while the same readout of the
    running mean reaches 0.66 [0.60, 0.73]. A bug is a few tokens somewhere in the program;
    the state at the last token of a small model does not carry them, their average does.
    Still a function of the prefix only (causal), so TD errors keep their meaning; they are
    smaller late in a program (one token moves a mean of ``n`` by ``1/n``).

    The parameters are ``weight [1, dim]`` and ``bias [1]`` (as an ``nn.Linear``): a model
    directory stores ``value_head.weight`` and ``value_head.bias``. The bias carries the base
    rate of the reward; it starts at 0. A directory holding a head without a bias was written
    by the per-position head this one replaced and is refused when loaded
    (:func:`weighted_mtp.model_io.loading.value_head_state`): retrain the critic.

    Precision: the trunk may run in bf16, but V is read at every position and the TD errors
    are differences of neighbouring values (~1e-3..1e-2 around V ~ 0.5, where bf16's spacing
    is ~4e-3). So the input is cast up to at least fp32 and the product runs outside any
    autocast: the rounding of a bf16 hidden state then averages out over ``dim`` terms instead
    of V itself being rounded to bf16. A float64 module stays float64.
    """

    def __init__(self, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, dim))
        self.bias = nn.Parameter(torch.zeros(1))
        nn.init.normal_(self.weight, mean=0.0, std=init_std)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``hidden [B, T, dim]`` (head 0's normed hidden states) and ``mask [B, T]`` bool
        (True on output positions, the target mask; None: every position) -> values
        ``[B, T]`` in ``promote(weight dtype, float32)``."""
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        with _autocast_off(hidden.device.type):
            pooled = running_mean(hidden.to(dtype), mask)
            # [B, T, dim] @ [dim]: a fresh [B, T] tensor (FSDP2 warns about returned views).
            return torch.matmul(pooled, self.weight.to(dtype)[0]) + self.bias.to(dtype)
