"""Diagnostics of per-token weights (pure tensor math, vectorised over the batch).

All functions take ``[B, T]`` tensors in target alignment and a bool ``mask [B, T]``.
"""

from __future__ import annotations

import math

import torch


def sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over each row's masked positions, ``[B]`` (NaN for an empty row)."""
    m = mask.to(values.dtype)
    return (values * m).sum(1) / m.sum(1)


def normalized_entropy(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Entropy of each row's weights normalised to a distribution, divided by ``log n``:
    1 for uniform weights, towards 0 when a few tokens carry all the weight. ``[B]``, NaN for
    rows with fewer than 2 masked tokens."""
    w = torch.where(mask, weights, torch.zeros_like(weights))
    p = w / w.sum(1, keepdim=True)
    terms = torch.where(p > 0, -p * torch.log(p), torch.zeros_like(p))
    n = mask.sum(1).to(weights.dtype)
    ent = terms.sum(1) / torch.log(n.clamp_min(2))
    return torch.where(n >= 2, ent, torch.full_like(ent, math.nan))


def clipped_fraction(
    td: torch.Tensor, mask: torch.Tensor, beta: float, w_min: float, w_max: float
) -> torch.Tensor:
    """Fraction of masked tokens whose raw weight ``exp(td / beta)`` lies outside
    ``[w_min, w_max]`` (scalar; NaN when nothing is masked)."""
    raw = torch.exp(td / beta)
    clipped = ((raw < w_min) | (raw > w_max)) & mask
    return clipped.sum() / mask.sum()


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores [N]`` for bool ``labels [N]`` (ties count half);
    NaN when one class is absent. Mann-Whitney U from average ranks."""
    labels = labels.bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    s = scores.double()
    order = torch.argsort(s)
    sorted_s = s[order]
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    # Average ranks over ties.
    uniq, inverse, counts = torch.unique(sorted_s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))
