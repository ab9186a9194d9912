"""The comparison statistics against textbook values and slow references, and the verdict's
wording."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import binom
from statsmodels.stats.proportion import confint_proportions_2indep

from weighted_mtp.evaluation.comparison import (
    CONTRAST_COLUMNS,
    MCNEMAR,
    NOT_DISTINGUISHABLE,
    NOT_SIGNIFICANT,
    SIGN_FLIP,
    compare,
    compare_contrasts,
    detectable_effect,
    estimate,
    group_seeds,
    holm,
    mcnemar_exact,
    minimum_detectable_difference,
    newcombe_paired_interval,
    paired_t_interval,
    per_metric_values,
    per_problem_values,
    pool_seeds,
    seed_spread,
    seeded_name,
    sign_flip_test,
    split_seed,
    wilson_interval,
)


# --------------------------------------------------------------------------- textbook values
@pytest.mark.parametrize(
    ("only_a", "only_b", "expected"),
    [
        (4, 0, 0.125),  # 2 * 0.5**4: four problems one way, none the other
        (0, 4, 0.125),
        (10, 2, 0.0386),  # 2 * P(Bin(12, 1/2) <= 2) = 2 * 79 / 4096 = 0.03857
        (5, 5, 1.0),
        (0, 0, 1.0),
    ],
)
def test_exact_mcnemar_matches_the_binomial_test(only_a, only_b, expected) -> None:
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, abs=5e-5)


def test_holm_on_a_known_list() -> None:
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2]) == [0.2]
    assert holm([]) == []


def test_wilson_interval_of_4_in_100() -> None:
    low, high = wilson_interval([1.0] * 4 + [0.0] * 96)
    assert (low, high) == pytest.approx((0.0157, 0.0984), abs=1e-4)
    result = estimate([1.0] * 4 + [0.0] * 96)
    assert (result.mean, result.n_problems) == (0.04, 100)
    assert (result.low, result.high) == (low, high)
    # Unlike a percentile bootstrap, the interval of 0/n is not [0, 0].
    assert wilson_interval([0.0] * 100)[1] > 0.03


# --------------------------------------------------------------------------- paired tests
def _pairs(only_a: int, only_b: int, both: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = [1.0] * only_a + [0.0] * only_b + [1.0] * both + [0.0] * neither
    b = [0.0] * only_a + [1.0] * only_b + [1.0] * both + [0.0] * neither
    return np.array(a), np.array(b)


def test_sign_flip_on_binary_outcomes_is_the_exact_mcnemar_test() -> None:
    # 12 discordant problems: scipy enumerates all 2**12 flips, which is McNemar's binomial.
    a, b = _pairs(10, 2, 5, 83)
    assert sign_flip_test(a, b) == pytest.approx(mcnemar_exact(10, 2), abs=1e-12)
    assert sign_flip_test(np.zeros(5), np.zeros(5)) == 1.0


def test_sign_flip_matches_an_enumeration_of_every_flip() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 11, size=9) / 10
    b = rng.integers(0, 11, size=9) / 10
    d = a - b
    observed = abs(d.mean())
    flips = [abs(np.mean(d * np.array(s))) for s in itertools.product([1, -1], repeat=d.size)]
    expected = np.mean([f >= observed - 1e-12 for f in flips])
    assert sign_flip_test(a, b) == pytest.approx(expected, abs=1e-12)


def test_newcombe_paired_interval_is_the_independent_one_without_correlation() -> None:
    # phi = 0 when both * neither == only_a * only_b (4 * 24 == 6 * 16): method 10 reduces to
    # Newcombe's hybrid score interval for independent proportions (10/50 - 20/50).
    a, b = _pairs(6, 16, 4, 24)
    expected = confint_proportions_2indep(10, 50, 20, 50, method="newcomb", compare="diff")
    assert newcombe_paired_interval(a, b) == pytest.approx(expected, abs=1e-12)
    # Positively correlated outcomes (mostly concordant) give a narrower paired interval than
    # the independent one for the same two proportions.
    a, b = _pairs(2, 12, 8, 28)
    paired = newcombe_paired_interval(a, b)
    independent = confint_proportions_2indep(10, 50, 20, 50, method="newcomb", compare="diff")
    assert paired[0] < -0.2 < paired[1]
    assert paired[1] - paired[0] < independent[1] - independent[0]
    with pytest.raises(ValueError, match="0/1"):
        newcombe_paired_interval([0.5, 1.0], [0.0, 1.0])


def test_paired_t_interval_is_centred_on_the_mean_difference() -> None:
    a, b = np.array([0.5, 0.2, 0.9, 0.4]), np.array([0.1, 0.2, 0.3, 0.1])
    low, high = paired_t_interval(a, b)
    assert low < (a - b).mean() < high
    assert (low + high) / 2 == pytest.approx((a - b).mean())


def _exact_mcnemar_power(n: int, psi: float, delta: float, level: float) -> float:
    """Power of the exact McNemar test at ``level`` by enumeration: the discordant count
    D ~ Bin(n, psi), and given D, the problems won by a ~ Bin(D, (psi + delta) / (2 psi))."""
    q = (psi + delta) / (2 * psi)
    power = 0.0
    for discordant in range(n + 1):
        wins = np.arange(discordant + 1)
        p = np.minimum(
            1.0,
            2 * np.minimum(binom.cdf(wins, discordant, 0.5), binom.sf(wins - 1, discordant, 0.5)),
        )
        rejected = binom.pmf(wins, discordant, q)[p <= level].sum()
        power += binom.pmf(discordant, n, psi) * rejected
    return power


@pytest.mark.parametrize(("n", "discordant"), [(100, 0), (100, 20), (300, 15), (300, 60)])
def test_mde_is_what_the_exact_mcnemar_test_detects_with_80_percent_power(n, discordant):
    a, b = _pairs(discordant // 2, discordant - discordant // 2, 0, n - discordant)
    level = 0.05 / 3
    mde = minimum_detectable_difference(a, b, level=level, power=0.8)
    psi = max(discordant / n, mde)
    assert _exact_mcnemar_power(n, psi, mde, level) >= 0.75
    # ... and not far beyond: two thirds of it is detected clearly less often.
    smaller = 2 * mde / 3
    assert _exact_mcnemar_power(n, max(discordant / n, smaller), smaller, level) < 0.75


def test_mde_grows_with_discordance_and_is_inf_for_a_handful_of_problems() -> None:
    level = 0.05 / 3
    few = minimum_detectable_difference(*_pairs(2, 2, 0, 296), level=level)
    many = minimum_detectable_difference(*_pairs(40, 40, 0, 220), level=level)
    assert 0 < few < many < 1
    # More problems, smaller MDE.
    assert minimum_detectable_difference(*_pairs(8, 8, 0, 984), level=level) < few
    assert math.isinf(minimum_detectable_difference([1.0, 0.0, 0.0], [0.0] * 3, level=level))


# --------------------------------------------------------------------------- contrasts
def _scores(**models: list[float]) -> dict[str, dict[str, float]]:
    return {
        m: {f"t{i:03d}": float(v) for i, v in enumerate(values)} for m, values in models.items()
    }


def test_contrasts_are_corrected_within_each_dataset_and_k() -> None:
    strong = [1.0] * 30 + [0.0] * 70
    per_metric = {
        ("cc", 1): _scores(a=strong, b=[0.0] * 100, c=[1.0] * 2 + [0.0] * 98),
        ("mbpp", 1): _scores(a=[1.0] * 4 + [0.0] * 6, b=[0.0] * 10),  # no c here
    }
    rows = compare_contrasts(per_metric, [("a", "b"), ("c", "b")])
    cc = {r.contrast: r for r in rows if r.dataset == "cc"}
    mbpp = {r.contrast: r for r in rows if r.dataset == "mbpp"}
    assert set(cc) == {"a-b", "c-b"} and set(mbpp) == {"a-b"}
    assert cc["a-b"].m == 2 and mbpp["a-b"].m == 1
    assert cc["a-b"].p_value == pytest.approx(mcnemar_exact(30, 0))
    assert [cc["a-b"].p_holm, cc["c-b"].p_holm] == pytest.approx(
        holm([cc["a-b"].p_value, cc["c-b"].p_value])
    )
    assert mbpp["a-b"].p_holm == mbpp["a-b"].p_value  # a family of one
    assert cc["a-b"].mde_level == pytest.approx(0.025)
    assert cc["a-b"].diff == pytest.approx(0.30)
    assert (cc["a-b"].only_a, cc["a-b"].only_b) == (30, 0)
    assert cc["a-b"].only_a_tasks[:2] == ["t000", "t001"]
    assert cc["a-b"].test == MCNEMAR and "Newcombe" in cc["a-b"].interval
    assert cc["a-b"].status == "a ahead"
    assert list(cc["a-b"].row())[: len(CONTRAST_COLUMNS)] == list(CONTRAST_COLUMNS)
    assert cc["a-b"].n_seeds == 1
    with pytest.raises(ValueError, match="against itself"):
        compare_contrasts(per_metric, [("a", "a")])


def test_several_samples_use_the_permutation_test() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=40) / 4  # pass@1 from 4 samples per problem
    b = np.clip(a - 0.25 * (rng.random(40) < 0.5), 0, 1)
    [row] = compare_contrasts({("cc", 1): _scores(a=list(a), b=list(b))}, [("a", "b")])
    assert row.test == SIGN_FLIP and "paired t" in row.interval
    assert row.diff_low < row.diff < row.diff_high
    assert row.p_value == pytest.approx(sign_flip_test(a, b))


# --------------------------------------------------------------------------- the verdict
def _verdict(**models: list[float]):
    per_metric = {("codecontests", 1): _scores(**models)}
    contrasts = compare_contrasts(per_metric, [("a", "b")])
    return compare(per_metric[("codecontests", 1)], contrasts), contrasts


def test_four_problems_to_none_is_not_distinguishable_at_this_scale() -> None:
    # The case: 4 problems solved by a alone, none by b, 100 problems. A percentile
    # bootstrap called this "ahead beyond the interval"; exact McNemar gives p = 0.125.
    verdict, [row] = _verdict(a=[1.0] * 4 + [0.0] * 96, b=[0.0] * 100)
    assert row.p_value == pytest.approx(0.125)
    assert row.mde > abs(row.diff) == pytest.approx(0.04)
    assert row.status == NOT_DISTINGUISHABLE
    assert not verdict.models_differ
    assert "not distinguishable at this scale" in verdict.text
    assert "a - b: +0.040" in verdict.text and "p_holm = 0.125" in verdict.text
    assert "1 seed per method: training variance is not in these intervals" in verdict.text
    assert "codecontests pass@1 (100 problems; 95% Wilson intervals)" in verdict.text
    assert "a 0.040 [0.016, 0.098]" in verdict.text


def test_a_large_exact_difference_is_ahead() -> None:
    verdict, [row] = _verdict(a=[1.0] * 30 + [0.0] * 70, b=[1.0] * 2 + [0.0] * 98)
    assert row.p_holm < 0.05 and row.mde < row.diff
    assert row.status == "a ahead" and verdict.models_differ
    assert "a ahead." in verdict.text


def test_significant_but_below_the_mde_is_not_called_ahead() -> None:
    # 7 problems to none: p = 2 / 2**7 = 0.0156 < 0.05, but 0.07 is below the MDE of 100
    # problems (about 0.11): reported, not called ahead.
    verdict, [row] = _verdict(a=[1.0] * 7 + [0.0] * 93, b=[0.0] * 100)
    assert row.p_holm < 0.05
    assert row.status == NOT_DISTINGUISHABLE
    assert "underpowered, not called ahead" in verdict.text
    assert not verdict.models_differ


def test_a_difference_above_the_mde_without_significance_is_not_significant() -> None:
    # A difference that reaches the MDE but whose p is not below alpha after Holm.
    from weighted_mtp.evaluation.comparison import status

    assert status(0.2, 0.08, 0.1, "a", "b", 0.05) == NOT_SIGNIFICANT
    assert status(-0.2, 0.01, 0.1, "a", "b", 0.05) == "b ahead"
    assert status(0.05, 0.01, math.inf, "a", "b", 0.05) == NOT_DISTINGUISHABLE


def test_verdict_without_contrasts_compares_nothing() -> None:
    verdict = compare(_scores(a=[1.0, 0.0], b=[0.0, 0.0]), [])
    assert verdict.contrasts == [] and not verdict.models_differ
    assert "No pre-registered contrast applies" in verdict.text
    out = verdict.to_dict()
    assert "Wilson" in out["interval_method"] and out["n_seeds"] == 1
    assert out["estimates"]["a"]["n_problems"] == 2


def test_per_problem_values_filters_dataset_difficulty_and_k() -> None:
    summary = {
        "ks": [1, 2],
        "per_dataset": {"codecontests": {}, "mbpp": {}},
        "per_problem": {
            "c1": {"dataset": "codecontests", "difficulty": 1, "pass@1": 1.0, "pass@2": 1.0},
            "c2": {"dataset": "codecontests", "difficulty": 2, "pass@1": 0.5},
            "m1": {"dataset": "mbpp", "difficulty": None, "pass@1": 0.0},
        },
    }
    assert per_problem_values(summary, "codecontests", 1) == {"c1": 1.0, "c2": 0.5}
    assert per_problem_values(summary, "codecontests", 1, difficulty=2) == {"c2": 0.5}
    assert per_problem_values(summary, "codecontests", 2) == {"c1": 1.0}
    assert per_problem_values(summary, "mbpp", 1) == {"m1": 0.0}
    assert per_metric_values({"m": summary}) == {
        ("codecontests", 1): {"m": {"c1": 1.0, "c2": 0.5}},
        ("codecontests", 2): {"m": {"c1": 1.0}},
        ("mbpp", 1): {"m": {"m1": 0.0}},
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: wilson_interval([]), "non-empty"),
        (lambda: wilson_interval([0.5, float("nan")]), "finite"),
        (lambda: wilson_interval([1.5]), r"\[0, 1\]"),
        (lambda: wilson_interval([0.5], confidence=1.0), "confidence"),
        (lambda: sign_flip_test([0.5, 1.0], [0.5]), "2 values for a but 1"),
        (lambda: mcnemar_exact(-1, 2), ">= 0"),
    ],
)
def test_bad_input_is_refused(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- seeds
#: Three seeds of a and b on six problems (one greedy sample: 0/1 per seed and problem).
#: Per-problem seed means: a = [1, 2/3, 1/3, 0, 1/3, 0], b = [0, 0, 0, 1/3, 1/3, 0], so the
#: differences are d = [1, 2/3, 1/3, -1/3, 0, 0].
SEEDED = {
    "a": [1, 1, 1, 0, 0, 0],
    "seed_2.a": [1, 1, 0, 0, 0, 0],
    "seed_3.a": [1, 0, 0, 0, 1, 0],
    "b": [0, 0, 0, 1, 0, 0],
    "seed_2.b": [0, 0, 0, 0, 1, 0],
    "seed_3.b": [0, 0, 0, 0, 0, 0],
}


def test_pooled_contrast_over_three_seeds_matches_a_hand_computation() -> None:
    per_seed = {("codecontests", 1): _scores(**SEEDED)}
    pooled, counts = pool_seeds(per_seed[("codecontests", 1)])
    assert counts == {"a": 3, "b": 3}
    assert list(pooled["a"].values()) == pytest.approx([1, 2 / 3, 1 / 3, 0, 1 / 3, 0])
    assert list(pooled["b"].values()) == pytest.approx([0, 0, 0, 1 / 3, 1 / 3, 0])
    [row] = compare_contrasts({("codecontests", 1): pooled}, [("a", "b")], n_seeds=counts)
    # By hand: the 2**4 sign flips of the non-zero |d| = (1, 2/3, 1/3, 1/3) have sums 7/3
    # (all +), 5/3 (either 1/3 flipped: twice), then at most 1; the observed sum is 5/3, so
    # P(sum >= 5/3) = 3/16 and the two-sided p is 6/16.
    assert row.p_value == pytest.approx(0.375)
    # The same by the slow obvious route: every flip of every problem, nothing dropped.
    d = np.array([1, 2 / 3, 1 / 3, -1 / 3, 0, 0])
    flips = [np.mean(d * np.array(s)) for s in itertools.product((1, -1), repeat=d.size)]
    tail = np.mean([f >= d.mean() - 1e-12 for f in flips])
    assert row.p_value == pytest.approx(min(1.0, 2 * tail))
    assert row.diff == pytest.approx(d.mean()) == pytest.approx(5 / 18)
    assert (row.n_seeds, row.n_problems, row.test) == (3, 6, SIGN_FLIP)
    t = 2.570581835636314  # scipy.stats.t.ppf(0.975, 5)
    half = t * np.std(d, ddof=1) / math.sqrt(6)
    assert (row.diff_low, row.diff_high) == pytest.approx((d.mean() - half, d.mean() + half))
    # MDE on the per-problem means: psi = mean |d| = 7/18, alone in its family (level 0.05).
    effect = detectable_effect(6, 0.05)
    assert row.mde == pytest.approx(min_mde(effect, 7 / 18))
    # Spread: each seed's pass@1 (mean over the six problems) and sd with ddof 1.
    spread = {s.model: s for s in seed_spread(per_seed)}
    assert spread["a"].per_seed == pytest.approx([3 / 6, 2 / 6, 2 / 6])
    assert spread["a"].mean == pytest.approx(7 / 18)
    assert spread["a"].sd == pytest.approx(math.sqrt(1 / 108))
    assert (spread["a"].min, spread["a"].max) == pytest.approx((2 / 6, 3 / 6))
    assert spread["b"].per_seed == pytest.approx([1 / 6, 1 / 6, 0])
    verdict = compare(pooled, [row], n_seeds=3, spread=list(spread.values()))
    assert "a 0.389 [" in verdict.text and "(seeds 0.500/0.333/0.333, sd 0.096)" in verdict.text
    assert "3 fine-tuning seeds per trained method" in verdict.text
    assert "training variance is not in these intervals" not in verdict.text
    assert verdict.n_seeds == 3 and set(verdict.spread) == {"a", "b"}


def min_mde(effect: float, psi: float) -> float:
    mde = max(effect * math.sqrt(psi), effect**2)
    return mde if mde <= 1 else math.inf


def test_one_seed_pools_to_itself_and_keeps_mcnemar() -> None:
    values = _scores(a=[1.0] * 4 + [0.0] * 6, b=[0.0] * 10, base=[0.0] * 10)
    pooled, counts = pool_seeds(values)
    assert pooled == values and counts == {"a": 1, "b": 1, "base": 1}
    [row] = compare_contrasts({("cc", 1): pooled}, [("a", "b")], n_seeds=counts)
    assert row.test == MCNEMAR and row.n_seeds == 1
    assert [s.sd for s in seed_spread({("cc", 1): values})] == [None, None, None]


def test_a_contrast_against_a_model_evaluated_once_counts_the_trained_seeds() -> None:
    values = _scores(**{"a": [1, 0], "seed_2.a": [1, 1], "base": [0, 0]})
    pooled, counts = pool_seeds(values)
    [row] = compare_contrasts({("cc", 1): pooled}, [("a", "base")], n_seeds=counts)
    assert row.n_seeds == 2 and row.pass_a == pytest.approx(0.75)


def test_seed_names_and_their_gaps() -> None:
    assert split_seed("seed_12.baseline_model") == ("baseline_model", 12)
    assert split_seed("baseline_model") == ("baseline_model", 1)
    assert seeded_name("baseline_model", 1) == "baseline_model"
    assert seeded_name("critic", 3) == "seed_3.critic"
    with pytest.raises(ValueError, match="seed 1 has the plain name"):
        split_seed("seed_1.baseline_model")
    with pytest.raises(ValueError, match="integer >= 1"):
        seeded_name("critic", 0)
    with pytest.raises(ValueError, match=r"seeds \[1, 3\] evaluated; expected 1..3"):
        group_seeds(["a", "seed_3.a"])
    with pytest.raises(ValueError, match=r"seeds \[2, 3\] evaluated"):
        pool_seeds({"seed_2.a": {"t": 1.0}, "seed_3.a": {"t": 1.0}})
    assert group_seeds(["seed_2.a", "b", "a"]) == {"a": {1: "a", 2: "seed_2.a"}, "b": {1: "b"}}


@pytest.mark.parametrize("n", [1, 6, 7, 100, 300])
def test_wilson_interval_contains_the_observed_proportion_exactly(n: int) -> None:
    # statsmodels returns low = 2.8e-17 for 0 of 6: the report's error bar went negative.
    for values in ([0.0] * n, [1.0] * n):
        low, high = wilson_interval(values)
        assert low <= float(np.mean(values)) <= high
