"""Diagnostics of per-token weights and of the critic (pure tensor math, vectorised).

Token functions take ``[B, T]`` tensors in target alignment and a bool ``mask [B, T]``; the
value panel scores them with the two-class scores of :mod:`weighted_mtp.metrics`.
"""

from __future__ import annotations

import math

import torch

from weighted_mtp.metrics import auc_delong, brier_skill, roc_auc
from weighted_mtp.weighting.td import last_masked_index, td_errors, td_weights


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


def values_at_fractions(
    values: torch.Tensor, mask: torch.Tensor, fractions: tuple[float, ...]
) -> torch.Tensor:
    """Each row's value after a fraction of its output: ``[B, len(fractions)]``.

    A row's masked positions run from its last prompt position (no output token read yet)
    to the position before its EOS (the last token, the value the critic is trained to end
    on); fraction ``q`` reads offset ``floor(q * (n - 1))`` of those ``n`` positions, so 0 is
    the prompt's end and 1 the last token. NaN for a row without masked positions."""
    n = mask.sum(1)
    first = torch.where(n > 0, mask.int().argmax(1), torch.zeros_like(n))
    q = torch.tensor(fractions, dtype=torch.float64, device=values.device)
    offsets = torch.floor(q[None, :] * (n[:, None] - 1).clamp_min(0).double()).long()
    picked = values.gather(1, first[:, None] + offsets).double()
    return torch.where(n[:, None] > 0, picked, torch.full_like(picked, math.nan))


def bug_token_classes(
    mask: torch.Tensor, bug_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(onset, span, outside)``, each ``[B, T]`` bool, for rows whose bug span has tokens.

    ``bug_mask [B, T]`` (target alignment) is True where the target token lies in the row's bug
    span (the characters where an incorrect program departs from its correct twin). ``span``:
    the masked tokens in it; ``onset``: the first of them, the token where the program goes
    wrong; ``outside``: the row's other masked tokens before its last one (the rest of the
    incorrect program). The last position (its target is the EOS) is left out: its TD error is
    the true reward minus V, so it drops on every incorrect program whatever the critic knows.
    Rows without bug tokens are False everywhere."""
    span = bug_mask & mask
    has = span.any(1, keepdim=True)
    first = span.int().argmax(1, keepdim=True)
    positions = torch.arange(mask.shape[1], device=mask.device)[None, :]
    onset = span & (positions == first)
    terminal = positions == last_masked_index(mask)[:, None]
    outside = mask & ~span & ~terminal & has
    return onset, span, outside


#: Fractions of each program's output at which the value panel reads V (``val/value_auc_pNN``).
VALUE_FRACTIONS = (0.25, 0.5, 0.75)


def value_panel_parts(
    values: torch.Tensor,
    mask: torch.Tensor,
    rewards: torch.Tensor,
    bug_mask: torch.Tensor | None,
    *,
    gamma: float = 1.0,
    beta: float = 0.9,
    w_min: float = 0.1,
    w_max: float = 5.0,
) -> dict[str, torch.Tensor]:
    """One batch of the value panel as flat tensors that concatenate across batches and ranks
    (:func:`value_panel_summary` reads them).

    Args:
        values: ``[B, T]`` V(s_t) in target alignment; mask ``[B, T]`` bool; rewards ``[B]``.
        bug_mask: ``[B, T]`` bool, True on target tokens in the row's bug span (None: no row
            has one). Only incorrect rows (reward 0) count.
        gamma, beta, w_min, w_max: the TD weighting whose weights are reported.

    Returns:
        ``last`` and ``label`` (one per row with output: V at the last token, the reward),
        ``at_<q>`` (V at fraction q of the output, :data:`VALUE_FRACTIONS`), and over the
        incorrect rows with bug tokens: ``onset_score``/``span_score``/``outside_score`` (the
        value drop ``-td`` at the bug's first token, at its tokens, at the program's other
        tokens) and ``onset_weight``/``span_weight``/``outside_weight`` (the TD weights there).
    """
    v = values.detach().double()
    has = mask.any(1)
    last = v.gather(1, last_masked_index(mask).clamp_min(0)[:, None]).squeeze(1)
    parts = {"last": last[has], "label": (rewards > 0.5)[has].double()}
    at = values_at_fractions(v, mask, VALUE_FRACTIONS)[has]
    for i, q in enumerate(VALUE_FRACTIONS):
        parts[f"at_{q}"] = at[:, i]
    td = td_errors(v, rewards.to(v.dtype), mask, gamma)
    weights = td_weights(td, mask, beta, w_min, w_max)
    if bug_mask is None:
        bug_mask = torch.zeros_like(mask)
    bug = bug_mask & (rewards <= 0.5)[:, None]
    for name, where in zip(("onset", "span", "outside"), bug_token_classes(mask, bug), strict=True):
        parts[f"{name}_score"] = -td[where]
        parts[f"{name}_weight"] = weights[where]
    return parts


def value_panel_summary(parts: dict[str, torch.Tensor], level: float = 0.95) -> dict[str, float]:
    """The value panel's metrics from :func:`value_panel_parts` of every batch and rank
    (concatenated per key). NaN-valued metrics are left out (a class or the bug spans absent).

    * ``val/value_auc`` with ``val/value_auc_low``/``_high`` (DeLong, ``level``): does V at
      the last token rank correct programs above incorrect ones;
    * ``val/value_auc_p25``/``_p50``/``_p75``: the same AUC with V after 25/50/75% of each
      program's output tokens (how early the critic knows);
    * ``val/value_brier_skill``: 1 - MSE of the last-token V / MSE of the panel's base rate;
    * ``val/last_value_accuracy``: share of rows with ``(V > 0.5) == correct``;
    * ``val/bug_weight_mean``/``val/nonbug_weight_mean``: mean TD weight on the bug span's
      tokens / on the rest of the incorrect programs (their EOS left out, whose TD error is the
      true reward's); ``val/bug_onset_weight_mean`` on the span's first token;
    * ``val/bug_auc``: the bug-localisation AUC, ranking the bug's first token (where the
      program departs from its correct twin) above the program's tokens outside the span by
      the value drop ``-td`` there; 1 for a critic whose value falls exactly where the
      program goes wrong, 0.5 for one that cannot tell;
    * ``val/bug_span_auc``: the same with every token of the span as positives (a perfect
      critic drops once, at the onset, so the rest of a long span ranks as a tie: below 1);
    * ``val/n_value_rows``, ``val/n_bug_rows``: the panel's size and its rows with a span.
    """
    out: dict[str, float] = {}
    label = parts["label"] > 0.5
    auc, low, high = auc_delong(parts["last"], label, level)
    out.update({"val/value_auc": auc, "val/value_auc_low": low, "val/value_auc_high": high})
    for q in VALUE_FRACTIONS:
        out[f"val/value_auc_p{round(q * 100)}"] = auc_delong(parts[f"at_{q}"], label, level)[0]
    out["val/value_brier_skill"] = brier_skill(parts["last"], label)
    if len(label):
        out["val/last_value_accuracy"] = float(((parts["last"] > 0.5) == label).double().mean())
    out["val/n_value_rows"] = float(len(label))
    onset, span, outside = parts["onset_score"], parts["span_score"], parts["outside_score"]
    out["val/n_bug_rows"] = float(len(onset))
    if len(span):
        out["val/bug_weight_mean"] = float(parts["span_weight"].mean())
        out["val/bug_onset_weight_mean"] = float(parts["onset_weight"].mean())
    if len(outside):
        out["val/nonbug_weight_mean"] = float(parts["outside_weight"].mean())
    scores = torch.cat([onset, outside])
    is_bug = torch.cat([torch.ones_like(onset), torch.zeros_like(outside)]).bool()
    out["val/bug_auc"] = roc_auc(scores, is_bug)
    scores = torch.cat([span, outside])
    is_bug = torch.cat([torch.ones_like(span), torch.zeros_like(outside)]).bool()
    out["val/bug_span_auc"] = roc_auc(scores, is_bug)
    return {k: v for k, v in out.items() if math.isfinite(v)}
