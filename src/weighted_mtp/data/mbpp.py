"""MBPP ``mbpp.jsonl`` rows -> training records and evaluation problems.

Rows: ``{"text", "code", "task_id", "test_setup_code", "test_list", "challenge_test_list"}``.
The standard split is by ``task_id`` (Austin et al. 2021): 1-10 ``prompt`` (few-shot examples),
11-510 ``test``, 511-600 ``validation``, 601-974 ``train``. Every row gives both a training
record and an evaluation problem, each tagged with its split, so that every row lands in
exactly one output whichever the pipeline writes.

The published file uses Windows line endings in ``code`` and ``test_setup_code``; they are
normalised to ``\\n`` (the model should not learn ``\\r``, and Python runs either).
"""

from __future__ import annotations

import ast
import builtins
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from weighted_mtp.data.errors import RecordError
from weighted_mtp.data.records import BadRecordSink, row_locations

logger = logging.getLogger(__name__)

DATASET = "mbpp"
SPLITS = ("prompt", "test", "validation", "train")
#: Inclusive task_id ranges of the standard split.
STANDARD_SPLITS: dict[str, tuple[int, int]] = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}
TESTS_HEADER = "Your code should pass these tests:"


@dataclass
class MbppConversion:
    """What :func:`convert_mbpp` produces.

    Attributes:
        records: split -> training records (``instruction`` = the prompt below, ``output`` =
            the reference code).
        problems: split -> ``function`` evaluation problems.
        quarantined: bad rows kept aside (``on_bad_record="quarantine"``).
    """

    records: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {s: [] for s in SPLITS}
    )
    problems: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {s: [] for s in SPLITS}
    )
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Rows per split (each row is one record and one problem of its split)."""
        return {split: len(self.problems[split]) for split in SPLITS}


def mbpp_prompt(text: str, tests: Sequence[str]) -> str:
    """The customary MBPP prompt: the description, then the asserts the code must pass."""
    return f"{text}\n{TESTS_HEADER}\n" + "\n".join(tests)


def split_of(task_id: int, splits: dict[str, tuple[int, int]] = STANDARD_SPLITS) -> str | None:
    """The split holding ``task_id``, or None when no range contains it."""
    for name, (low, high) in splits.items():
        if low <= task_id <= high:
            return name
    return None


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n")


def parse_quietly(source: str) -> ast.Module:
    """``ast.parse`` without the warnings about invalid escape sequences."""
    # Published MBPP code has invalid escape sequences ("\\w" in plain strings): valid Python
    # today, but every parse would warn about them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        return ast.parse(source)


def _called_names(source: str) -> list[str]:
    """Names of plain function calls in ``source``, in source order."""
    calls = [
        node
        for node in ast.walk(parse_quietly(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    calls.sort(key=lambda c: (c.lineno, c.col_offset))
    return [c.func.id for c in calls]


def entry_point_of(code: str, first_test: str) -> str:
    """The function under test: the first function called in the first assert that the code
    defines; else the first non-builtin called there; else the code's last top-level function.

    Raises:
        ValueError: neither the test nor the code names a function.
    """
    tree = parse_quietly(code)
    defined = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }
    called = _called_names(first_test)
    for name in called:
        if name in defined:
            return name
    for name in called:
        if not hasattr(builtins, name):
            return name
    top_level = [
        n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    if top_level:
        return top_level[-1]
    raise ValueError("no function called in the first test nor defined in the code")


def _str_list(row: dict[str, Any], key: str, path: str, line: int) -> list[str]:
    value = row.get(key)
    if value is None and key == "challenge_test_list":
        return []
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecordError(path, line, f"field {key!r} must be a list of strings, got {value!r:.60}")
    return value


def _convert_row(
    row: Any, path: str, line: int, splits: dict[str, tuple[int, int]]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    if not isinstance(row, dict):
        raise RecordError(path, line, f"expected an object (an MBPP row), got {row!r:.40}")
    for key in ("text", "code", "task_id", "test_list"):
        if key not in row:
            raise RecordError(path, line, f"missing field {key!r}")
    for key in ("text", "code"):
        if not isinstance(row[key], str):
            raise RecordError(path, line, f"field {key!r} must be a string, got {row[key]!r:.40}")
    task_number = row["task_id"]
    if hasattr(task_number, "item"):
        task_number = task_number.item()
    if isinstance(task_number, bool) or not isinstance(task_number, int):
        raise RecordError(path, line, f"field 'task_id' must be an int, got {task_number!r:.40}")
    split = split_of(task_number, splits)
    if split is None:
        raise RecordError(
            path, line, f"task_id {task_number} is in none of the splits {dict(splits)}"
        )
    setup = row.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise RecordError(path, line, "field 'test_setup_code' must be a string")
    tests = _str_list(row, "test_list", path, line)
    if not tests:
        raise RecordError(path, line, "field 'test_list' is empty (expected at least one assert)")
    code = _normalise_newlines(row["code"])
    setup = _normalise_newlines(setup)
    try:
        entry_point = entry_point_of(code, tests[0])
    except (SyntaxError, ValueError) as exc:
        raise RecordError(path, line, f"cannot find the function under test: {exc}") from exc

    task_id = f"{DATASET}/{task_number}"
    prompt = mbpp_prompt(row["text"], tests)
    record = {
        "instruction": prompt,
        "input": "",
        "output": code,
        "task_id": task_id,
        "is_correct": True,
        "metadata": {"source": DATASET, "difficulty": 0, "has_tests": True},
    }
    test_source = "\n".join([setup, *tests]) if setup.strip() else "\n".join(tests)
    problem = {
        "task_id": task_id,
        "dataset": DATASET,
        "prompt": prompt,
        "entry_point": entry_point,
        "kind": "function",
        "tests": test_source + "\n",
        "execution_prefix": "",
        "canonical_solution": code,
        "difficulty": None,
        "split": split,
        "time_limit": None,
    }
    return split, record, problem


def convert_mbpp(
    rows: Sequence[dict[str, Any]],
    *,
    source_file: str | None = None,
    on_bad_record: str = "raise",
    splits: dict[str, tuple[int, int]] | None = None,
) -> MbppConversion:
    """Convert MBPP rows, each to the split of its ``task_id``.

    Args:
        rows: ``mbpp.jsonl`` rows (a ``SourcedRows`` carries file and lines into messages).
        source_file: the file to name in messages (default: ``rows.source``).
        on_bad_record: ``raise`` or ``quarantine``.
        splits: split name -> inclusive ``(first, last)`` task_id (default: the standard split).

    Returns:
        An :class:`MbppConversion`; ``sum(counts.values()) + len(quarantined) == len(rows)``.

    Raises:
        RecordError: a missing or mistyped field, a task_id outside every split, a duplicate
            task_id, or code/tests where no function under test can be found (policy ``raise``).
    """
    path, lines = row_locations(rows, source_file)
    splits = {k: tuple(v) for k, v in (splits or STANDARD_SPLITS).items()}
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown MBPP split names {sorted(unknown)}, expected {SPLITS}")
    sink = BadRecordSink(on_bad_record)
    out = MbppConversion()
    seen: dict[str, int] = {}
    for row, line in zip(rows, lines, strict=True):
        try:
            split, record, problem = _convert_row(row, path, line, splits)
            first = seen.setdefault(problem["task_id"], line)
            if first != line:
                raise RecordError(
                    path, line, f"duplicate task_id {row['task_id']} (first at line {first})"
                )
        except RecordError as error:
            sink.reject(error, row)
            continue
        out.records[split].append(record)
        out.problems[split].append(problem)
    out.quarantined = sink.quarantined
    logger.info(
        "%s: %d rows -> %s, quarantined=%d",
        path,
        len(rows),
        ", ".join(f"{k}={v}" for k, v in out.counts.items()),
        len(out.quarantined),
    )
    return out
