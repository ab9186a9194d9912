"""The statistics of the comparison: a model's interval, and the test, interval and minimum
detectable difference of a paired contrast (``contrasts.compare_contrasts`` assembles them).

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
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import permutation_test
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import DescrStatsW

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
N_PERMUTATIONS = 9999
SEED = 0


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
