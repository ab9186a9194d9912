"""The synthetic CodeContests generator: schema, labels proven by execution, determinism, splits."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import pytest

from weighted_mtp.data.synthetic import (
    DIFFICULTIES,
    FAMILIES,
    LANGUAGE_PYTHON3,
    SPLITS,
    generate_codecontests_rows,
    iter_codecontests_rows,
)
from weighted_mtp.data.synthetic.family import Family
from weighted_mtp.data.synthetic.generator import build_row, iter_tasks
from weighted_mtp.data.synthetic.programs import (
    MULTI_LAYOUTS,
    PRINT_STYLES,
    READ_STYLES,
    SINGLE_LAYOUTS,
    build_program,
)
from weighted_mtp.data.synthetic.tasks import Task, departure_span, draw_task

# Runs one program over many inputs in one interpreter: stdin/stdout are swapped per input,
# so the whole label check costs one process start per program, not per test.
RUNNER = r"""
import io, json, sys
job = json.loads(sys.stdin.read())
code = compile(job["code"], "<solution>", "exec")
real_stdin, real_stdout = sys.stdin, sys.stdout
results = []
for data in job["inputs"]:
    sys.stdin, sys.stdout = io.StringIO(data), io.StringIO()
    error = None
    try:
        exec(code, {"__name__": "__main__"})
    except SystemExit:
        pass
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
    out = sys.stdout.getvalue()
    sys.stdin, sys.stdout = real_stdin, real_stdout
    results.append({"out": out, "error": error})
print(json.dumps(results))
"""

FIELD_TYPES = {
    "name": str,
    "description": str,
    "source": int,
    "difficulty": int,
    "cf_contest_id": int,
    "cf_index": str,
    "cf_points": float,
    "cf_rating": int,
    "cf_tags": list,
    "is_description_translated": bool,
    "untranslated_description": str,
    "memory_limit_bytes": int,
    "input_file": str,
    "output_file": str,
}
TEST_FIELDS = ("public_tests", "private_tests", "generated_tests")
SOLUTION_FIELDS = ("solutions", "incorrect_solutions")


def normalise(text: str) -> str:
    """Output up to trailing whitespace on each line and at the end (the executor's rule)."""
    return "\n".join(line.rstrip() for line in text.rstrip().split("\n"))


def run_program(code: str, inputs: list[str], timeout: float = 30.0) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps({"code": code, "inputs": inputs}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def all_tests(row: dict) -> list[tuple[str, str]]:
    return [
        (i, o)
        for field in TEST_FIELDS
        for i, o in zip(row[field]["input"], row[field]["output"], strict=True)
    ]


def failures(code: str, tests: list[tuple[str, str]]) -> list[int]:
    """Indices of the tests that ``code`` fails (wrong output or an exception)."""
    results = run_program(code, [i for i, _ in tests])
    return [
        k
        for k, (res, (_, expected)) in enumerate(zip(results, tests, strict=True))
        if res["error"] is not None or normalise(res["out"]) != normalise(expected)
    ]


def task_row(family: Family, difficulty: int, seed: int, split: str = "train") -> dict:
    """A row of ``family`` at ``difficulty`` (drawn directly, not from a stream)."""
    import random

    rng = random.Random(f"{family.name}/{difficulty}/{seed}")
    task = None
    for _ in range(20):
        task = draw_task(rng, family, difficulty, split)
        if task is not None:
            break
    assert isinstance(task, Task), f"{family.name} has no instance at {difficulty} in {split}"
    return build_row(task, rng, seed, split)


def check_schema(row: dict) -> None:
    for key, typ in FIELD_TYPES.items():
        assert type(row[key]) is typ, (key, row[key])
    assert row["name"].strip() and "Input" in row["description"]
    assert "Output" in row["description"] and "Example" in row["description"]
    assert 0 <= row["source"] <= 6 and row["difficulty"] in DIFFICULTIES
    for field in TEST_FIELDS:
        tests = row[field]
        assert set(tests) == {"input", "output"}
        assert len(tests["input"]) == len(tests["output"]) >= 1
        assert all(isinstance(x, str) for x in tests["input"] + tests["output"])
    assert len(row["public_tests"]["input"]) <= 2
    for field in SOLUTION_FIELDS:
        sols = row[field]
        extra = {"bug_span"} if field == "incorrect_solutions" else set()
        assert set(sols) == {"language", "solution"} | extra
        assert len(sols["language"]) == len(sols["solution"]) >= 1
        assert all(type(x) is int and 0 <= x <= 4 for x in sols["language"])
        assert all(isinstance(x, str) for x in sols["solution"])
    assert sum(x == LANGUAGE_PYTHON3 for x in row["solutions"]["language"]) >= 3
    limit = row["time_limit"]
    assert limit is None or (set(limit) == {"seconds", "nanos"} and limit["seconds"] >= 1)
    assert all(isinstance(t, str) for t in row["cf_tags"])
    # The rows must survive JSON (the raw JSONL files are written that way).
    assert json.loads(json.dumps(row)) == row


# ---------------------------------------------------------------- registry and schema


def test_registry_has_at_least_30_families_over_several_topics():
    assert len(FAMILIES) >= 30
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)
    assert len({f.topic for f in FAMILIES}) >= 5
    for family in FAMILIES:
        assert len(family.cores) >= 2 and len(family.bugs) >= 1, family.name


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_schema_for_every_family_and_level(family):
    for difficulty in DIFFICULTIES:
        row = task_row(family, difficulty, seed=1)
        check_schema(row)
        assert row["difficulty"] == difficulty


def test_stream_rows_match_schema_and_count():
    rows = generate_codecontests_rows(100, seed=3)
    assert len(rows) == 100
    for row in rows:
        check_schema(row)
    assert {r["difficulty"] for r in rows} == set(DIFFICULTIES)
    assert len({r["name"] for r in rows}) == 100
    # Some rows carry non-Python-3 programs, so that converters must filter on the language.
    languages = {x for r in rows for x in r["solutions"]["language"]}
    assert languages - {LANGUAGE_PYTHON3}
    assert len(generate_codecontests_rows(0, seed=3)) == 0


# ---------------------------------------------------------------- labels by execution


def _label_problems(row: dict) -> list[str]:
    tests = all_tests(row)
    problems = []
    for lang, code in zip(row["solutions"]["language"], row["solutions"]["solution"], strict=True):
        if lang == LANGUAGE_PYTHON3 and (failed := failures(code, tests)):
            problems.append(f"correct solution fails tests {failed}:\n{code}")
    bad = row["incorrect_solutions"]
    for lang, code in zip(bad["language"], bad["solution"], strict=True):
        if lang == LANGUAGE_PYTHON3 and not failures(code, tests):
            problems.append(f"incorrect solution passes every test:\n{code}")
    return problems


def test_labels_hold_by_execution_for_every_family_and_level():
    """Every correct Python 3 program passes all tests; every incorrect one fails one."""
    rows = [task_row(f, d, seed=7) for f in FAMILIES for d in DIFFICULTIES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(_label_problems, rows))
    problems = [f"{row['name']}: {p}" for row, ps in zip(rows, reports, strict=True) for p in ps]
    assert not problems, "\n\n".join(problems[:5])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
def test_labels_hold_by_execution_on_more_seeds(seed):
    rows = [task_row(f, d, seed=seed) for f in FAMILIES for d in DIFFICULTIES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(_label_problems, rows))
    problems = [f"{row['name']}: {p}" for row, ps in zip(rows, reports, strict=True) for p in ps]
    assert not problems, "\n\n".join(problems[:5])


def test_label_check_can_fail():
    """The check catches a program that breaks a correct one (the proof is not vacuous)."""
    row = task_row(FAMILIES[0], DIFFICULTIES[0], seed=7)
    tests = all_tests(row)
    good = row["solutions"]["solution"][0]
    assert failures(good, tests) == []
    assert failures(good + "\nprint(0)\n", tests)
    assert failures("raise ValueError\n", tests)


# ---------------------------------------------------------------- determinism and splits


def test_same_seed_gives_identical_rows_and_other_seed_differs():
    a = json.dumps(generate_codecontests_rows(40, seed=5))
    b = json.dumps(generate_codecontests_rows(40, seed=5))
    c = json.dumps(generate_codecontests_rows(40, seed=6))
    assert a == b
    assert a != c


def test_prefix_of_a_longer_stream_is_the_shorter_stream():
    assert list(islice(iter_codecontests_rows(50, seed=2), 10)) == generate_codecontests_rows(
        10, seed=2
    )


def test_splits_share_no_names_and_no_instances():
    from weighted_mtp.data.synthetic.generator import iter_tasks

    keys, names = {}, {}
    for split in SPLITS:
        n = 300 if split == "train" else 100
        keys[split] = {task.key for task, _ in iter_tasks(n, seed=9, split=split)}
        names[split] = {r["name"] for r in generate_codecontests_rows(n, seed=9, split=split)}
        assert len(names[split]) == n
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not keys[a] & keys[b], (a, b)
        assert not names[a] & names[b], (a, b)


def test_difficulties_filter():
    rows = generate_codecontests_rows(30, seed=1, difficulties=[DIFFICULTIES[0]])
    assert {r["difficulty"] for r in rows} == {DIFFICULTIES[0]}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_tasks": -1}, "n_tasks"),
        ({"n_tasks": 1.5}, "n_tasks"),
        ({"n_tasks": 3, "split": "validation"}, "split"),
        ({"n_tasks": 3, "difficulties": [4]}, "difficulties"),
        ({"n_tasks": 3, "difficulties": []}, "difficulties"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        iter_codecontests_rows(seed=0, **kwargs)
    with pytest.raises(ValueError, match=match):
        generate_codecontests_rows(seed=0, **kwargs)


# ---------------------------------------------------------------- bug spans


def test_departure_span_on_textbook_edits() -> None:
    assert departure_span("if x >= K:\n", "if x > K:\n") == (6, 7)  # insertion: "="
    assert departure_span("if x > K:\n", "if x >= K:\n") == (6, 7)  # deletion: where it goes on
    assert departure_span("ans = best\n", "ans = best + 1\n") == (10, 11)
    assert departure_span("abs(x) > K", "x > K") == (0, 6)  # "abs(x)" for "x"
    assert departure_span("ab\n", "ab\nprint()\n") is None  # a prefix departs only at its end


def _correct_programs(task: Task) -> list[str]:
    """Every correct program of ``task``: each correct core, read style, layout, print style."""
    layouts = MULTI_LAYOUTS if task.multi else SINGLE_LAYOUTS
    styles = READ_STYLES[:3] if task.family.line_based else READ_STYLES
    return [
        build_program(
            task.family,
            task.params,
            core,
            multi=task.multi,
            style=style,
            layout=layout,
            print_style=print_style,
        )
        for core in task.family.cores
        for style in styles
        for layout in layouts
        for print_style in PRINT_STYLES
    ]


def _is_twin(twin: str, program: str, start: int, end: int) -> bool:
    """``program`` departs from ``twin`` exactly on ``[start, end)``: identical outside it,
    different inside it, and different at its first character (where it goes wrong)."""
    tail = len(program) - end
    return (
        twin[:start] == program[:start]
        and len(twin) - tail >= start
        and twin[len(twin) - tail :] == program[end:]
        and twin[start : len(twin) - tail] != program[start:end]
        and (start == len(twin) or twin[start] != program[start])
    )


def _tasks_with_rows(n: int, seed: int) -> list[tuple[Task, dict]]:
    return [
        (task, build_row(task, rng, index, "train"))
        for index, (task, rng) in enumerate(iter_tasks(n, seed, "train"))
    ]


def test_bug_span_is_where_each_incorrect_program_departs_from_a_correct_twin() -> None:
    checked = 0
    for task, row in _tasks_with_rows(len(FAMILIES) + 10, seed=5):
        sols = row["incorrect_solutions"]
        correct = _correct_programs(task)
        for language, program, span in zip(
            sols["language"], sols["solution"], sols["bug_span"], strict=True
        ):
            if language != LANGUAGE_PYTHON3:
                assert span is None
                continue
            start, end = span
            assert 0 <= start < end <= len(program)
            assert program not in correct
            assert any(_is_twin(t, program, start, end) for t in correct), task.family.name
            checked += 1
    assert checked > 2 * len(FAMILIES)


def test_bug_span_can_fail() -> None:
    # The check above is not vacuous: a span shifted by one character has no twin.
    task, row = _tasks_with_rows(1, seed=5)[0]
    program = row["incorrect_solutions"]["solution"][0]
    start, end = row["incorrect_solutions"]["bug_span"][0]
    correct = _correct_programs(task)
    assert not any(
        twin[: start + 1] == program[: start + 1] and twin[start + 1] != program[start + 1]
        for twin in correct
        if len(twin) > start + 1
    )


def test_stream_rows_give_every_python3_incorrect_solution_a_span() -> None:
    rows = generate_codecontests_rows(60, seed=3, split="valid")
    spans = [
        span
        for row in rows
        for language, span in zip(
            row["incorrect_solutions"]["language"],
            row["incorrect_solutions"]["bug_span"],
            strict=True,
        )
        if language == LANGUAGE_PYTHON3
    ]
    assert len(spans) > 60 and all(span is not None for span in spans)
