"""Two-class scores of predictions against bool labels: ROC AUC (with DeLong's interval) and
the Brier skill score.

A leaf of the import graph (torch, numpy and scipy only), so that training, evaluation and the
weighting diagnostics (:mod:`weighted_mtp.weighting.metrics`) may all import it. Every function
takes flat ``[N]`` scores and ``[N]`` labels and returns Python floats.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm, rankdata


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


def auc_delong(
    scores: torch.Tensor, labels: torch.Tensor, level: float = 0.95
) -> tuple[float, float, float]:
    """ROC AUC of ``scores [N]`` for bool ``labels [N]`` with DeLong's interval.

    DeLong, DeLong & Clarke-Pearson (1988), in the midrank form of Sun & Xu (2014): the
    placement values of each positive (the share of negatives it beats, ties half) and of each
    negative give ``Var(AUC) = s10 / m + s01 / n``; the interval is ``AUC +- z * SE`` clipped to
    ``[0, 1]``. Returns ``(auc, low, high)``; all NaN when a class is absent, ``low`` and
    ``high`` NaN when a class has a single member (no variance to estimate).
    """
    labels = labels.bool().cpu().numpy()
    s = scores.double().cpu().numpy()
    pos, neg = s[labels], s[~labels]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return math.nan, math.nan, math.nan
    combined = rankdata(np.concatenate([pos, neg]))
    # Placements: how many negatives each positive beats (ties half), and vice versa.
    v10 = (combined[:m] - rankdata(pos)) / n
    v01 = 1.0 - (combined[m:] - rankdata(neg)) / m
    auc = float(v10.mean())
    if m < 2 or n < 2:
        return auc, math.nan, math.nan
    se = math.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n)
    z = float(norm.ppf(0.5 + level / 2))
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se)


def brier_skill(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """``1 - Brier / Brier_ref`` of probability-like ``predictions [N]`` for bool ``labels
    [N]``, the reference being the constant prediction of the base rate ``p`` (Brier
    ``p (1 - p)``): 1 for a perfect predictor, 0 for one no better than the base rate,
    negative for a worse one. NaN when ``labels`` hold one class (no reference error)."""
    y = labels.double()
    p = float(y.mean()) if len(y) else math.nan
    reference = p * (1.0 - p)
    if not reference > 0:
        return math.nan
    brier = float(((predictions.double() - y) ** 2).mean())
    return 1.0 - brier / reference
