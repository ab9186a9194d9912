"""Statistics of the method comparison: per-model intervals, pre-registered paired contrasts
and the verdict.

The unit of sampling is the problem: a model's pass@k on a dataset is the mean over problems
of the per-problem (unbiased) pass@k. With one seed per method, nothing here measures training
variance: another fine-tuning seed could move every number by more than these intervals.

Seeds (``experiment.seeds``): every trained method is fine-tuned under ``n`` seeds from the same
base model; seed 1's model keeps its plain catalog name (``baseline_model``) and seed ``s >= 2``
is ``seed_<s>.baseline_model`` (:func:`seeded_name`, :func:`split_seed`). A model evaluated
once (``base_model``) has one "seed". :func:`pool_seeds` makes each model's per-problem value
the mean over its seeds (problem ``i``: ``(1/n) sum_s pass@k_s(i)``, in [0, 1]); everything
below then runs on those means: the Wilson interval of the model, and the contrasts.
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

Per model: a Wilson score interval (``statsmodels.stats.proportion.proportion_confint``,
``method="wilson"``) with ``n_problems`` trials and ``n_problems * pass@k`` successes. It is
the Wilson interval of a proportion when every problem's outcome is 0/1 (one sample per
problem, greedy); with several samples the per-problem pass@k lies in [0, 1] with variance at
most ``p (1 - p)``, so the same interval is conservative.

Per contrast ``a-b`` (fixed in ``evaluation.comparison.contrasts`` before anything runs), per
dataset and k, on the problems both models were scored on:

- ``diff``: ``pass@k(a) - pass@k(b)``.
- ``p_value``: when every per-problem outcome is 0/1, the exact McNemar test on the paired
  outcomes (``statsmodels.stats.contingency_tables.mcnemar(exact=True)``: a two-sided binomial
  test of ``only_a`` against ``only_b``); otherwise (several samples per problem) a paired
  sign-flip permutation test of the mean per-problem difference
  (``scipy.stats.permutation_test``, ``permutation_type="samples"``; exact when the
  ``2**m`` flips of the ``m`` non-zero differences are at most ``n_permutations``, else that
  many random flips with a fixed seed). On 0/1 outcomes the two tests coincide.
- ``p_holm``: Holm's step-down correction (``statsmodels.stats.multitest.multipletests``,
  ``method="holm"``). The family is the contrasts of one dataset and one k: the primary
  metric's verdict is corrected for the ``m`` contrasts it makes, not for the other
  datasets' and k's (those are secondary and each has its own family).
- ``only_a``/``only_b``: problems solved (pass@k > 0, i.e. at least one passing sample) by
  that side alone; their task ids are in ``results.json``.
- ``diff_low``/``diff_high``: a ``CONFIDENCE`` interval of the difference, drawn in the
  report. 0/1 outcomes: Newcombe's hybrid score interval for paired proportions (Newcombe
  1998, Stat. Med. 17:2635, method 10), built from the two Wilson intervals and the phi
  correlation of the 2x2 table. Several samples: the paired t interval of the mean
  difference (``statsmodels.stats.weightstats.DescrStatsW.tconfint_mean``). These intervals
  are unadjusted: the decision is Holm's, not the interval's.
- ``mde``: the minimum detectable difference, the smallest ``|diff|`` that this contrast's
  test would detect with probability ``power`` (0.8) at the level ``alpha / m``: Holm's most
  stringent level (the one the smallest p of the family is held to), so the bound is valid
  whichever rank the contrast takes. Method: the paired t-test's power
  (``statsmodels.stats.power.TTestPower``) on the ``n`` per-problem differences gives the
  standardised effect ``e`` detected with that power; the difference's standard deviation
  under the alternative is taken as ``sqrt(psi)`` with ``psi = max(mean |d_i|, delta)``, so
  ``mde = e * sqrt(max(psi_obs, mde))``, i.e. ``mde = max(e * sqrt(psi_obs), e**2)``.
  For 0/1 outcomes ``psi`` is the discordance rate (problems solved by one side only), and
  ``sqrt(psi)`` is the standard deviation of a paired difference under McNemar's null
  hypothesis (Connor 1987's formula for McNemar's test with the null variance on both
  sides); a difference ``delta`` needs at least ``delta`` discordance, whence the
  ``max``. Assumptions: problems are independent draws; the observed discordance is the
  nuisance parameter (the plan is sized at what this run saw); a normal approximation to
  the mean difference (checked against the exact power of the exact McNemar test by
  enumeration: at the MDE it is 0.78-0.92 for 100-1000 problems and discordance 0-40%, and
  tests/evaluation/test_comparison.py keeps it above 0.75); with several samples,
  ``E[d^2] <= E|d|`` makes ``sqrt(psi)`` an upper bound of the standard deviation
  (conservative). An MDE above 1 (no possible difference of pass@k would be detected, e.g.
  with a handful of problems) is reported as ``inf``.

The verdict (the primary metric, CodeContests pass@1) gives every model's estimate and, per
contrast, the difference, its interval, p (Holm) and the MDE, and says "not distinguishable at
this scale" whenever the MDE exceeds the observed ``|diff|``; a side is "ahead" only when
``p_holm < alpha`` and ``|diff|`` reaches the MDE; otherwise the difference is "not
significant". No Kedro, no MLflow: plain numbers in, plain numbers and a sentence out.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import permutation_test
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import DescrStatsW

from weighted_mtp.seeds import group_seeds, seed_namespace, seeded_name, split_seed

__all__ = ["group_seeds", "seed_namespace", "seeded_name", "split_seed"]  # re-exported

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
N_PERMUTATIONS = 9999
SEED = 0
PRIMARY_DATASET = "codecontests"
PRIMARY_K = 1
#: The seeds of a run that gives none: one fine-tuning run per method, whose intervals hold
#: only the sampling of problems.
N_SEEDS = 1
NOT_DISTINGUISHABLE = "not distinguishable at this scale"
NOT_SIGNIFICANT = "not significant"
INTERVAL_METHOD = "Wilson score interval over problems (statsmodels proportion_confint)"
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


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D sequence, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: values must be finite, got {values!r}")
    if np.any((array < 0) | (array > 1)):
        raise ValueError(f"{what}: per-problem pass@k must lie in [0, 1], got {values!r}")
    return array


def _check_level(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")


# --------------------------------------------------------------------------- seeds
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


# --------------------------------------------------------------------------- one model
def wilson_interval(
    values: Sequence[float], *, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` of the mean of per-problem pass@k ``values``:
    ``len(values)`` trials, ``sum(values)`` successes (see the module docstring)."""
    _check_level("confidence", confidence)
    array = _as_array(values, "wilson_interval")
    low, high = proportion_confint(
        float(array.sum()), array.size, alpha=1.0 - confidence, method="wilson"
    )
    # The Wilson interval contains the observed proportion, but statsmodels' rounding can put
    # a bound a hair past it (0 successes in 6 gave low = 2.8e-17 > 0): a negative error bar.
    mean = float(array.mean())
    return min(float(low), mean), max(float(high), mean)


@dataclass(frozen=True)
class Estimate:
    """A model's mean pass@k over ``n_problems`` problems and its Wilson interval."""

    mean: float
    low: float
    high: float
    n_problems: int


def estimate(values: Sequence[float], *, confidence: float = CONFIDENCE) -> Estimate:
    """Mean and :func:`wilson_interval` of per-problem values."""
    array = _as_array(values, "estimate")
    low, high = wilson_interval(array, confidence=confidence)
    return Estimate(float(array.mean()), low, high, int(array.size))


# --------------------------------------------------------------------------- paired tests
def is_binary(*arrays: np.ndarray) -> bool:
    """True when every value is 0 or 1 (one sample per problem, or k = n)."""
    return all(bool(np.all((a == 0.0) | (a == 1.0))) for a in arrays)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (the concordant cells do
    not enter the exact test)."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a}, {only_b}")
    if only_a + only_b == 0:
        return 1.0
    return float(mcnemar([[0, only_a], [only_b, 0]], exact=True).pvalue)


def sign_flip_test(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = SEED,
) -> float:
    """Two-sided paired permutation p-value of ``mean(a - b)``: each problem's pair is
    swapped (its difference's sign flipped) at random under the null hypothesis."""
    x, y = _as_array(a, "sign_flip_test(a)"), _as_array(b, "sign_flip_test(b)")
    if x.shape != y.shape:
        raise ValueError(f"sign_flip_test: {x.size} values for a but {y.size} for b")
    # Problems with equal values contribute nothing whatever the flip: dropping them keeps the
    # p-value and lets scipy enumerate all 2**m flips exactly when m is small.
    keep = x != y
    if not keep.any():
        return 1.0

    def mean_difference(u: np.ndarray, v: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(u - v, axis=axis)

    result = permutation_test(
        (x[keep], y[keep]),
        mean_difference,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_permutations,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(min(1.0, result.pvalue))


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """Holm-adjusted p-values (``multipletests(method="holm")``), in the input order."""
    if len(p_values) == 0:
        return []
    _check_level("alpha", alpha)
    return [float(p) for p in multipletests(list(p_values), alpha=alpha, method="holm")[1]]


def newcombe_paired_interval(
    a: Sequence[float], b: Sequence[float], *, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Newcombe's (1998, method 10) interval for ``mean(a) - mean(b)`` of paired 0/1
    outcomes: the Wilson intervals ``(l1, u1)``, ``(l2, u2)`` of the two proportions,
    combined with the phi coefficient of the 2x2 table (0 when a margin is empty)."""
    _check_level("confidence", confidence)
    x, y = _as_array(a, "newcombe(a)"), _as_array(b, "newcombe(b)")
    if x.shape != y.shape or not is_binary(x, y):
        raise ValueError("newcombe_paired_interval: needs two equally long 0/1 sequences")
    n = x.size
    both, only_a = int(np.sum((x == 1) & (y == 1))), int(np.sum((x == 1) & (y == 0)))
    only_b, neither = int(np.sum((x == 0) & (y == 1))), int(np.sum((x == 0) & (y == 0)))
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = proportion_confint(both + only_a, n, alpha=1 - confidence, method="wilson")
    l2, u2 = proportion_confint(both + only_b, n, alpha=1 - confidence, method="wilson")
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = 0.0 if margins == 0 else (both * neither - only_a * only_b) / math.sqrt(margins)
    below = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    above = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    theta = p1 - p2
    return float(theta - math.sqrt(max(below, 0.0))), float(theta + math.sqrt(max(above, 0.0)))


def paired_t_interval(
    a: Sequence[float], b: Sequence[float], *, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The t interval of the mean per-problem difference ``a - b``."""
    _check_level("confidence", confidence)
    d = _as_array(a, "paired_t_interval(a)") - _as_array(b, "paired_t_interval(b)")
    if d.size < 2 or np.all(d == d[0]):
        return float(d.mean()), float(d.mean())
    low, high = DescrStatsW(d).tconfint_mean(alpha=1 - confidence)
    return float(low), float(high)


@functools.lru_cache(maxsize=256)
def detectable_effect(n: int, level: float, power: float = POWER) -> float:
    """Standardised effect ``mean(d) / sd(d)`` that a two-sided paired t-test on ``n``
    differences detects with ``power`` at ``level``; ``inf`` when none is (too few
    problems for the solver to reach ``power``)."""
    _check_level("level", level)
    _check_level("power", power)
    if n < 2:
        return math.inf
    solver = TTestPower()
    effect = float(solver.solve_power(effect_size=None, nobs=n, alpha=level, power=power))
    # solve_power returns its search bound instead of failing when it cannot get there.
    if not abs(float(solver.power(effect, n, level)) - power) < 1e-3:
        return math.inf
    return effect


def minimum_detectable_difference(
    a: Sequence[float], b: Sequence[float], *, level: float, power: float = POWER
) -> float:
    """``max(e * sqrt(psi), e**2)``: the module docstring's MDE with ``e`` =
    :func:`detectable_effect` and ``psi = mean |a - b|``; ``inf`` above 1."""
    d = _as_array(a, "mde(a)") - _as_array(b, "mde(b)")
    effect = detectable_effect(int(d.size), level, power)
    psi = float(np.mean(np.abs(d)))
    mde = max(effect * math.sqrt(psi), effect**2)
    return mde if mde <= 1.0 else math.inf


# --------------------------------------------------------------------------- contrasts
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


# --------------------------------------------------------------------------- the verdict
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
