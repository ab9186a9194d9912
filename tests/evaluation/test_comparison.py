"""The comparison statistics against slow, obvious references, and the verdict's wording."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from weighted_mtp.evaluation.comparison import (
    bootstrap_interval,
    compare,
    estimate,
    paired_difference,
    per_problem_values,
    resample_indices,
)


def _quantile(sorted_values: list[float], q: float) -> float:
    # numpy's default ("linear") definition, written out.
    position = q * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (position - lower) * (sorted_values[upper] - sorted_values[lower])


def _slow_interval(values: list[float], indices: np.ndarray, confidence: float) -> tuple:
    means = sorted(sum(values[int(i)] for i in row) / len(row) for row in indices)
    alpha = 1 - confidence
    return _quantile(means, alpha / 2), _quantile(means, 1 - alpha / 2)


def test_bootstrap_matches_a_loop_over_the_same_resamples() -> None:
    values = [random.Random(3).random() for _ in range(17)]
    for seed, confidence in [(0, 0.95), (7, 0.9)]:
        indices = resample_indices(len(values), 300, seed)
        expected = _slow_interval(values, indices, confidence)
        got = bootstrap_interval(values, confidence=confidence, n_resamples=300, seed=seed)
        assert got == pytest.approx(expected, abs=1e-12)


def test_resamples_are_drawn_with_replacement_from_every_problem() -> None:
    indices = resample_indices(5, 4000, seed=1)
    assert indices.shape == (4000, 5)
    assert set(np.unique(indices)) == set(range(5))
    # With replacement: some resample repeats a problem.
    assert any(len(set(row)) < 5 for row in indices)


def test_bootstrap_of_a_proportion_is_close_to_the_normal_interval() -> None:
    # 60 of 200 problems solved: the bootstrap interval of a mean of 0/1 values approaches the
    # Wald interval p +- 1.96 sqrt(p(1-p)/n) (= 0.3 +- 0.0635).
    values = [1.0] * 60 + [0.0] * 140
    low, high = bootstrap_interval(values, n_resamples=4000, seed=0)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 200)
    assert low == pytest.approx(0.3 - half, abs=0.012)
    assert high == pytest.approx(0.3 + half, abs=0.012)


def test_constant_values_have_a_zero_width_interval() -> None:
    assert bootstrap_interval([0.0] * 10) == (0.0, 0.0)
    result = estimate([1.0, 1.0, 1.0])
    assert (result.mean, result.low, result.high, result.n_problems) == (1.0, 1.0, 1.0, 3)


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        ([], {}, "non-empty"),
        ([0.5, float("nan")], {}, "finite"),
        ([0.5], {"confidence": 1.0}, "confidence"),
        ([0.5], {"n_resamples": 0}, "n_resamples"),
    ],
)
def test_bad_input_is_refused(values, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_interval(values, **kwargs)


def test_paired_difference_resamples_the_same_problems_for_both() -> None:
    rng = random.Random(5)
    a = [rng.random() for _ in range(12)]
    b = [x - 0.1 for x in a]  # the same problems, uniformly 0.1 lower
    diff = paired_difference(a, b, "b")
    # Paired: every resample's difference is exactly 0.1, so the interval has no width
    # (an unpaired comparison of these two noisy columns would overlap widely).
    assert diff.diff == pytest.approx(0.1)
    assert (diff.low, diff.high) == pytest.approx((0.1, 0.1))
    assert diff.larger_than_interval
    with pytest.raises(ValueError, match="12 values for best but 3 for b"):
        paired_difference(a, b[:3], "b")


def _scores(**models: list[float]) -> dict[str, dict[str, float]]:
    return {m: {f"t{i}": v for i, v in enumerate(values)} for m, values in models.items()}


def test_verdict_names_a_winner_whose_lead_is_beyond_the_interval() -> None:
    verdict = compare(
        _scores(
            strong=[1.0] * 18 + [0.0] * 2,
            weak=[0.0] * 18 + [1.0] * 2,
            base=[0.0] * 20,
        )
    )
    assert verdict.best == "strong"
    assert verdict.models_differ
    assert [d.other for d in verdict.differences] == ["weak", "base"]
    assert all(d.larger_than_interval for d in verdict.differences)
    assert "strong did best" in verdict.text
    assert "ahead of every other model by more than the interval" in verdict.text
    assert "do not differ" not in verdict.text


def test_verdict_says_no_difference_when_the_lead_is_within_the_interval() -> None:
    # 4/10 against 3/10 on different problems: a lead of 0.1 that a resample easily reverses.
    verdict = compare(
        _scores(
            a=[1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
            b=[0, 0, 0, 0, 1, 1, 1, 0, 0, 0],
        )
    )
    assert verdict.best == "a"
    assert not verdict.models_differ
    assert verdict.differences[0].low < 0 < verdict.differences[0].high
    assert "a did best" in verdict.text
    assert "the methods do not differ at this scale" in verdict.text


def test_verdict_on_all_zero_scores_names_no_winner() -> None:
    verdict = compare(_scores(a=[0.0] * 5, b=[0.0] * 5, c=[0.0] * 5))
    assert verdict.best is None
    assert not verdict.models_differ
    assert "every model scores 0.000" in verdict.text
    assert "do not differ at this scale" in verdict.text


def test_verdict_on_a_tie_for_the_top_names_no_winner() -> None:
    verdict = compare(_scores(a=[1, 0, 0, 0], b=[0, 1, 0, 0], c=[0, 0, 0, 0]))
    assert verdict.best is None
    assert "a, b tie for best" in verdict.text


def test_mixed_verdict_names_who_is_beaten_and_who_is_not() -> None:
    verdict = compare(
        _scores(
            best=[1.0] * 16 + [0.0] * 4,
            close=[1.0] * 15 + [0.0] * 5,
            poor=[0.0] * 20,
        )
    )
    assert verdict.best == "best"
    beaten = {d.other: d.larger_than_interval for d in verdict.differences}
    assert beaten == {"close": False, "poor": True}
    assert "ahead of poor by more than the interval, but not distinguishable from close" in (
        verdict.text
    )


def test_verdict_uses_only_the_problems_every_model_has() -> None:
    scores = _scores(a=[1.0, 1.0, 0.0], b=[0.0, 0.0, 0.0])
    scores["a"]["extra"] = 1.0
    verdict = compare(scores)
    assert {e.n_problems for e in verdict.estimates.values()} == {3}
    assert verdict.estimates["a"].mean == pytest.approx(2 / 3)
    assert compare({"a": {"x": 1.0}, "b": {"y": 0.0}}).best is None


def test_verdict_dict_says_how_the_interval_was_made() -> None:
    out = compare(_scores(a=[1.0, 0.0], b=[0.0, 0.0])).to_dict()
    assert out["best"] == "a" and out["models_differ"] is False
    assert "bootstrap" in out["interval_method"]
    assert out["estimates"]["a"]["n_problems"] == 2


def test_per_problem_values_filters_dataset_difficulty_and_k() -> None:
    summary = {
        "per_problem": {
            "c1": {"dataset": "codecontests", "difficulty": 1, "pass@1": 1.0, "pass@2": 1.0},
            "c2": {"dataset": "codecontests", "difficulty": 2, "pass@1": 0.5},
            "m1": {"dataset": "mbpp", "difficulty": None, "pass@1": 0.0},
        }
    }
    assert per_problem_values(summary, "codecontests", 1) == {"c1": 1.0, "c2": 0.5}
    assert per_problem_values(summary, "codecontests", 1, difficulty=2) == {"c2": 0.5}
    assert per_problem_values(summary, "codecontests", 2) == {"c1": 1.0}
    assert per_problem_values(summary, "mbpp", 1) == {"m1": 0.0}
