"""Statistics of the method comparison: confidence intervals of pass@k and the verdict.

Uncertainty comes from the problems: a model's pass@k on a dataset is the mean over problems
of the per-problem (unbiased) pass@k, so its interval is a percentile bootstrap of that mean
over problems (``N_RESAMPLES`` resamples with replacement, ``numpy.random.default_rng(SEED)``,
two-sided ``CONFIDENCE``). Two models evaluated on the same problems are compared by a paired
bootstrap of the per-problem difference (the same resampled problems for both), which is
narrower and more honest than asking whether two separate intervals overlap.

The verdict looks at the primary metric (CodeContests pass@1): the model with the highest
mean is named best, and it is said to beat another model only when the paired interval of
the difference lies above 0. Otherwise the sentence says the models do not differ at this
scale. No Kedro, no MLflow: plain numbers in, plain numbers and a sentence out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0
PRIMARY_DATASET = "codecontests"
PRIMARY_K = 1
INTERVAL_METHOD = (
    f"percentile bootstrap over problems ({N_RESAMPLES} resamples, seed {SEED}); "
    "differences: paired bootstrap on the same problems"
)


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D sequence, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: values must be finite, got {values!r}")
    return array


def resample_indices(n: int, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """``[n_resamples, n]`` indices drawn with replacement from ``0 .. n-1``."""
    if n < 1 or n_resamples < 1:
        raise ValueError(f"need n >= 1 and n_resamples >= 1, got n={n}, n_resamples={n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def bootstrap_interval(
    values: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of the mean of ``values``.

    ``values``: one number per problem (e.g. its pass@k). The same ``seed`` resamples the
    same problem indices, so two calls on equally long inputs are paired.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    array = _as_array(values, "bootstrap_interval")
    means = array[resample_indices(array.size, n_resamples, seed)].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1.0 - alpha / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class Estimate:
    """A model's mean pass@k over ``n_problems`` problems and its interval."""

    mean: float
    low: float
    high: float
    n_problems: int


def estimate(values: Sequence[float], **bootstrap: Any) -> Estimate:
    """Mean and :func:`bootstrap_interval` of per-problem values."""
    array = _as_array(values, "estimate")
    low, high = bootstrap_interval(array, **bootstrap)
    return Estimate(float(array.mean()), low, high, int(array.size))


@dataclass(frozen=True)
class Difference:
    """``best - other`` on the shared problems, with its paired bootstrap interval."""

    other: str
    diff: float
    low: float
    high: float

    @property
    def larger_than_interval(self) -> bool:
        """True when the whole interval is above 0: ``best`` is ahead beyond the noise."""
        return self.low > 0.0


def paired_difference(
    best: Sequence[float], other: Sequence[float], name: str, **bootstrap: Any
) -> Difference:
    """Mean of ``best - other`` (aligned per problem) and its bootstrap interval."""
    a, b = _as_array(best, "paired_difference(best)"), _as_array(other, name)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: {a.size} values for best but {b.size} for {name}")
    diff = a - b
    low, high = bootstrap_interval(diff, **bootstrap)
    return Difference(name, float(diff.mean()), low, high)


@dataclass(frozen=True)
class Verdict:
    """Which model did best on one metric, and whether it is ahead beyond the interval."""

    dataset: str
    k: int
    estimates: dict[str, Estimate]
    best: str | None
    differences: list[Difference] = field(default_factory=list)
    text: str = ""

    @property
    def models_differ(self) -> bool:
        return any(d.larger_than_interval for d in self.differences)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["models_differ"] = self.models_differ
        out["confidence"] = CONFIDENCE
        out["interval_method"] = INTERVAL_METHOD
        return out


def _fmt(estimate: Estimate) -> str:
    return f"{estimate.mean:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def compare(
    per_problem: Mapping[str, Mapping[str, float]],
    *,
    dataset: str = PRIMARY_DATASET,
    k: int = PRIMARY_K,
    **bootstrap: Any,
) -> Verdict:
    """The verdict on one metric from ``{model: {task_id: per-problem pass@k}}``.

    Only problems every model was scored on are used (pairing needs the same problems).
    The best model is the one with the highest mean; a tie for the top, or every other model
    within the paired interval, reads "do not differ at this scale".
    """
    label = f"{dataset} pass@{k}"
    if not per_problem:
        return Verdict(dataset, k, {}, None, text=f"No model has a {label} to compare.")
    shared = sorted(set.intersection(*(set(v) for v in per_problem.values())))
    if not shared:
        return Verdict(
            dataset, k, {}, None, text=f"The models share no {dataset} problem: no verdict."
        )
    values = {m: np.array([per_problem[m][t] for t in shared]) for m in per_problem}
    estimates = {m: estimate(v, **bootstrap) for m, v in values.items()}
    ranked = sorted(estimates, key=lambda m: -estimates[m].mean)
    best = ranked[0]
    scale = f"{len(shared)} problems, {int(CONFIDENCE * 100)}% intervals"
    if len(ranked) == 1:
        return Verdict(
            dataset,
            k,
            estimates,
            best,
            text=f"Only {best} was evaluated: {label} = {_fmt(estimates[best])} ({scale}).",
        )
    differences = [paired_difference(values[best], values[m], m, **bootstrap) for m in ranked[1:]]
    top = estimates[best].mean
    if all(e.mean == top for e in estimates.values()):
        text = (
            f"On {label} ({scale}) every model scores {top:.3f}: "
            "the methods do not differ at this scale."
        )
        return Verdict(dataset, k, estimates, None, differences, text)
    if estimates[ranked[1]].mean == top:
        tied = [m for m in ranked if estimates[m].mean == top]
        text = (
            f"On {label} ({scale}) {', '.join(tied)} tie for best at {top:.3f}: "
            "the methods do not differ at this scale."
        )
        return Verdict(dataset, k, estimates, None, differences, text)
    ahead = [d for d in differences if d.larger_than_interval]
    within = [d for d in differences if not d.larger_than_interval]
    runner = differences[0]
    text = (
        f"On {label} ({scale}) {best} did best with {_fmt(estimates[best])}; "
        f"its lead over the runner-up {runner.other} is {runner.diff:+.3f} "
        f"(paired interval [{runner.low:+.3f}, {runner.high:+.3f}]). "
    )
    if not ahead:
        text += (
            "No difference is larger than its interval: the methods do not differ at this scale."
        )
    elif not within:
        text += f"{best} is ahead of every other model by more than the interval."
    else:
        text += (
            f"{best} is ahead of {', '.join(d.other for d in ahead)} by more than the interval, "
            f"but not distinguishable from {', '.join(d.other for d in within)}."
        )
    return Verdict(dataset, k, estimates, best, differences, text)


def per_problem_values(
    summary: Mapping[str, Any], dataset: str, k: int, difficulty: int | str | None = None
) -> dict[str, float]:
    """``{task_id: pass@k}`` of one dataset (and difficulty) from a
    :func:`weighted_mtp.evaluation.scoring.summarise` result; problems with fewer than ``k``
    samples have no pass@k and are left out. ``difficulty`` may be the string a JSON round
    trip made of a ``per_difficulty`` key (``"2"`` for ``2``)."""
    key = f"pass@{k}"
    return {
        task_id: float(row[key])
        for task_id, row in summary["per_problem"].items()
        if row["dataset"] == dataset
        and (difficulty is None or str(row.get("difficulty")) == str(difficulty))
        and key in row
    }
