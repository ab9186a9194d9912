"""Rho-1 Selective Language Modeling token selection. Pure tensor math, no I/O."""

from __future__ import annotations

import math

import torch


def n_selected(n_valid: int, k: float) -> int:
    """How many of ``n_valid`` tokens the top-``k`` fraction keeps (at least one if any)."""
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be in (0, 1], got {k}")
    return min(n_valid, max(1, math.ceil(k * n_valid))) if n_valid else 0


def n_selected_counts(n_valid: torch.Tensor, k: float) -> torch.Tensor:
    """:func:`n_selected` elementwise on a tensor of valid counts (any shape, float64 out), on
    the counts' device: the kept counts a step will have, known before any forward."""
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be in (0, 1], got {k}")
    n = n_valid.to(torch.float64)
    kept = torch.minimum(n, torch.clamp(torch.ceil(k * n), min=1.0))
    return torch.where(n > 0, kept, torch.zeros_like(n))


def exact_top_k(valid_excess: torch.Tensor, k: float) -> torch.Tensor:
    """Bool ``[N]``: exactly :func:`n_selected` ``(N, k)`` of the 1-D ``valid_excess`` kept,
    the largest first; equal values are kept in order of position (the earlier first).

    Unlike :func:`rho1_mask`, which keeps every tie at the threshold, the count is exact, so a
    training step knows how many tokens it will keep from its targets alone (the Rho-1
    method's step-level denominator). Distributed callers pass the rank-ordered gather of every
    rank's valid excess and slice out their own positions: the order is the same everywhere.
    """
    flat = valid_excess.detach().reshape(-1)
    count = n_selected(flat.numel(), k)
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if count:
        order = torch.sort(flat, descending=True, stable=True).indices
        keep[order[:count]] = True
    return keep


def selection_threshold(valid_excess: torch.Tensor, k: float) -> torch.Tensor:
    """The excess loss of the last kept token among ``valid_excess`` (1-D, any order).

    Distributed training gathers every rank's valid excess losses, computes this threshold
    once and applies it locally with :func:`rho1_mask` (``threshold=``), so the selection
    is the top-k of the global batch.
    """
    count = n_selected(valid_excess.numel(), k)
    if count == 0:
        return torch.tensor(float("inf"), dtype=valid_excess.dtype, device=valid_excess.device)
    return torch.topk(valid_excess.detach().flatten(), count, sorted=True).values[-1]


def rho1_mask(
    excess_loss: torch.Tensor,
    mask: torch.Tensor,
    k: float = 0.6,
    *,
    threshold: torch.Tensor | None = None,
) -> torch.Tensor:
    """Keep the top-``k`` fraction of valid tokens by excess loss.

    Excess loss is ``policy token loss - reference token loss`` for the same target token.
    Ties at the threshold are all kept (so slightly more than ``k`` may be kept when many
    tokens share the threshold value: deterministic, unlike an arbitrary tie-break).

    Args:
        excess_loss: ``[B, T]`` for one head.
        mask: ``[B, T]`` bool, True on valid (output) target tokens.
        k: fraction of valid tokens to keep.
        threshold: a precomputed global threshold (see :func:`selection_threshold`).

    Returns:
        ``[B, T]`` bool, True on kept tokens; never True where ``mask`` is False.
    """
    if excess_loss.shape != mask.shape:
        raise ValueError(
            f"excess_loss shape {tuple(excess_loss.shape)} != mask shape {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    excess = excess_loss.detach()
    if threshold is None:
        threshold = selection_threshold(excess[mask], k)
    return mask & (excess >= threshold)
