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


Choice = tuple[str, str, str]  # (read style, layout, print style)


def _choices(task: Task, rng: random.Random) -> Choice:
    styles = READ_STYLES[:3] if task.family.line_based else READ_STYLES
    style = pick(rng, styles)
    layout = pick(rng, MULTI_LAYOUTS if task.multi else SINGLE_LAYOUTS)
    return style, layout, pick(rng, PRINT_STYLES)


def _built(task: Task, core: str, choice: Choice, bug: str | None = None) -> str:
    style, layout, print_style = choice
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


def _program(task: Task, core: str, rng: random.Random, bug: str | None = None) -> str:
    return _built(task, core, _choices(task, rng), bug)


def _common_prefix(a: str, b: str) -> int:
    # Binary search on slice equality: C-speed comparisons, log(n) of them.
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def departure_span(incorrect: str, correct: str) -> tuple[int, int] | None:
    """``[start, end)``: the characters of ``incorrect`` where it departs from ``correct``.

    ``start`` is the first character that differs (the common prefix ends there) and ``end``
    where the common suffix begins, so ``incorrect[:start] == correct[:start]`` and the texts
    after the span are equal. A pure deletion leaves nothing of ``incorrect`` between prefix
    and suffix; the span is then the one character where it goes on differently. None when
    ``incorrect`` is a prefix of ``correct`` (it departs only at its end)."""
    start = _common_prefix(incorrect, correct)
    if start == len(incorrect):
        return None
    room = min(len(incorrect), len(correct)) - start
    suffix = _common_prefix(incorrect[::-1], correct[::-1])
    end = len(incorrect) - min(suffix, room)
    return start, max(end, start + 1)


def twin_and_span(
    task: Task, incorrect: str, choice: Choice, cores: list[str]
) -> tuple[str, tuple[int, int]] | None:
    """The incorrect program's correct twin and its :func:`departure_span`.

    The twin is the correct program of the same task, read the same way (``choice``'s read
    style), built from a correct core in any layout and print style, that differs from
    ``incorrect`` on the shortest span: for a core bug the same program with the correct core
    (``x >= K`` for ``x > K``), for an output-format bug the same core printed correctly."""
    layouts = MULTI_LAYOUTS if task.multi else SINGLE_LAYOUTS
    best: tuple[str, tuple[int, int]] | None = None
    for core in cores:
        for layout in layouts:
            for print_style in PRINT_STYLES:
                twin = _built(task, core, (choice[0], layout, print_style))
                span = departure_span(incorrect, twin)
                if span is not None and (
                    best is None or span[1] - span[0] < best[1][1] - best[1][0]
                ):
                    best = (twin, span)
    return best


def draw_programs(
    task: Task, rng: random.Random
) -> tuple[list[tuple[int, str]], list[tuple[int, str]], list[list[int] | None]]:
    """``(solutions, incorrect_solutions, bug_spans)``: programs as ``(language, source)``
    pairs, and for each incorrect one its :func:`departure_span` from its correct twin
    (:func:`twin_and_span`) as ``[start, end]``, None for the Python 2 ones."""
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
    built: list[tuple[str, Choice]] = []
    for bug in fam.bugs:
        choice = _choices(task, rng)
        built.append((_built(task, bug, choice), choice))
    format_bugs = FORMAT_BUGS.get(fam.output, ())
    if task.multi:
        format_bugs = format_bugs + MULTI_FORMAT_BUGS.get(fam.output, ())
    if format_bugs and rng.random() < 0.6:
        # Drawn in the order the generator always drew them: core, bug, then the styles.
        core, format_bug = pick(rng, cores), pick(rng, format_bugs)
        choice = _choices(task, rng)
        built.append((_built(task, core, choice, format_bug), choice))
    incorrect = [program for program, _ in built]
    spans: list[list[int] | None] = []
    for program, choice in built:
        found = twin_and_span(task, program, choice, cores)
        spans.append(None if found is None else list(found[1]))
    solutions: list[tuple[int, Any]] = [(LANGUAGE_PYTHON3, p) for p in correct]
    wrong: list[tuple[int, Any]] = [(LANGUAGE_PYTHON3, p) for p in incorrect]
    # Some rows carry Python 2 programs, as the real dataset does, so that converters must
    # filter on the language.
    if rng.random() < 0.15:
        py2 = build_python2_program(fam, task.params, pick(rng, cores), multi=task.multi)
        solutions.insert(randint(rng, 0, len(solutions)), (LANGUAGE_PYTHON2, py2))
    if rng.random() < 0.05:
        py2 = build_python2_program(fam, task.params, pick(rng, fam.bugs), multi=task.multi)
        at = randint(rng, 0, len(wrong))
        wrong.insert(at, (LANGUAGE_PYTHON2, py2))
        spans.insert(at, None)
    return solutions, wrong, spans
