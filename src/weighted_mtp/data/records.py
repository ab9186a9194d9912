"""The two record schemas of ``docs/contracts.md`` and their validation.

* training records: ``{"instruction", "input", "output", "task_id", "is_correct",
  "metadata": {"source", "difficulty", "has_tests"}}``;
* evaluation problems: ``{"task_id", "dataset", "prompt", "entry_point", "kind", "tests",
  "execution_prefix", "canonical_solution", "difficulty", "split", "time_limit"}``.

Also here: the one JSON serialisation of a line that every writer and the metadata table use
(so byte offsets computed from it are the file's), :class:`SourcedRows` (rows that remember the
file and line they came from) and :class:`BadRecordSink` (the ``on_bad_record`` policy).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from weighted_mtp.data.errors import RecordError

logger = logging.getLogger(__name__)

BAD_RECORD_POLICIES = ("raise", "quarantine")
PROBLEM_KINDS = ("function", "stdio")


def dumps_line(record: dict[str, Any]) -> bytes:
    """One JSONL line (UTF-8, without its newline) for ``record``.

    ``ensure_ascii=False`` keeps non-ASCII text readable and compact; JSON escapes every control
    character, so the line never contains a raw ``\\n`` and newline bytes delimit records.
    """
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


class SourcedRows(list):
    """A list of raw rows that remembers where they were read from.

    Attributes:
        source: the file (path or URL) the rows were read from.
        lines: the 1-based line (JSONL) or row (Parquet) number of each row.
    """

    def __init__(
        self, rows: Iterable[dict[str, Any]], source: str, lines: Sequence[int] | None = None
    ) -> None:
        super().__init__(rows)
        self.source = str(source)
        self.lines = list(lines) if lines is not None else list(range(1, len(self) + 1))
        if len(self.lines) != len(self):
            raise ValueError(f"{source}: {len(self)} rows but {len(self.lines)} line numbers")


def row_locations(rows: Sequence[Any], source_file: str | None) -> tuple[str, list[int]]:
    """The file name and 1-based line numbers to cite for ``rows`` in error messages."""
    source = source_file or getattr(rows, "source", None) or "<rows>"
    lines = getattr(rows, "lines", None)
    if lines is None or len(lines) != len(rows):
        lines = list(range(1, len(rows) + 1))
    return str(source), list(lines)


@dataclass
class BadRecordSink:
    """What to do with a record that fails validation: raise, or keep it aside.

    With ``policy="quarantine"`` each bad record becomes one entry of :attr:`quarantined`
    (``{"file", "line", "error", "record"}``, JSON-serialisable) that the pipeline writes to the
    quarantine JSONL; nothing is dropped without a trace.
    """

    policy: str = "raise"
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy not in BAD_RECORD_POLICIES:
            raise ValueError(
                f"on_bad_record must be one of {BAD_RECORD_POLICIES}, got {self.policy!r}"
            )

    def reject(self, error: RecordError, raw: Any) -> None:
        """Raise ``error`` (policy ``raise``) or record it with the offending raw value."""
        if self.policy == "raise":
            raise error
        # A round trip through JSON with repr() as the fallback keeps numpy scalars or bytes of
        # a broken row printable in the quarantine file instead of failing to save it.
        safe = json.loads(json.dumps(raw, ensure_ascii=False, default=repr))
        self.quarantined.append(
            {"file": error.path, "line": error.line, "error": error.message, "record": safe}
        )


def _check_type(
    value: Any, expected: type | tuple[type, ...], what: str, path: str, line: int | None
) -> None:
    # bool is an int subclass in Python, but a bool where an int is expected is a schema error.
    if isinstance(value, bool) and expected in (int, (int, float)):
        raise RecordError(path, line, f"{what} must be {_type_name(expected)}, got a bool")
    if not isinstance(value, expected):
        raise RecordError(
            path,
            line,
            f"{what} must be {_type_name(expected)}, got {type(value).__name__} {value!r:.60}",
        )


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__


def validate_training_record(record: Any, path: str, line: int | None) -> None:
    """Raise :class:`RecordError` unless ``record`` is a training record of the contract.

    Args:
        record: the parsed JSON value.
        path, line: where it came from, for the message.
    """
    _check_type(record, dict, "a training record", path, line)
    for key in ("instruction", "input", "output", "task_id"):
        if key not in record:
            raise RecordError(path, line, f"missing field {key!r} (expected a string)")
        _check_type(record[key], str, f"field {key!r}", path, line)
    if not record["task_id"]:
        raise RecordError(path, line, "field 'task_id' must be a non-empty string")
    if "is_correct" not in record:
        raise RecordError(path, line, "missing field 'is_correct' (expected a bool)")
    _check_type(record["is_correct"], bool, "field 'is_correct'", path, line)
    meta = record.get("metadata")
    if meta is None:
        raise RecordError(path, line, "missing field 'metadata' (expected an object)")
    _check_type(meta, dict, "field 'metadata'", path, line)
    for key, expected in (("source", str), ("difficulty", int), ("has_tests", bool)):
        if key not in meta:
            raise RecordError(
                path, line, f"missing field 'metadata.{key}' (expected {expected.__name__})"
            )
        _check_type(meta[key], expected, f"field 'metadata.{key}'", path, line)


def validate_problem(problem: Any, path: str, line: int | None) -> None:
    """Raise :class:`RecordError` unless ``problem`` is an evaluation problem of the contract."""
    _check_type(problem, dict, "an evaluation problem", path, line)
    for key in ("task_id", "dataset", "prompt", "kind", "split"):
        if key not in problem:
            raise RecordError(path, line, f"missing field {key!r} (expected a string)")
        _check_type(problem[key], str, f"field {key!r}", path, line)
    kind = problem["kind"]
    if kind not in PROBLEM_KINDS:
        raise RecordError(path, line, f"field 'kind' must be one of {PROBLEM_KINDS}, got {kind!r}")
    _check_type(problem.get("execution_prefix"), str, "field 'execution_prefix'", path, line)
    tests = problem.get("tests")
    if kind == "function":
        _check_type(problem.get("entry_point"), str, "field 'entry_point'", path, line)
        _check_type(tests, str, "field 'tests' of a function task", path, line)
        if not tests.strip():
            raise RecordError(path, line, "field 'tests' of a function task is empty")
    else:
        if problem.get("entry_point") is not None:
            raise RecordError(path, line, "field 'entry_point' must be null for a stdio task")
        _check_type(tests, list, "field 'tests' of a stdio task", path, line)
        if not tests:
            raise RecordError(path, line, "field 'tests' of a stdio task is an empty list")
        for index, test in enumerate(tests):
            if not (
                isinstance(test, dict)
                and isinstance(test.get("input"), str)
                and isinstance(test.get("output"), str)
            ):
                raise RecordError(
                    path, line, f"tests[{index}] must be {{'input': str, 'output': str}}"
                )
    solution = problem.get("canonical_solution")
    if solution is not None:
        _check_type(solution, str, "field 'canonical_solution'", path, line)
    difficulty = problem.get("difficulty")
    if difficulty is not None:
        _check_type(difficulty, int, "field 'difficulty'", path, line)
    time_limit = problem.get("time_limit")
    if time_limit is not None:
        _check_type(time_limit, (int, float), "field 'time_limit'", path, line)
        if time_limit <= 0:
            raise RecordError(path, line, f"field 'time_limit' must be positive, got {time_limit}")


SCHEMAS = {"training": validate_training_record, "problem": validate_problem}


def validate_records(records: Sequence[Any], schema: str, path: str) -> None:
    """Validate every record against ``schema`` (``"training"`` or ``"problem"``).

    Also rejects a duplicate ``task_id`` among evaluation problems (the executor keys them by
    id). Line numbers in messages are 1-based positions in ``records``.
    """
    if schema not in SCHEMAS:
        raise ValueError(f"unknown record schema {schema!r}, expected one of {sorted(SCHEMAS)}")
    check = SCHEMAS[schema]
    seen: dict[str, int] = {}
    for line, record in enumerate(records, start=1):
        check(record, path, line)
        if schema == "problem":
            first = seen.setdefault(record["task_id"], line)
            if first != line:
                raise RecordError(
                    path, line, f"duplicate task_id {record['task_id']!r} (first at line {first})"
                )
