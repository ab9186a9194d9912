"""Streams of synthetic ``deepmind/code_contests`` rows.

Row ``i`` of a stream depends only on ``(seed, split, i)`` and the allowed difficulties (its
own random generator), so a stream is deterministic, any prefix of a longer stream equals the
shorter stream, and nothing is executed while generating.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from weighted_mtp.data.synthetic.family import Family, pick, randint
from weighted_mtp.data.synthetic.registry import FAMILIES
from weighted_mtp.data.synthetic.schema import (
    DIFFICULTIES,
    MEMORY_LIMITS,
    SOURCE_CODEFORCES,
    SOURCE_WEIGHTS,
    SPLITS,
    assemble_row,
)
from weighted_mtp.data.synthetic.statement import render_statement
from weighted_mtp.data.synthetic.tasks import Task, draw_programs, draw_task, draw_tests


def _check_arguments(
    n_tasks: int, split: str, difficulties: Sequence[int] | None
) -> tuple[int, ...]:
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 0:
        raise ValueError(f"n_tasks must be a non-negative integer, got {n_tasks!r}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {list(SPLITS)}")
    if difficulties is None:
        return DIFFICULTIES
    chosen = tuple(dict.fromkeys(difficulties))
    unknown = [d for d in chosen if d not in DIFFICULTIES]
    if unknown or not chosen:
        raise ValueError(
            f"difficulties {list(difficulties)!r}: expected a non-empty subset of "
            f"{list(DIFFICULTIES)} (Codeforces letters A, C, F of the dataset card)"
        )
    return chosen


def _family_order(seed: int, split: str, block: int) -> list[Family]:
    # Families are dealt in shuffled rounds so that any FAMILIES-sized window covers them all.
    order = list(FAMILIES)
    random.Random(f"{seed}/{split}/round{block}").shuffle(order)
    return order


def _draw_source(rng: random.Random) -> int:
    x = rng.random()
    for source, weight in SOURCE_WEIGHTS:
        x -= weight
        if x < 0:
            return source
    return SOURCE_WEIGHTS[0][0]


def build_row(task: Task, rng: random.Random, index: int, split: str) -> dict[str, Any]:
    """The row of ``task``, the ``index``-th of ``split``."""
    public, private, generated = draw_tests(task, rng)
    solutions, incorrect, bug_spans = draw_programs(task, rng)
    level = task.level
    source = _draw_source(rng)
    # Contest numbers interleave the splits, so names never collide within or across splits.
    number = 3 * index + SPLITS.index(split) + 1
    title = task.family.title(task.params)
    if source == SOURCE_CODEFORCES:
        name = f"{number}_{level.letter}. {title}"
        cf = {
            "cf_contest_id": number,
            "cf_index": level.letter,
            "cf_points": level.points if rng.random() < 0.7 else 0.0,
            "cf_rating": level.rating + 100 * randint(rng, -2, 2),
            "cf_tags": list(task.family.tags),
        }
    else:
        name = f"p{number:05d} {title}"
        cf = {"cf_contest_id": 0, "cf_index": "", "cf_points": 0.0, "cf_rating": 0, "cf_tags": []}
    seconds = pick(rng, (1, 1, 2, 2, 3))
    return assemble_row(
        name=name,
        description=render_statement(task.family, task.params, level, task.multi, public, rng),
        public_tests=public,
        private_tests=private,
        generated_tests=generated,
        source=source,
        difficulty=level.difficulty,
        solutions=solutions,
        incorrect_solutions=incorrect,
        bug_spans=bug_spans,
        time_limit=None if rng.random() < 0.02 else {"seconds": seconds, "nanos": 0},
        memory_limit_bytes=pick(rng, MEMORY_LIMITS),
        **cf,
    )


def iter_tasks(
    n_tasks: int, seed: int, split: str = "train", difficulties: Sequence[int] | None = None
) -> Iterator[tuple[Task, random.Random]]:
    """The tasks of a stream, each with the random generator its row is built from."""
    levels = _check_arguments(n_tasks, split, difficulties)
    order: list[Family] = []
    for index in range(n_tasks):
        if index % len(FAMILIES) == 0:
            order = _family_order(seed, split, index // len(FAMILIES))
        rng = random.Random(f"{seed}/{split}/{index}")
        start = index % len(FAMILIES)
        for offset in range(len(FAMILIES)):
            # A family with no instance in this split at this level hands over to the next.
            family = order[(start + offset) % len(order)]
            task = draw_task(rng, family, pick(rng, levels), split)
            if task is not None:
                break
        else:  # pragma: no cover - every family has instances in every split
            raise RuntimeError(f"no task instance found for {split!r} row {index}")
        yield task, rng


def iter_codecontests_rows(
    n_tasks: int, seed: int, split: str = "train", difficulties: Sequence[int] | None = None
) -> Iterator[dict[str, Any]]:
    """Stream ``n_tasks`` synthetic rows in the Hugging Face ``deepmind/code_contests`` schema.

    Args:
        n_tasks: number of rows (one task each).
        seed: the stream's seed; the same seed gives byte-identical rows.
        split: ``train``, ``valid`` or ``test``; splits never share task instances or names.
        difficulties: the ``difficulty`` enum values to draw from (a subset of
            ``DIFFICULTIES``: 7 = A, 9 = C, 12 = F); None draws from all.

    Raises:
        ValueError: negative ``n_tasks``, unknown split or difficulty.
    """
    # Arguments are checked before the first row is asked for, not at the first next().
    _check_arguments(n_tasks, split, difficulties)
    return (
        build_row(task, rng, index, split)
        for index, (task, rng) in enumerate(iter_tasks(n_tasks, seed, split, difficulties))
    )


def generate_codecontests_rows(
    n_tasks: int, seed: int, split: str = "train", difficulties: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """:func:`iter_codecontests_rows` as a list."""
    return list(iter_codecontests_rows(n_tasks, seed, split, difficulties))
