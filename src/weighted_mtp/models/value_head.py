"""The value head ``V(s_t)`` read on head 0's normed hidden states: a per-token feature layer
whose features are pooled by a causal running max, then a linear readout with a bias."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from weighted_mtp.models.transformer import RMSNorm, rms_norm

#: Features of the value head (``ValueHead.features``): 512 at every model size (a 7B's head is
#: 4096 x 512 + 512 weights, ~2.1M, next to the trunk's 6.7B; docs/training.md "The critic").
VALUE_FEATURES = 512


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    # torch.autocast refuses device types it has no policy for (meta, fake devices), even
    # to disable it: only step out of an autocast that is on.
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False) if enabled else contextlib.nullcontext()


def _mask_or_all(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    return mask


def running_max(features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, T, F]``: at each position the elementwise max of the non-negative ``features`` over
    the masked positions up to and including it (causal); 0 before a row's first masked one.
    ``mask`` None counts every position. Unmasked positions count as 0, the identity of a max
    of non-negative values, so the prompt and the padding never enter it."""
    m = _mask_or_all(features, mask)
    kept = torch.where(m[..., None], features, torch.zeros_like(features))
    return torch.cummax(kept, dim=1).values


class ValueHead(nn.Module):
    """``V(s_t) = w . max_{u <= t} relu(A rmsnorm(h_u) + a) + b`` over the output positions
    ``u`` so far: per token, :data:`VALUE_FEATURES` non-negative features of head 0's normed
    hidden state; a running max keeps, for each feature, the strongest evidence seen so far;
    a linear readout with a bias maps them to a value (unbounded).

    Why (measured on the frozen micro base, docs/experiment.md "The critic"): the linear
    readout of the running mean of the hidden states (the head before this one) reached
    0.58-0.59 held-out last-token AUC (a ridge probe of those features 0.66), a value tower
    with its own causal attention block 0.52-0.61 (probe); this head reaches 0.85 [0.80, 0.90]
    in the critic job (600 steps), bug AUC 0.60. The synthetic incorrect programs differ from their
    correct twins in a few tokens: a feature that fires on such a token stays on (max), where a
    mean dilutes it by the program's length. The value then falls at the token where the
    evidence appears, which is what TD weighting reads. Still a function of the prefix only
    (causal): a later token never changes an earlier value.

    Parameters: ``norm.weight [dim]``, ``features.weight [F, dim]``, ``features.bias [F]``,
    ``weight [1, F]`` and ``bias [1]``; a model directory stores them under ``value_head.``.
    A directory holding only ``value_head.weight`` (and ``bias``) was written by an older
    linear head and is refused when loaded
    (:func:`weighted_mtp.model_io.loading.value_head_state`): retrain the critic.

    Precision: the trunk may run in bf16, but V is read at every position and the TD errors
    are differences of neighbouring values (~1e-3..1e-2 around V ~ 0.5, where bf16's spacing
    is ~4e-3). So the input is cast up to at least fp32 and the head runs outside any
    autocast. A float64 module stays float64.
    """

    #: The state-dict keys of this head (``value_head.<key>`` in a model directory).
    STATE_KEYS = ("weight", "bias", "norm.weight", "features.weight", "features.bias")

    def __init__(self, dim: int, init_std: float = 0.02, features: int = VALUE_FEATURES) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)
        # nn.Linear's own initialisation (uniform, +-1/sqrt(dim)) for the feature layer.
        self.features = nn.Linear(dim, features)
        self.weight = nn.Parameter(torch.empty(1, features))
        self.bias = nn.Parameter(torch.zeros(1))
        nn.init.normal_(self.weight, mean=0.0, std=init_std)

    def token_features(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` non-negative per-token features, in the head's compute dtype."""
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        x = rms_norm(hidden.to(dtype), self.norm.weight.to(dtype), self.norm.eps)
        linear = self.features
        return F.relu(F.linear(x, linear.weight.to(dtype), linear.bias.to(dtype)))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``hidden [B, T, dim]`` (head 0's normed hidden states) and ``mask [B, T]`` bool
        (True on output positions, the target mask; None: every position) -> values
        ``[B, T]`` in ``promote(weight dtype, float32)``."""
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        with _autocast_off(hidden.device.type):
            pooled = running_max(self.token_features(hidden), mask)
            # [B, T, F] @ [F]: a fresh [B, T] tensor (FSDP2 warns about returned views).
            return torch.matmul(pooled, self.weight.to(dtype)[0]) + self.bias.to(dtype)
