"""The per-problem values the comparison runs on: read from scoring summaries
(:func:`per_problem_values`, :func:`per_metric_values`), pooled over fine-tuning seeds
(:func:`pool_seeds`), and the spread across seeds that the pooling leaves out
(:func:`seed_spread`).

Seeds (``experiment.seeds``): every trained method is fine-tuned under ``n`` seeds from the same
base model; seed 1's model keeps its plain catalog name (``baseline_model``) and seed ``s >= 2``
is ``seed_<s>.baseline_model`` (:func:`seeded_name`, :func:`split_seed`). A model evaluated
once (``base_model``) has one "seed". :func:`pool_seeds` makes each model's per-problem value
the mean over its seeds (problem ``i``: ``(1/n) sum_s pass@k_s(i)``, in [0, 1]); the rest of
the comparison runs on those means: the Wilson interval of the model, and the contrasts.
:func:`seed_spread` gives the spread the intervals do not hold: per model and metric, each
seed's pass@k and their mean, sd (``ddof=1``), min and max.

Why the paired test stays valid on seed means: the test is stratified by problem: it flips the
sign of each problem's difference of seed means ``d_i = mean_s a_s(i) - mean_s b_s(i)`` and
resamples nothing across problems. Its null hypothesis is that, problem by problem, the two
methods' seed-averaged outcomes are exchangeable (``d_i`` symmetric about 0), with problems
independent draws from the population of problems: under the null of "no method effect" each
side's ``n`` seeds are draws of the same training distribution, so the seed mean of ``a`` and
that of ``b`` on a problem have the same distribution and swapping them leaves the joint law
unchanged. Averaging within the problem before the test keeps the pairing (same problem, same
prompt) and turns ``n`` correlated replicates into one less noisy observation, which is why
more seeds make ``|d_i|`` reflect the methods rather than one run's luck. What it does not do
is treat the seeds as the unit: a training run moves all problems together (seeds are shared
across problems), and per-problem flips do not model that correlation; a seed-level test
(swapping whole runs between methods) has at most ``C(2n, n)`` arrangements, 20 for 3 seeds,
so no p below 0.05 is reachable, and it is not used. The p-value therefore answers "would these
seeds' methods differ on other problems", and the spread across seeds, reported beside each
model, is what says whether another set of runs would differ. With 0/1 seed means (one seed,
or all seeds agreeing on every problem) the test is the exact McNemar test as before;
otherwise it is the sign-flip permutation test, the interval the paired t interval and the
MDE is computed on the ``d_i`` (``E[d^2] <= E|d|`` still holds for ``|d_i| <= 1``, so the
bound stays conservative). ``n_seeds`` of a contrast is the larger of its two sides' seeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from weighted_mtp.seeds import group_seeds

#: The seeds of a run that gives none: one fine-tuning run per method, whose intervals hold
#: only the sampling of problems.
N_SEEDS = 1


def pool_seeds(
    per_problem: Mapping[str, Mapping[str, float]],
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per model, the mean over its seeds of each problem's value, on the problems every seed
    was scored on, and the number of seeds: ``({model: {task_id: mean}}, {model: n_seeds})``
    from ``{catalog name: {task_id: pass@k}}`` (names as :func:`split_seed` reads them)."""
    pooled: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for model, seeds in group_seeds(per_problem).items():
        runs = [per_problem[name] for name in seeds.values()]
        shared = sorted(set.intersection(*(set(run) for run in runs)))
        pooled[model] = {t: float(np.mean([run[t] for run in runs])) for t in shared}
        counts[model] = len(runs)
    return pooled, counts


@dataclass(frozen=True)
class SeedSpread:
    """One model's metric across its seeds: each seed's mean over problems (seed order), their
    mean, sd (``ddof=1``; None with one seed), min and max."""

    model: str
    dataset: str
    k: int
    n_seeds: int
    n_problems: int
    mean: float
    sd: float | None
    min: float
    max: float
    per_seed: list[float]

    def row(self) -> dict[str, Any]:
        """A row of ``pass_at_k_seeds.csv`` (``per_seed`` joined by ``;``)."""
        out = asdict(self)
        out["per_seed"] = ";".join(f"{v:.6g}" for v in self.per_seed)
        return out


#: ``pass_at_k_seeds.csv``: one row per model, dataset and k (whole datasets).
SEED_SPREAD_COLUMNS = tuple(f.name for f in dataclasses.fields(SeedSpread))


def seed_spread(
    per_metric: Mapping[tuple[str, int], Mapping[str, Mapping[str, float]]],
) -> list[SeedSpread]:
    """Per ``(dataset, k)`` of ``per_metric`` (``{(dataset, k): {catalog name: {task_id:
    pass@k}}}``, seeds as separate names) and per model: each seed's pass@k over the problems
    all its seeds share, and their spread."""
    out = []
    for (dataset, k), names in sorted(per_metric.items()):
        for model, seeds in group_seeds(names).items():
            runs = [names[name] for name in seeds.values()]
            shared = sorted(set.intersection(*(set(run) for run in runs)))
            if not shared:
                continue
            values = [float(np.mean([run[t] for t in shared])) for run in runs]
            out.append(
                SeedSpread(
                    model=model,
                    dataset=dataset,
                    k=int(k),
                    n_seeds=len(values),
                    n_problems=len(shared),
                    mean=float(np.mean(values)),
                    sd=float(np.std(values, ddof=1)) if len(values) > 1 else None,
                    min=min(values),
                    max=max(values),
                    per_seed=values,
                )
            )
    return out


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


def per_metric_values(
    summaries: Mapping[str, Mapping[str, Any]],
) -> dict[tuple[str, int], dict[str, dict[str, float]]]:
    """``{(dataset, k): {model: {task_id: pass@k}}}`` over every dataset and k of the
    ``summaries`` (``{model: summarise(...)}``); a model without a metric is absent there."""
    out: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    for model, summary in summaries.items():
        for dataset in summary["per_dataset"]:
            for k in summary["ks"]:
                values = per_problem_values(summary, dataset, int(k))
                if values:
                    out.setdefault((dataset, int(k)), {})[model] = values
    return out
