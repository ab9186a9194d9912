"""Samplers: proportions, determinism, curriculum order and mixes, shortfall behaviour."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from weighted_mtp.data.sampling import (
    CurriculumConfig,
    SampleSizeError,
    SamplingConfigError,
    curriculum_phase_sizes,
    curriculum_plan,
    sample_balanced,
    sample_correct,
    sample_curriculum,
)


def make_metadata(n: int, *, seed: int = 0, correct_share: float = 0.3) -> pd.DataFrame:
    """A metadata table with the contract's columns; row numbers start at 1000 so that a
    sampler returning positions instead of row numbers fails."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "row": np.arange(1000, 1000 + n, dtype=np.int64),
            "offset": np.arange(n, dtype=np.int64) * 100,
            "length": np.full(n, 99, dtype=np.int64),
            "is_correct": rng.random(n) < correct_share,
            "difficulty": rng.integers(0, 20, n),
            "task_id": [f"t{i // 5}" for i in range(n)],
            "n_prompt_tokens": rng.integers(50, 500, n),
            "n_output_tokens": rng.integers(10, 1000, n),
        }
    )


@pytest.fixture(scope="module")
def meta() -> pd.DataFrame:
    return make_metadata(20_000)


def _by_row(meta: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    return meta.set_index("row").loc[rows]


def test_balanced_is_half_correct_unique_and_seeded(meta: pd.DataFrame) -> None:
    rows = sample_balanced(meta, 4001, seed=7)
    assert rows.dtype == np.int64 and len(rows) == 4001 and len(set(rows)) == 4001
    picked = _by_row(meta, rows)
    assert picked["is_correct"].sum() == 2001  # the odd row goes to the correct class
    # Over all difficulties: every difficulty present in the pool shows up.
    assert set(picked["difficulty"]) == set(meta["difficulty"])
    # Classes are interleaved, not concatenated.
    assert 0.3 < picked["is_correct"].iloc[:1000].mean() < 0.7
    assert np.array_equal(rows, sample_balanced(meta, 4001, seed=7))
    assert not np.array_equal(rows, sample_balanced(meta, 4001, seed=8))


def test_balanced_other_fraction_and_max_tokens(meta: pd.DataFrame) -> None:
    rows = sample_balanced(meta, 1000, seed=1, correct_fraction=0.25, max_tokens=600)
    picked = _by_row(meta, rows)
    assert picked["is_correct"].sum() == 250
    assert (picked["n_prompt_tokens"] + picked["n_output_tokens"]).max() <= 600


def test_correct_only(meta: pd.DataFrame) -> None:
    rows = sample_correct(meta, 3000, seed=3)
    assert len(set(rows)) == 3000 and _by_row(meta, rows)["is_correct"].all()
    assert np.array_equal(rows, sample_correct(meta, 3000, seed=3))


def test_too_large_sample_raises_with_counts(meta: pd.DataFrame) -> None:
    n_correct = int(meta["is_correct"].sum())
    n_incorrect = len(meta) - n_correct
    with pytest.raises(SampleSizeError) as info:
        sample_balanced(meta, 2 * n_correct + 2, seed=0)
    message = str(info.value)
    assert f"{n_correct + 1} correct" in message and f"offers {n_correct} correct" in message
    assert f"{n_incorrect} incorrect" in message
    with pytest.raises(SampleSizeError, match=f"offers {n_correct} correct"):
        sample_correct(meta, n_correct + 1, seed=0)


def test_shrink_keeps_proportions(meta: pd.DataFrame) -> None:
    n_correct = int(meta["is_correct"].sum())
    rows = sample_balanced(meta, 3 * n_correct, seed=0, on_shortfall="shrink")
    assert len(rows) == 2 * n_correct
    assert _by_row(meta, rows)["is_correct"].sum() == n_correct
    assert len(sample_correct(meta, len(meta), seed=0, on_shortfall="shrink")) == n_correct


def test_curriculum_plan_defaults() -> None:
    plan = curriculum_plan(1000, CurriculumConfig())
    # Phases 0-30% / 30-70% / 70-100%, mixes 70/30/0, 30/60/10, 10/50/40 (low/medium/high).
    assert plan.tolist() == [[210, 90, 0], [120, 240, 40], [30, 150, 120]]
    assert curriculum_phase_sizes(1000, CurriculumConfig()) == [300, 400, 300]
    assert curriculum_plan(7, CurriculumConfig()).sum() == 7


def test_curriculum_phase_order_and_mixes(meta: pd.DataFrame) -> None:
    config = CurriculumConfig(correct_fraction=None)
    rows = sample_curriculum(meta, 3000, seed=11, config=config)
    assert len(rows) == 3000 and len(set(rows)) == 3000
    picked = _by_row(meta, rows)
    bins = np.select(
        [picked["difficulty"] <= 8, picked["difficulty"] <= 11], ["low", "medium"], "high"
    )
    start = 0
    for size, mix in zip(curriculum_phase_sizes(3000, config), config.phase_mixes, strict=True):
        phase = pd.Series(bins[start : start + size])
        for name, share in mix.items():
            assert (phase == name).sum() == round(share * size), (start, name)
        # Bins are interleaved within a phase, not laid out in blocks.
        if mix["low"] and mix["medium"]:
            assert 0 < (phase.iloc[: size // 4] == "low").mean() < 1
        start += size
    assert np.array_equal(rows, sample_curriculum(meta, 3000, seed=11, config=config))


def test_curriculum_custom_bins_and_correct_fraction(meta: pd.DataFrame) -> None:
    config = CurriculumConfig(
        difficulty_bins={"easy": [0, 9], "hard": [10, 19]},
        phase_ends=[0.5, 1.0],
        phase_mixes=[{"easy": 1.0}, {"easy": 0.2, "hard": 0.8}],
        correct_fraction=0.5,
    )
    rows = sample_curriculum(meta, 2000, seed=5, config=config)
    picked = _by_row(meta, rows)
    first, second = picked.iloc[:1000], picked.iloc[1000:]
    assert (first["difficulty"] <= 9).all()
    assert (second["difficulty"] >= 10).sum() == 800
    assert first["is_correct"].sum() == 500 and second["is_correct"].sum() == 500


def test_curriculum_shortfall(meta: pd.DataFrame) -> None:
    config = CurriculumConfig(correct_fraction=0.5)
    with pytest.raises(SampleSizeError, match=r"high/correct: asked \d+, available \d+"):
        sample_curriculum(meta, 15_000, seed=0, config=config)
    rows = sample_curriculum(meta, 15_000, seed=0, config=config, on_shortfall="shrink")
    assert 0 < len(rows) < 15_000 and len(set(rows)) == len(rows)
    # The shrunk sample still follows the plan of its own length.
    picked = _by_row(meta, rows)
    high = picked["difficulty"].to_numpy() >= 12
    sizes = curriculum_phase_sizes(len(rows), config)
    expected_high = curriculum_plan(len(rows), config)[:, 2]
    bounds = np.cumsum([0, *sizes])
    for k in range(3):
        assert high[bounds[k] : bounds[k + 1]].sum() == expected_high[k]


def test_negative_size_and_missing_columns(meta: pd.DataFrame) -> None:
    with pytest.raises(SamplingConfigError, match="n_samples = -1"):
        sample_balanced(meta, -1, seed=0)
    with pytest.raises(KeyError, match=r"lacks columns \['difficulty'\]"):
        sample_curriculum(meta.drop(columns="difficulty"), 10, seed=0)
    assert len(sample_curriculum(meta, 0, seed=0)) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"phase_mixes": [{"low": 0.5}, {"low": 1.0}, {"low": 1.0}]}, "summing to 1"),
        ({"phase_ends": [0.3, 0.2, 1.0]}, "increasing"),
        ({"phase_ends": [0.5, 1.0]}, "3 phase_mixes for 2 phase_ends"),
        ({"difficulty_bins": {"low": [0, 5], "medium": [5, 9], "high": [10, 20]}}, "overlap"),
        ({"phase_mixes": [{"nope": 1.0}, {"low": 1.0}, {"low": 1.0}]}, "nope"),
        ({"correct_fraction": 1.5}, "correct_fraction"),
    ],
)
def test_curriculum_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(SamplingConfigError, match=match):
        CurriculumConfig(**kwargs)


def test_million_rows_sample_fast() -> None:
    big = make_metadata(1_000_000, seed=1, correct_share=0.4)
    t0 = time.perf_counter()
    sample_balanced(big, 50_000, seed=0)
    sample_correct(big, 50_000, seed=0, max_tokens=1000)
    sample_curriculum(big, 50_000, seed=0)
    elapsed = time.perf_counter() - t0
    # Three samplers, well under a second each even on a loaded 2-core machine.
    assert elapsed < 1.5, elapsed
