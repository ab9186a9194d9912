"""The pre-registered contrasts: per contrast ``a-b`` (fixed in
``evaluation.comparison.contrasts`` before anything runs), per dataset and k, on the problems
both models were scored on, one :class:`ContrastResult` (a row of ``contrasts.csv``) with the
difference, its test, interval and MDE (methods in :mod:`.statistics`), Holm's correction over
the contrasts of that dataset and k, and the contrast's reading (:func:`status`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weighted_mtp.evaluation.comparison.per_problem import N_SEEDS
from weighted_mtp.evaluation.comparison.statistics import (
    ALPHA,
    CONFIDENCE,
    N_PERMUTATIONS,
    POWER,
    SEED,
    _check_level,
    holm,
    is_binary,
    mcnemar_exact,
    minimum_detectable_difference,
    newcombe_paired_interval,
    paired_t_interval,
    sign_flip_test,
)

NOT_DISTINGUISHABLE = "not distinguishable at this scale"
NOT_SIGNIFICANT = "not significant"
#: ``contrasts.csv``: these columns first, in this order, then :data:`EXTRA_COLUMNS`.
CONTRAST_COLUMNS = (
    "contrast",
    "dataset",
    "k",
    "diff",
    "p_value",
    "p_holm",
    "mde",
    "n_problems",
    "n_seeds",
)
EXTRA_COLUMNS = (
    "a",
    "b",
    "pass_a",
    "pass_b",
    "only_a",
    "only_b",
    "test",
    "diff_low",
    "diff_high",
    "interval",
    "alpha",
    "mde_level",
    "m",
    "status",
)
MCNEMAR = "mcnemar_exact"
SIGN_FLIP = "sign_flip_permutation"


@dataclass(frozen=True)
class ContrastResult:
    """One pre-registered contrast on one dataset and k (a row of ``contrasts.csv``)."""

    contrast: str
    dataset: str
    k: int
    diff: float
    p_value: float
    p_holm: float
    mde: float
    n_problems: int
    n_seeds: int
    a: str
    b: str
    pass_a: float
    pass_b: float
    only_a: int
    only_b: int
    test: str
    diff_low: float
    diff_high: float
    interval: str
    alpha: float
    mde_level: float
    m: int
    status: str
    only_a_tasks: list[str] = field(default_factory=list)
    only_b_tasks: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The CSV row: :data:`CONTRAST_COLUMNS` then :data:`EXTRA_COLUMNS` (no task lists)."""
        return {c: getattr(self, c) for c in (*CONTRAST_COLUMNS, *EXTRA_COLUMNS)}


def contrast_name(a: str, b: str) -> str:
    """``a-b``: the difference is ``pass@k(a) - pass@k(b)``."""
    return f"{a}-{b}"


def status(diff: float, p_holm: float, mde: float, a: str, b: str, alpha: float) -> str:
    """The contrast's reading: :data:`NOT_DISTINGUISHABLE` when the MDE exceeds ``|diff|``
    (or is unknown); else ``"<winner> ahead"`` when ``p_holm < alpha``; else
    :data:`NOT_SIGNIFICANT`."""
    if not mde <= abs(diff):
        return NOT_DISTINGUISHABLE
    if p_holm < alpha:
        return f"{a if diff > 0 else b} ahead"
    return NOT_SIGNIFICANT


def _paired(
    a: Mapping[str, float], b: Mapping[str, float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    shared = sorted(set(a) & set(b))
    return (
        shared,
        np.array([a[t] for t in shared], dtype=np.float64),
        np.array([b[t] for t in shared], dtype=np.float64),
    )


def compare_contrasts(
    per_problem: Mapping[tuple[str, int], Mapping[str, Mapping[str, float]]],
    contrasts: Sequence[tuple[str, str]],
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    confidence: float = CONFIDENCE,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = SEED,
    n_seeds: int | Mapping[str, int] = N_SEEDS,
) -> list[ContrastResult]:
    """Every contrast on every ``(dataset, k)`` of ``per_problem`` (``{(dataset, k): {model:
    {task_id: pass@k}}}``; with seeds, each model's :func:`pool_seeds` means) where both of
    its models have shared problems, with Holm's correction over the contrasts of each
    ``(dataset, k)``. ``n_seeds``: the run's seeds, or ``{model: seeds}`` (a contrast's
    ``n_seeds`` is then the larger of its sides'; a model not named has one).

    Raises ValueError for a contrast of a model with itself; a contrast whose model has no
    values for a ``(dataset, k)`` has no row there.
    """
    _check_level("alpha", alpha)
    for a, b in contrasts:
        if a == b:
            raise ValueError(f"contrast {contrast_name(a, b)}: a model against itself")
    out: list[ContrastResult] = []
    for (dataset, k), models in sorted(per_problem.items()):
        family = []
        for a, b in contrasts:
            if a not in models or b not in models:
                continue
            shared, x, y = _paired(models[a], models[b])
            if shared:
                family.append((a, b, shared, x, y))
        m = len(family)
        level = alpha / m if m else alpha
        rows = []
        for a, b, shared, x, y in family:
            binary = is_binary(x, y)
            only_a = [t for t, u, v in zip(shared, x, y, strict=True) if u > 0 and v == 0]
            only_b = [t for t, u, v in zip(shared, x, y, strict=True) if v > 0 and u == 0]
            if binary:
                p_value = mcnemar_exact(len(only_a), len(only_b))
                low, high = newcombe_paired_interval(x, y, confidence=confidence)
            else:
                p_value = sign_flip_test(x, y, n_permutations=n_permutations, seed=seed)
                low, high = paired_t_interval(x, y, confidence=confidence)
            rows.append(
                {
                    "contrast": contrast_name(a, b),
                    "dataset": dataset,
                    "k": int(k),
                    "diff": float(x.mean() - y.mean()),
                    "p_value": p_value,
                    "mde": minimum_detectable_difference(x, y, level=level, power=power),
                    "n_problems": len(shared),
                    "n_seeds": (
                        max(n_seeds.get(a, 1), n_seeds.get(b, 1))
                        if isinstance(n_seeds, Mapping)
                        else int(n_seeds)
                    ),
                    "a": a,
                    "b": b,
                    "pass_a": float(x.mean()),
                    "pass_b": float(y.mean()),
                    "only_a": len(only_a),
                    "only_b": len(only_b),
                    "test": MCNEMAR if binary else SIGN_FLIP,
                    "diff_low": low,
                    "diff_high": high,
                    "interval": (
                        f"{int(confidence * 100)}% "
                        + ("Newcombe paired score" if binary else "paired t")
                    ),
                    "alpha": alpha,
                    "mde_level": level,
                    "m": m,
                    "only_a_tasks": only_a,
                    "only_b_tasks": only_b,
                }
            )
        for row, p_holm in zip(rows, holm([r["p_value"] for r in rows], alpha), strict=True):
            verdict = status(row["diff"], p_holm, row["mde"], row["a"], row["b"], alpha)
            out.append(ContrastResult(p_holm=p_holm, status=verdict, **row))
    return out
