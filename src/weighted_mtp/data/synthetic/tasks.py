"""One task: an instance of a family at a level, with its tests and labelled programs.

Instances are assigned to splits by a stable hash of what defines them (family, level, input
format, parameters), so ``train``, ``valid`` and ``test`` never share an instance, whatever
the seed.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from weighted_mtp.data.synthetic.family import Family, Params, pick, randint
from weighted_mtp.data.synthetic.programs import (
    FORMAT_BUGS,
    MULTI_FORMAT_BUGS,
    MULTI_LAYOUTS,
    PRINT_STYLES,
    READ_STYLES,
    SINGLE_LAYOUTS,
    build_program,
    build_python2_program,
    render_test,
)
from weighted_mtp.data.synthetic.schema import LANGUAGE_PYTHON2, LANGUAGE_PYTHON3, LEVELS, Level

# Hash buckets (of 10) per split: 80 / 10 / 10.
SPLIT_BUCKETS = {"train": range(0, 8), "valid": range(8, 9), "test": range(9, 10)}
# Tries at drawing an instance of a family in the wanted split before giving up on the family
# (families with few instances per level may have none in a small split).
MAX_INSTANCE_TRIES = 40


@dataclass(frozen=True)
class Task:
    """A family instance: what the statement, tests and programs are generated from."""

    family: Family
    level: Level
    params: Params
    multi: bool

    @cached_property
    def key(self) -> str:
        """What identifies the instance across splits (stable across processes)."""
        # Keys starting with "_" hold code derived from the others (not part of the identity).
        items = ",".join(f"{k}={v!r}" for k, v in sorted(self.params.items()) if k[0] != "_")
        lv = self.level
        return f"{self.family.name}|{lv.difficulty}|{lv.n}|{lv.v}|{int(self.multi)}|{items}"


def split_of(key: str) -> str:
    """The split an instance key belongs to."""
    bucket = zlib.crc32(key.encode()) % 10
    return next(name for name, buckets in SPLIT_BUCKETS.items() if bucket in buckets)


def _instance_level(rng: random.Random, base: Level) -> Level:
    """The level with this instance's own bounds on sizes and values.

    The bounds are part of the instance (they appear in the statement), which gives every
    family enough distinct instances per level for all three splits to get some. Lower ends
    stay above what every family's edge cases need (sizes 8, values 20).
    """
    n_lo, v_lo = (
        (8, 20) if base.difficulty == min(LEVELS) else (max(9, base.n * 2 // 3), base.v // 2)
    )
    n_hi, v_hi = (12, 40) if base.difficulty == min(LEVELS) else (base.n, base.v)
    return replace(base, n=randint(rng, n_lo, n_hi), v=randint(rng, v_lo, v_hi))


def draw_task(rng: random.Random, family: Family, difficulty: int, split: str) -> Task | None:
    """An instance of ``family`` at ``difficulty`` in ``split``, or None if none was found."""
    base = LEVELS[difficulty]
    for _ in range(MAX_INSTANCE_TRIES):
        level = _instance_level(rng, base)
        params = family.draw_params(rng, level)
        multi = rng.random() < level.multi_probability
        task = Task(family, level, params, multi)
        if split_of(task.key) == split:
            return task
    return None


def draw_tests(
    task: Task, rng: random.Random
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """``(public, private, generated)`` tests; the generated ones hold every edge case."""
    fam, params, level, multi = task.family, task.params, task.level, task.multi

    def random_test() -> tuple[str, str]:
        n_cases = randint(rng, 2, level.t) if multi else 1
        cases = [fam.draw_case(rng, params, level) for _ in range(n_cases)]
        return render_test(fam, params, cases, multi)

    public = [random_test() for _ in range(randint(rng, 1, 2))]
    private = [random_test() for _ in range(randint(rng, 2, 3))]
    edges = fam.edge_cases(params, level)
    if multi:
        # Edge cases grouped t at a time; a group is never a single case, so that a program
        # printing all answers on one line is caught.
        groups = [edges[i : i + level.t] for i in range(0, len(edges), level.t)]
        for group in groups:
            if len(group) < 2:
                group.append(fam.draw_case(rng, params, level))
        generated = [render_test(fam, params, g, True) for g in groups]
    else:
        generated = [render_test(fam, params, [case], False) for case in edges]
    generated += [random_test() for _ in range(2)]
    return public, private, generated


# Programs are pure functions of (instance, core, style choices): streams of millions of rows
# revisit the same ones often, so they are memoised (bounded; cleared when full).
_PROGRAM_CACHE: dict[tuple, str] = {}
_PROGRAM_CACHE_SIZE = 200_000


def _program(task: Task, core: str, rng: random.Random, bug: str | None = None) -> str:
    styles = READ_STYLES[:3] if task.family.line_based else READ_STYLES
    style = pick(rng, styles)
    layout = pick(rng, MULTI_LAYOUTS if task.multi else SINGLE_LAYOUTS)
    print_style = pick(rng, PRINT_STYLES)
    key = (task.key, core, style, layout, print_style, bug)
    program = _PROGRAM_CACHE.get(key)
    if program is None:
        if len(_PROGRAM_CACHE) >= _PROGRAM_CACHE_SIZE:
            _PROGRAM_CACHE.clear()
        program = build_program(
            task.family,
            task.params,
            core,
            multi=task.multi,
            style=style,
            layout=layout,
            print_style=print_style,
            bug=bug,
        )
        _PROGRAM_CACHE[key] = program
    return program


def draw_programs(
    task: Task, rng: random.Random
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """``(solutions, incorrect_solutions)`` as ``(language, source)`` pairs."""
    fam = task.family
    # Brute-force cores only meet the constraints of the easiest level.
    easiest = task.level.difficulty == min(LEVELS)
    cores = [c for i, c in enumerate(fam.cores) if easiest or i not in fam.slow_cores]
    start = int(rng.random() * len(cores))
    n_correct = randint(rng, 3, 4)
    correct: list[str] = []
    for j in range(n_correct * 2):  # a few extra draws: identical programs are dropped
        program = _program(task, cores[(start + j) % len(cores)], rng)
        if program not in correct:
            correct.append(program)
        if len(correct) == n_correct:
            break
    incorrect = [_program(task, bug, rng) for bug in fam.bugs]
    format_bugs = FORMAT_BUGS.get(fam.output, ())
    if task.multi:
        format_bugs = format_bugs + MULTI_FORMAT_BUGS.get(fam.output, ())
    if format_bugs and rng.random() < 0.6:
        incorrect.append(_program(task, pick(rng, cores), rng, bug=pick(rng, format_bugs)))
    solutions: list[tuple[int, Any]] = [(LANGUAGE_PYTHON3, p) for p in correct]
    wrong: list[tuple[int, Any]] = [(LANGUAGE_PYTHON3, p) for p in incorrect]
    # Some rows carry Python 2 programs, as the real dataset does, so that converters must
    # filter on the language.
    if rng.random() < 0.15:
        py2 = build_python2_program(fam, task.params, pick(rng, cores), multi=task.multi)
        solutions.insert(randint(rng, 0, len(solutions)), (LANGUAGE_PYTHON2, py2))
    if rng.random() < 0.05:
        py2 = build_python2_program(fam, task.params, pick(rng, fam.bugs), multi=task.multi)
        wrong.insert(randint(rng, 0, len(wrong)), (LANGUAGE_PYTHON2, py2))
    return solutions, wrong
