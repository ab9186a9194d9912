"""Seeded sampling of training rows from a metadata table alone (no JSONL is opened here).

Every sampler is a pure function of the metadata table, its parameters and a seed, and returns
row numbers (values of the table's ``row`` column) as an ``int64`` array; reading the records is
a separate step (:func:`weighted_mtp.data.offset_reader.read_records`). The same functions draw
validation sets from the validation split's metadata.

Samplers:

- :func:`sample_balanced` (critic, stage 1): ``is_correct`` balanced (50:50 by default) over all
  difficulties.
- :func:`sample_correct` (baseline, rho1): correct solutions only.
- :func:`sample_curriculum` (verifiable, stage 2): rows in phase order, each phase with its own
  mix of difficulty bins (:class:`CurriculumConfig`).

Rows are drawn without replacement. When a request asks for more rows than the table offers in
some class or bin, ``on_shortfall`` decides: ``"error"`` (default) raises
:class:`SampleSizeError` with what was asked and what is available per class/bin; ``"shrink"``
returns the largest sample that keeps the requested proportions exactly (so a 50:50 sample stays
50:50 and a curriculum keeps its phase lengths and mixes), and says nothing: callers that care log
``len(rows)``.

``max_tokens`` (optional, every sampler) keeps only rows with
``n_prompt_tokens + n_output_tokens <= max_tokens`` before sampling. ``n_prompt_tokens`` counts
the prompt without BOS (``docs/contracts.md``), so pass the collator's ``max_length - 1`` to be
sure that nothing gets truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

Shortfall = Literal["error", "shrink"]


class SampleSizeError(ValueError):
    """A sample asks for more rows than the metadata offers in some class or bin."""


class SamplingConfigError(ValueError):
    """Sampling parameters that cannot describe a sample (mixes not summing to 1, ...)."""


def _default_bins() -> dict[str, list[int]]:
    # CodeContests difficulty ids (Hugging Face card): 0 unknown, 1-5 EASY..HARDEST, 6 EXTERNAL,
    # 7.. Codeforces letters A, B, C, ... Low: the graded-easy sources and A/B; medium: C-E;
    # high: F and beyond.
    return {"low": [0, 8], "medium": [9, 11], "high": [12, 1_000_000]}


def _default_phase_ends() -> list[float]:
    return [0.3, 0.7, 1.0]


def _default_phase_mixes() -> list[dict[str, float]]:
    return [
        {"low": 0.7, "medium": 0.3, "high": 0.0},
        {"low": 0.3, "medium": 0.6, "high": 0.1},
        {"low": 0.1, "medium": 0.5, "high": 0.4},
    ]


@dataclass(frozen=True)
class CurriculumConfig:
    """Stage-2 curriculum: phases of training progress, each a mix of difficulty bins.

    Attributes:
        difficulty_bins: bin name -> ``[low, high]``, an inclusive range of ``difficulty``
            values. Bins must not overlap; rows whose difficulty falls in no bin are never drawn.
        phase_ends: training-progress fraction at which each phase ends, increasing, the last
            one 1.0 (default 0-30% / 30-70% / 70-100%).
        phase_mixes: per phase, bin name -> fraction of that phase's rows; each mix sums to 1.
            Bins absent from a mix get 0.
        correct_fraction: fraction of correct rows inside every (phase, bin) cell, or None to
            draw from a bin without regard to ``is_correct`` (its natural proportion). Default
            0.5: the TD targets of stage 2 need both rewards, as the critic's stage 1 did.
    """

    difficulty_bins: dict[str, list[int]] = field(default_factory=_default_bins)
    phase_ends: list[float] = field(default_factory=_default_phase_ends)
    phase_mixes: list[dict[str, float]] = field(default_factory=_default_phase_mixes)
    correct_fraction: float | None = 0.5

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`SamplingConfigError` naming the first inconsistent field."""
        if not self.difficulty_bins:
            raise SamplingConfigError("difficulty_bins is empty: expected at least one bin")
        ranges = []
        for name, bounds in self.difficulty_bins.items():
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise SamplingConfigError(
                    f"difficulty_bins[{name!r}] = {list(bounds)}: expected [low, high], low <= high"
                )
            ranges.append((bounds[0], bounds[1], name))
        ranges.sort()
        for (_, hi, a), (lo, _, b) in zip(ranges, ranges[1:], strict=False):
            if lo <= hi:
                raise SamplingConfigError(f"difficulty_bins {a!r} and {b!r} overlap")
        ends = list(self.phase_ends)
        if (
            not ends
            or ends[-1] != 1.0
            or any(e <= s for s, e in zip([0.0, *ends], ends, strict=False))
        ):
            raise SamplingConfigError(
                f"phase_ends = {ends}: expected increasing fractions in (0, 1], the last one 1.0"
            )
        if len(self.phase_mixes) != len(ends):
            raise SamplingConfigError(
                f"{len(self.phase_mixes)} phase_mixes for {len(ends)} phase_ends: expected one each"
            )
        for k, mix in enumerate(self.phase_mixes):
            unknown = set(mix) - set(self.difficulty_bins)
            if unknown:
                raise SamplingConfigError(
                    f"phase_mixes[{k}] names bins {sorted(unknown)} that are not in "
                    f"difficulty_bins {sorted(self.difficulty_bins)}"
                )
            if any(v < 0 for v in mix.values()) or abs(sum(mix.values()) - 1.0) > 1e-6:
                raise SamplingConfigError(
                    f"phase_mixes[{k}] = {dict(mix)}: expected non-negative fractions summing to 1"
                )
        if self.correct_fraction is not None and not 0.0 <= self.correct_fraction <= 1.0:
            raise SamplingConfigError(
                f"correct_fraction = {self.correct_fraction}: expected a fraction in [0, 1] or None"
            )

    @property
    def bin_names(self) -> list[str]:
        return list(self.difficulty_bins)


def _split_counts(total: int, fractions: Sequence[float]) -> np.ndarray:
    """Integer counts proportional to ``fractions`` that sum to ``total`` (largest remainder).

    Ties go to the earlier entry, so the split is deterministic.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    exact = total * fractions / fractions.sum() if fractions.sum() > 0 else np.zeros_like(fractions)
    counts = np.floor(exact + 1e-9).astype(np.int64)
    remainder = total - int(counts.sum())
    if remainder > 0:
        # Stable sort on the negated remainders: the largest first, ties by position.
        counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1
    return counts


def _candidates(metadata: pd.DataFrame, max_tokens: int | None) -> np.ndarray:
    """Positions (not row numbers) of the rows that may be drawn."""
    if max_tokens is None:
        return np.arange(len(metadata))
    total = metadata["n_prompt_tokens"].to_numpy(np.int64) + metadata["n_output_tokens"].to_numpy(
        np.int64
    )
    return np.flatnonzero(total <= max_tokens)


def _draw(
    rng: np.random.Generator,
    pools: Sequence[np.ndarray],
    counts: np.ndarray,
) -> list[np.ndarray]:
    """Draw ``counts[i]`` positions from ``pools[i]`` without replacement, in random order."""
    return [
        rng.choice(pool, size=int(c), replace=False) if c else pool[:0]
        for pool, c in zip(pools, counts, strict=True)
    ]


def _shrink_factor(demand: np.ndarray, available: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        ratios = np.where(demand > 0, available / np.maximum(demand, 1), np.inf)
    return float(min(1.0, ratios.min())) if len(ratios) else 1.0


def _check_request(metadata: pd.DataFrame, columns: Sequence[str], n_samples: int) -> None:
    if n_samples < 0:
        raise SamplingConfigError(f"n_samples = {n_samples}: expected >= 0")
    missing = [c for c in columns if c not in metadata.columns]
    if missing:
        raise KeyError(
            f"metadata table lacks columns {missing}; it has {list(metadata.columns)} "
            "(expected the schema of docs/contracts.md)"
        )


def sample_balanced(
    metadata: pd.DataFrame,
    n_samples: int,
    *,
    seed: int,
    correct_fraction: float = 0.5,
    max_tokens: int | None = None,
    on_shortfall: Shortfall = "error",
) -> np.ndarray:
    """Stage-1 sample: ``correct_fraction`` correct rows, the rest incorrect, any difficulty.

    Args:
        metadata: the metadata table (``row``, ``is_correct``; ``n_prompt_tokens`` and
            ``n_output_tokens`` when ``max_tokens`` is set).
        n_samples: rows to return.
        seed: the whole result is a function of (metadata, parameters, seed).
        correct_fraction: share of correct rows (0.5 = balanced); counts are rounded with the
            correct class taking the odd row.
        max_tokens: keep only rows with ``n_prompt_tokens + n_output_tokens <= max_tokens``.
        on_shortfall: ``"error"`` or ``"shrink"`` (see the module docstring).

    Returns:
        ``[n]`` int64 row numbers, classes interleaved in random order; ``n == n_samples``
        unless ``on_shortfall="shrink"`` had to shrink.

    Raises:
        SampleSizeError: a class has fewer rows than asked and ``on_shortfall="error"``.
    """
    if not 0.0 <= correct_fraction <= 1.0:
        raise SamplingConfigError(f"correct_fraction = {correct_fraction}: expected [0, 1]")
    _check_request(metadata, ["row", "is_correct"], n_samples)
    rng = np.random.default_rng(seed)
    cand = _candidates(metadata, max_tokens)
    is_correct = metadata["is_correct"].to_numpy(bool)[cand]
    pools = [cand[is_correct], cand[~is_correct]]
    available = np.array([len(p) for p in pools])

    def plan(n: int) -> np.ndarray:
        n_correct = int(np.ceil(n * correct_fraction - 1e-9))
        return np.array([n_correct, n - n_correct])

    demand = plan(n_samples)
    if (demand > available).any():
        where = f" with max_tokens={max_tokens}" if max_tokens is not None else ""
        detail = (
            f"asked for {n_samples} rows ({demand[0]} correct, {demand[1]} incorrect); "
            f"the metadata offers {available[0]} correct and {available[1]} incorrect{where}"
        )
        if on_shortfall == "error":
            raise SampleSizeError(f"balanced sample too large: {detail}")
        n_samples = _largest_feasible(n_samples, plan, available)
        demand = plan(n_samples)
    drawn = _draw(rng, pools, demand)
    positions = rng.permutation(np.concatenate(drawn))
    return metadata["row"].to_numpy(np.int64)[positions]


def sample_correct(
    metadata: pd.DataFrame,
    n_samples: int,
    *,
    seed: int,
    max_tokens: int | None = None,
    on_shortfall: Shortfall = "error",
) -> np.ndarray:
    """Correct-only sample (baseline, rho1): ``[n]`` int64 row numbers in random order.

    Same arguments and errors as :func:`sample_balanced`; with ``"shrink"``, a short supply
    returns every correct row.
    """
    return sample_balanced(
        metadata,
        n_samples,
        seed=seed,
        correct_fraction=1.0,
        max_tokens=max_tokens,
        on_shortfall=on_shortfall,
    )


def curriculum_plan(n_samples: int, config: CurriculumConfig) -> np.ndarray:
    """Rows per phase and bin: ``[n_phases, n_bins]`` int64, summing to ``n_samples``.

    Phase k gets ``n_samples * (phase_ends[k] - phase_ends[k-1])`` rows (rounded by largest
    remainder), split among bins (``config.bin_names`` order) by ``phase_mixes[k]``.
    """
    ends = np.asarray(config.phase_ends, dtype=np.float64)
    widths = np.diff(np.concatenate([[0.0], ends]))
    per_phase = _split_counts(n_samples, widths)
    names = config.bin_names
    return np.stack(
        [
            _split_counts(int(size), [mix.get(name, 0.0) for name in names])
            for size, mix in zip(per_phase, config.phase_mixes, strict=True)
        ]
    )


def curriculum_phase_sizes(n_rows: int, config: CurriculumConfig) -> list[int]:
    """Rows in each phase of a curriculum sample of ``n_rows`` rows (phase order).

    ``sample_curriculum(...)[:sizes[0]]`` is phase 0, the next ``sizes[1]`` rows phase 1, ...
    Valid for shrunk samples too (shrinking keeps the plan of the returned length).
    """
    return curriculum_plan(n_rows, config).sum(axis=1).tolist()


def sample_curriculum(
    metadata: pd.DataFrame,
    n_samples: int,
    *,
    seed: int,
    config: CurriculumConfig | None = None,
    max_tokens: int | None = None,
    on_shortfall: Shortfall = "error",
) -> np.ndarray:
    """Stage-2 curriculum sample: row numbers in phase order, each phase mixed as configured.

    Within a phase, bins (and correct/incorrect, per ``config.correct_fraction``) are
    interleaved in random order; no row appears twice across phases. Train in the returned
    order (a distributed sampler must keep it) to follow the curriculum.

    Args:
        metadata: the metadata table (``row``, ``difficulty``, ``is_correct``; token counts when
            ``max_tokens`` is set).
        n_samples: rows to return.
        seed: the whole result is a function of (metadata, parameters, seed).
        config: bins, phases and mixes (default :class:`CurriculumConfig`).
        max_tokens, on_shortfall: as in :func:`sample_balanced`.

    Returns:
        ``[n]`` int64 row numbers; :func:`curriculum_phase_sizes` ``(n, config)`` gives the
        phase boundaries.

    Raises:
        SampleSizeError: a (bin, class) stratum has fewer rows than all phases together ask
            for, and ``on_shortfall="error"``.
    """
    config = config if config is not None else CurriculumConfig()
    _check_request(metadata, ["row", "difficulty", "is_correct"], n_samples)
    rng = np.random.default_rng(seed)
    cand = _candidates(metadata, max_tokens)
    difficulty = metadata["difficulty"].to_numpy(np.int64)[cand]
    is_correct = metadata["is_correct"].to_numpy(bool)[cand]
    names = config.bin_names
    classes = [None] if config.correct_fraction is None else [True, False]

    # Strata: (bin, class) pairs, disjoint, so draws from different strata never collide.
    pools = []
    for name in names:
        low, high = config.difficulty_bins[name]
        in_bin = (difficulty >= low) & (difficulty <= high)
        for cls in classes:
            pools.append(cand[in_bin if cls is None else in_bin & (is_correct == cls)])
    available = np.array([len(p) for p in pools])

    def plan(n: int) -> np.ndarray:
        """``[n_phases, n_strata]``: rows of each stratum in each phase."""
        by_bin = curriculum_plan(n, config)
        if config.correct_fraction is None:
            return by_bin
        n_correct = np.ceil(by_bin * config.correct_fraction - 1e-9).astype(np.int64)
        return np.stack([n_correct, by_bin - n_correct], axis=2).reshape(len(by_bin), -1)

    cells = plan(n_samples)
    demand = cells.sum(axis=0)
    if (demand > available).any():
        labels = [
            name if cls is None else f"{name}/{'correct' if cls else 'incorrect'}"
            for name in names
            for cls in classes
        ]
        where = f" with max_tokens={max_tokens}" if max_tokens is not None else ""
        detail = ", ".join(
            f"{label}: asked {d}, available {a}"
            for label, d, a in zip(labels, demand, available, strict=True)
        )
        if on_shortfall == "error":
            raise SampleSizeError(
                f"curriculum sample of {n_samples} rows too large{where}: {detail}"
            )
        n_samples = _largest_feasible(n_samples, lambda n: plan(n).sum(axis=0), available)
        cells = plan(n_samples)
        demand = cells.sum(axis=0)

    drawn = _draw(rng, pools, demand)
    # Hand each stratum's draw out to the phases in order: phase 0 takes the first rows, ...
    cuts = np.cumsum(cells, axis=0)
    phases = []
    for k in range(len(cells)):
        parts = [d[(cuts[k - 1, s] if k else 0) : cuts[k, s]] for s, d in enumerate(drawn)]
        phases.append(rng.permutation(np.concatenate(parts)))
    positions = np.concatenate(phases).astype(np.int64)
    return metadata["row"].to_numpy(np.int64)[positions]


def _largest_feasible(n: int, plan: Callable[[int], np.ndarray], available: np.ndarray) -> int:
    """The largest sample size ``m <= n`` whose plan fits ``available`` in every stratum.

    Starts from the proportional estimate and corrects for rounding by stepping down until
    the plan fits, then up while it still fits (rounding moves a stratum's demand by at most a
    row per cell, so both walks are a few steps).
    """
    m = int(np.floor(n * _shrink_factor(np.asarray(plan(n)), available)))
    while m > 0 and (np.asarray(plan(m)) > available).any():
        m -= 1
    while m < n and not (np.asarray(plan(m + 1)) > available).any():
        m += 1
    return m
