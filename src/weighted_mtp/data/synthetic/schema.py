"""Enums of the Hugging Face ``deepmind/code_contests`` card and the assembly of one row.

The numbering is the dataset card's (``source``: ATCODER 5, AIZU 6; ``difficulty``: contiguous
letters from A = 7), which is what :mod:`weighted_mtp.data.codecontests` reads as ``hf``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Source enum (Hugging Face card numbering).
SOURCE_UNKNOWN = 0
SOURCE_CODECHEF = 1
SOURCE_CODEFORCES = 2
SOURCE_HACKEREARTH = 3
SOURCE_CODEJAM = 4
SOURCE_ATCODER = 5
SOURCE_AIZU = 6

# Difficulty enum (Hugging Face card numbering): 0 unknown, 1-5 EASY..HARDEST, 6 EXTERNAL,
# 7.. Codeforces letters.
DIFFICULTY_UNKNOWN = 0
DIFFICULTY_EASY = 1
DIFFICULTY_MEDIUM = 2
DIFFICULTY_HARD = 3
DIFFICULTY_A = 7
DIFFICULTY_B = 8
DIFFICULTY_C = 9
DIFFICULTY_D = 10
DIFFICULTY_E = 11
DIFFICULTY_F = 12

# Solution.Language enum.
LANGUAGE_UNKNOWN = 0
LANGUAGE_PYTHON2 = 1
LANGUAGE_CPP = 2
LANGUAGE_PYTHON3 = 3
LANGUAGE_JAVA = 4


@dataclass(frozen=True)
class Level:
    """One difficulty level of the generator: the enum it is labelled with and its sizes.

    Attributes:
        difficulty: the ``difficulty`` enum value of the rows (Codeforces letter).
        letter: the Codeforces problem index (``cf_index``).
        n: upper bound on sizes (array length, string length, ...).
        v: upper bound on absolute values.
        multi_probability: chance that a task of this level has a multi-test-case input.
        t: upper bound on the number of test cases of a multi-test input.
        rating: Codeforces rating around which ``cf_rating`` is drawn.
        points: ``cf_points`` of the problem.
    """

    difficulty: int
    letter: str
    n: int
    v: int
    multi_probability: float
    t: int
    rating: int
    points: float


# Three levels whose letters (A, C, F) fall into the low / medium / high bins of the default
# training curriculum (weighted_mtp.data.sampling: [0, 8], [9, 11], [12, ...]), so that every
# curriculum phase finds rows in the embedded default data.
LEVELS: dict[int, Level] = {
    DIFFICULTY_A: Level(
        DIFFICULTY_A, "A", n=8, v=20, multi_probability=0.0, t=3, rating=800, points=500.0
    ),
    DIFFICULTY_C: Level(
        DIFFICULTY_C, "C", n=20, v=1000, multi_probability=0.5, t=4, rating=1400, points=1250.0
    ),
    DIFFICULTY_F: Level(
        DIFFICULTY_F, "F", n=40, v=10**9, multi_probability=1.0, t=5, rating=2200, points=2500.0
    ),
}
DIFFICULTIES: tuple[int, ...] = tuple(LEVELS)

SPLITS: tuple[str, ...] = ("train", "valid", "test")

# Codeforces is most of the real dataset; the other sources carry no cf_* metadata.
SOURCE_WEIGHTS: tuple[tuple[int, float], ...] = (
    (SOURCE_CODEFORCES, 0.75),
    (SOURCE_CODECHEF, 0.1),
    (SOURCE_ATCODER, 0.06),
    (SOURCE_AIZU, 0.05),
    (SOURCE_HACKEREARTH, 0.04),
)

MEMORY_LIMITS = (256_000_000, 256_000_000, 512_000_000, 64_000_000)


def tests_field(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """``[(input, output), ...]`` -> the card's ``{"input": [...], "output": [...]}``."""
    return {"input": [i for i, _ in pairs], "output": [o for _, o in pairs]}


def solutions_field(programs: list[tuple[int, str]]) -> dict[str, list[Any]]:
    """``[(language, source), ...]`` -> the card's ``{"language": [...], "solution": [...]}``."""
    return {"language": [lang for lang, _ in programs], "solution": [src for _, src in programs]}


def assemble_row(
    *,
    name: str,
    description: str,
    public_tests: list[tuple[str, str]],
    private_tests: list[tuple[str, str]],
    generated_tests: list[tuple[str, str]],
    source: int,
    difficulty: int,
    solutions: list[tuple[int, str]],
    incorrect_solutions: list[tuple[int, str]],
    cf_contest_id: int,
    cf_index: str,
    cf_points: float,
    cf_rating: int,
    cf_tags: list[str],
    time_limit: dict[str, int] | None,
    memory_limit_bytes: int,
    bug_spans: list[list[int] | None] | None = None,
) -> dict[str, Any]:
    """One row with every field of the ``deepmind/code_contests`` card, in the card's order.

    ``bug_spans`` (one per incorrect solution: ``[start, end)`` characters where it departs
    from its correct twin, or None) goes into ``incorrect_solutions["bug_span"]``, a field the
    card does not have: the converter reads it when present (the real dataset has none)."""
    incorrect = solutions_field(incorrect_solutions)
    if bug_spans is not None:
        if len(bug_spans) != len(incorrect_solutions):
            raise ValueError(
                f"{len(bug_spans)} bug spans for {len(incorrect_solutions)} incorrect solutions"
            )
        incorrect["bug_span"] = list(bug_spans)
    return {
        "name": name,
        "description": description,
        "public_tests": tests_field(public_tests),
        "private_tests": tests_field(private_tests),
        "generated_tests": tests_field(generated_tests),
        "source": source,
        "difficulty": difficulty,
        "solutions": solutions_field(solutions),
        "incorrect_solutions": incorrect,
        "cf_contest_id": cf_contest_id,
        "cf_index": cf_index,
        "cf_points": cf_points,
        "cf_rating": cf_rating,
        "cf_tags": cf_tags,
        "is_description_translated": False,
        "untranslated_description": "",
        "time_limit": time_limit,
        "memory_limit_bytes": memory_limit_bytes,
        "input_file": "",
        "output_file": "",
    }
