"""The verdict on one metric: every model's estimate and, per pre-registered contrast, the
sentence that reads it.

The verdict (the primary metric, CodeContests pass@1) gives every model's estimate and, per
contrast, the difference, its interval, p (Holm) and the MDE, and says "not distinguishable at
this scale" whenever the MDE exceeds the observed ``|diff|``; a side is "ahead" only when
``p_holm < alpha`` and ``|diff|`` reaches the MDE; otherwise the difference is "not
significant".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from weighted_mtp.evaluation.comparison.contrasts import NOT_DISTINGUISHABLE, ContrastResult
from weighted_mtp.evaluation.comparison.per_problem import N_SEEDS, SeedSpread
from weighted_mtp.evaluation.comparison.statistics import (
    ALPHA,
    CONFIDENCE,
    POWER,
    Estimate,
    estimate,
)

PRIMARY_DATASET = "codecontests"
PRIMARY_K = 1
INTERVAL_METHOD = "Wilson score interval over problems (statsmodels proportion_confint)"


@dataclass(frozen=True)
class Verdict:
    """The per-model estimates and the pre-registered contrasts on one metric."""

    dataset: str
    k: int
    estimates: dict[str, Estimate]
    contrasts: list[ContrastResult] = field(default_factory=list)
    alpha: float = ALPHA
    power: float = POWER
    n_seeds: int = N_SEEDS
    text: str = ""
    #: ``{model: SeedSpread}`` on this metric, for the models with several seeds.
    spread: dict[str, SeedSpread] = field(default_factory=dict)

    @property
    def models_differ(self) -> bool:
        """True when some contrast has a side ahead (``p_holm < alpha`` and ``|diff|`` at
        least the MDE)."""
        return any(c.status.endswith(" ahead") for c in self.contrasts)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["models_differ"] = self.models_differ
        out["confidence"] = CONFIDENCE
        out["interval_method"] = INTERVAL_METHOD
        return out


def _fmt(estimate: Estimate, spread: SeedSpread | None = None) -> str:
    text = f"{estimate.mean:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"
    if spread is not None and spread.n_seeds > 1:
        seeds = "/".join(f"{v:.3f}" for v in spread.per_seed)
        text += f" (seeds {seeds}, sd {spread.sd:.3f})"
    return text


def _contrast_sentence(c: ContrastResult) -> str:
    mde = "inf" if math.isinf(c.mde) else f"{c.mde:.3f}"
    return (
        f"{c.a} - {c.b}: {c.diff:+.3f} [{c.diff_low:+.3f}, {c.diff_high:+.3f}] "
        f"(solved by one side only: {c.only_a} vs {c.only_b}), p = {c.p_value:.3g}, "
        f"p_holm = {c.p_holm:.3g}, MDE {mde}: {c.status}"
        + (
            f" (p_holm < {c.alpha} but below the MDE: underpowered, not called ahead)"
            if c.status == NOT_DISTINGUISHABLE and c.p_holm < c.alpha
            else ""
        )
        + "."
    )


def compare(
    per_problem: Mapping[str, Mapping[str, float]],
    contrasts: Sequence[ContrastResult] = (),
    *,
    dataset: str = PRIMARY_DATASET,
    k: int = PRIMARY_K,
    alpha: float = ALPHA,
    power: float = POWER,
    n_seeds: int = N_SEEDS,
    spread: Sequence[SeedSpread] = (),
) -> Verdict:
    """The verdict on one metric: each model's estimate from ``{model: {task_id: pass@k}}``
    (with seeds: its :func:`pool_seeds` means) and the sentence for each of ``contrasts``
    (:func:`compare_contrasts` rows; those of other metrics are ignored). ``n_seeds``: the
    run's seeds, which the text states; ``spread``: :func:`seed_spread` rows, written beside
    the models with several seeds (those of other metrics are ignored)."""
    label = f"{dataset} pass@{k}"
    estimates = {m: estimate(list(v.values())) for m, v in per_problem.items() if v}
    spreads = {s.model: s for s in spread if (s.dataset, s.k) == (dataset, k) and s.n_seeds > 1}
    if not estimates:
        return Verdict(dataset, k, {}, n_seeds=n_seeds, text=f"No model has a {label} to compare.")
    rows = [c for c in contrasts if (c.dataset, c.k) == (dataset, k)]
    n_problems = sorted({e.n_problems for e in estimates.values()})
    problems = "/".join(str(n) for n in n_problems)
    text = (
        f"On {label} ({problems} problems; {int(CONFIDENCE * 100)}% Wilson intervals): "
        + ", ".join(f"{m} {_fmt(e, spreads.get(m))}" for m, e in estimates.items())
        + ". "
    )
    if not rows:
        text += (
            "No pre-registered contrast applies (evaluation.comparison.contrasts): "
            "the models are not compared."
        )
    else:
        tests = sorted({c.test.replace("_", " ") for c in rows})
        text += (
            f"Pre-registered contrasts (diff = a - b, paired on the same problems; "
            f"{' / '.join(tests)}; Holm over the {len(rows)} contrasts of {label}, "
            f"alpha = {alpha}; MDE: the smallest difference detected with "
            f"{int(power * 100)}% power at alpha/{len(rows)} = {alpha / len(rows):.4g}): "
            + " ".join(_contrast_sentence(c) for c in rows)
            + " "
        )
    text += (
        f"{n_seeds} seed per method: training variance is not in these intervals or tests, "
        "which measure only the sampling of problems."
        if n_seeds == 1
        else f"{n_seeds} fine-tuning seeds per trained method: each trained model's estimate "
        "is over problems of its per-problem mean across seeds, and the tests pair those "
        "means problem by problem; the spread across seeds (beside each model) is not in "
        "the intervals, which measure the sampling of problems."
    )
    return Verdict(dataset, k, estimates, rows, alpha, power, n_seeds, text, spreads)
