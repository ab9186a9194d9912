"""Hugging Face ``deepmind/code_contests`` rows -> training records and evaluation problems.

Rows arrive as read from parquet or JSONL: nested fields are dicts of lists
(``{"input": [...], "output": [...]}``), dicts of numpy arrays (pandas/pyarrow) or lists of
``{"input", "output"}`` objects (protobuf JSON); all three are accepted.

The ``source`` and ``difficulty`` ints are read with one of two enum numberings (the proto's or
the Hugging Face card's), resolved for the whole file by
:func:`weighted_mtp.data.codecontests_numbering.detect_numbering` (``numbering="auto"``, the
default, tells them apart by values only one of them has). Training metadata and evaluation
problems carry the card numbering, the canonical one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from weighted_mtp.data.codecontests_numbering import (
    CANONICAL_DIFFICULTY,
    NUMBERING_TABLES,
    detect_numbering,
)
from weighted_mtp.data.errors import RecordError, UnknownEnumError
from weighted_mtp.data.records import BadRecordSink, row_locations

logger = logging.getLogger(__name__)

DATASET = "codecontests"

#: Solution.Language of the proto (the card agrees). Only PYTHON3 solutions are kept.
LANGUAGES = {0: "UNKNOWN_LANGUAGE", 1: "PYTHON", 2: "CPP", 3: "PYTHON3", 4: "JAVA"}
PYTHON3 = 3


@dataclass
class CodeContestsConversion:
    """What :func:`convert_codecontests` produces from one file of rows.

    Attributes:
        records: training records (Python 3 solutions; correct ones with ``is_correct=True``,
            incorrect ones with ``False``).
        problems: one stdio evaluation problem per task that has tests.
        quarantined: bad rows kept aside (``on_bad_record="quarantine"``).
        numbering: the enum numbering the file was read with (``"hf"`` or ``"proto"``).
        stats: counts for the log (rows, records, filtered solutions per language, ...).
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    numbering: str = "hf"
    stats: dict[str, int] = field(default_factory=dict)


def _as_list(value: Any) -> list:
    # pyarrow/pandas give numpy arrays for list columns; tolist() turns their scalars into
    # Python ints and strs too.
    if hasattr(value, "tolist"):
        value = value.tolist()
    return list(value)


def _pairs(
    value: Any, first: str, second: str, what: str, path: str, line: int
) -> list[tuple[Any, Any]]:
    """``{first: [...], second: [...]}`` or ``[{first, second}, ...]`` -> list of pairs."""
    if value is None:
        return []
    if isinstance(value, dict):
        if first not in value or second not in value:
            raise RecordError(path, line, f"field {what!r} must have keys {first!r} and {second!r}")
        a, b = value[first], value[second]
        a = [] if a is None else a
        b = [] if b is None else b
        try:
            a, b = _as_list(a), _as_list(b)
        except TypeError as exc:
            raise RecordError(
                path, line, f"field {what!r}: {first!r} and {second!r} must be lists"
            ) from exc
        if len(a) != len(b):
            raise RecordError(
                path,
                line,
                f"field {what!r}: {len(a)} {first!r} values but {len(b)} {second!r} values",
            )
        return list(zip(a, b, strict=True))
    try:
        items = _as_list(value)
    except TypeError as exc:
        raise RecordError(
            path, line, f"field {what!r} must be an object of lists or a list of objects"
        ) from exc
    pairs = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or first not in item or second not in item:
            raise RecordError(
                path, line, f"field {what!r}[{index}] must be an object with {first!r}, {second!r}"
            )
        pairs.append((item[first], item[second]))
    return pairs


def _int_field(row: dict[str, Any], key: str, path: str, line: int) -> int:
    value = row.get(key, 0)
    if value is None:
        return 0
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()  # numpy scalar
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(path, line, f"field {key!r} must be an int enum value, got {value!r:.40}")
    return value


def _time_limit_seconds(value: Any, path: str, line: int) -> float | None:
    if value is None:
        return None
    if isinstance(value, dict):
        seconds = value.get("seconds") or 0
        nanos = value.get("nanos") or 0
        if not isinstance(seconds, (int, float)) or not isinstance(nanos, (int, float)):
            raise RecordError(path, line, "field 'time_limit' must be {seconds: int, nanos: int}")
        total = float(seconds) + float(nanos) / 1e9
        return total if total > 0 else None
    raise RecordError(path, line, f"field 'time_limit' must be an object, got {value!r:.40}")


def _tests(row: dict[str, Any], path: str, line: int) -> list[dict[str, str]]:
    tests = []
    for key in ("public_tests", "private_tests", "generated_tests"):
        for index, (inp, out) in enumerate(
            _pairs(row.get(key), "input", "output", key, path, line)
        ):
            if not isinstance(inp, str) or not isinstance(out, str):
                raise RecordError(path, line, f"field {key!r}: test {index} must be two strings")
            tests.append({"input": inp, "output": out})
    return tests


def _bug_spans(value: Any, n: int, key: str, path: str, line: int) -> list[list[int] | None]:
    """The optional ``bug_span`` of each of the ``n`` solutions of ``value`` (the synthetic
    generator's; the real dataset has none): ``[start, end)`` characters or None."""
    if isinstance(value, dict):
        spans = value.get("bug_span")
        spans = [None] * n if spans is None else _as_list(spans)
    elif value is None:
        spans = []
    else:
        spans = [item.get("bug_span") if isinstance(item, dict) else None for item in value]
    if len(spans) != n:
        raise RecordError(path, line, f"field {key!r}: {len(spans)} bug spans for {n} solutions")
    out: list[list[int] | None] = []
    for index, span in enumerate(spans):
        if span is not None:
            span = _as_list(span)
            if len(span) != 2 or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in span
            ):
                raise RecordError(
                    path, line, f"field {key!r}: bug_span {index} must be [start, end] or null"
                )
        out.append(span)
    return out


def _solutions(
    row: dict[str, Any], key: str, path: str, line: int, filtered: Counter
) -> list[tuple[str, list[int] | None]]:
    """The Python 3 programs of ``row[key]`` with their bug spans (None where unknown); other
    languages counted in ``filtered``."""
    kept = []
    pairs = _pairs(row.get(key), "language", "solution", key, path, line)
    spans = _bug_spans(row.get(key), len(pairs), key, path, line)
    for index, ((language, program), span) in enumerate(zip(pairs, spans, strict=True)):
        if hasattr(language, "item"):
            language = language.item()
        if isinstance(language, bool) or not isinstance(language, int):
            raise RecordError(path, line, f"field {key!r}: language {index} must be an int")
        if language not in LANGUAGES:
            raise UnknownEnumError(
                path,
                line,
                f"field {key!r}: solution {index} has language {language}, expected one of "
                f"{sorted(LANGUAGES)} ({', '.join(LANGUAGES.values())})",
            )
        if not isinstance(program, str):
            raise RecordError(path, line, f"field {key!r}: solution {index} must be a string")
        if span is not None and not 0 <= span[0] < span[1] <= len(program):
            raise RecordError(
                path,
                line,
                f"field {key!r}: bug_span {index} = {span} is not a non-empty span of the "
                f"solution's {len(program)} characters",
            )
        if language == PYTHON3:
            kept.append((program, span))
        else:
            filtered[LANGUAGES[language]] += 1
    return kept


def _convert_row(
    row: Any,
    path: str,
    line: int,
    split: str,
    numbering: str,
    max_solutions_per_task: int | None,
    filtered: Counter,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    if not isinstance(row, dict):
        raise RecordError(path, line, f"expected an object (a CodeContests row), got {row!r:.40}")
    for key in ("name", "description"):
        if key not in row:
            raise RecordError(path, line, f"missing field {key!r} (expected a string)")
        if not isinstance(row[key], str):
            raise RecordError(path, line, f"field {key!r} must be a string, got {row[key]!r:.40}")
    if not row["name"].strip():
        raise RecordError(path, line, "field 'name' must be a non-empty string")
    sources, difficulties = NUMBERING_TABLES[numbering]
    source = _int_field(row, "source", path, line)
    difficulty = _int_field(row, "difficulty", path, line)
    if source not in sources:
        raise UnknownEnumError(
            path,
            line,
            f"source {source} is not in the {numbering} numbering (expected one of "
            f"{sorted(sources)})",
        )
    if difficulty not in difficulties:
        raise UnknownEnumError(
            path,
            line,
            f"difficulty {difficulty} is not in the {numbering} numbering (expected one of "
            f"{sorted(difficulties)})",
        )
    canonical = CANONICAL_DIFFICULTY[difficulties[difficulty]]
    tests = _tests(row, path, line)
    # Rows are validated whole before any record is emitted, so a bad row never leaves half of
    # its solutions behind (the caller counts ``filtered`` only for rows it keeps).
    correct = _solutions(row, "solutions", path, line, filtered)
    incorrect = _solutions(row, "incorrect_solutions", path, line, filtered)
    time_limit = _time_limit_seconds(row.get("time_limit"), path, line)

    task_id = f"{DATASET}/{split}/{row['name']}"
    meta = {
        "source": f"{DATASET}/{sources[source].lower()}",
        "difficulty": canonical,
        "has_tests": bool(tests),
    }
    if max_solutions_per_task is not None:
        correct = correct[:max_solutions_per_task]
        incorrect = incorrect[:max_solutions_per_task]
    records = [
        {
            "instruction": row["description"],
            "input": "",
            "output": program,
            "task_id": task_id,
            "is_correct": is_correct,
            # Where an incorrect program departs from its correct twin (validation
            # diagnostics of the critic); null for correct programs and where unknown.
            "metadata": {**meta, "bug_span": None if is_correct else span},
        }
        for programs, is_correct in ((correct, True), (incorrect, False))
        for program, span in programs
    ]
    problem = None
    if tests:
        problem = {
            "task_id": task_id,
            "dataset": DATASET,
            "prompt": row["description"],
            "entry_point": None,
            "kind": "stdio",
            "tests": tests,
            "execution_prefix": "",
            "canonical_solution": correct[0][0] if correct else None,
            "difficulty": canonical,
            "split": split,
            "time_limit": time_limit,
        }
    return records, problem


def convert_codecontests(
    rows: Sequence[dict[str, Any]],
    *,
    source_file: str | None = None,
    split: str = "train",
    numbering: str = "auto",
    on_bad_record: str = "raise",
    max_solutions_per_task: int | None = None,
) -> CodeContestsConversion:
    """Convert one split of CodeContests rows.

    Args:
        rows: rows of the Hugging Face schema (a :class:`~weighted_mtp.data.records.SourcedRows`
            carries its file and line numbers into error messages).
        source_file: the file to name in messages (default: ``rows.source``).
        split: ``train``/``valid``/``test``; part of every ``task_id``
            (``codecontests/<split>/<name>``).
        numbering: ``auto``, ``hf`` or ``proto``
            (:mod:`weighted_mtp.data.codecontests_numbering`).
        on_bad_record: ``raise`` or ``quarantine``.
        max_solutions_per_task: keep at most this many correct and this many incorrect Python 3
            solutions per task (the first ones); None keeps all.

    Returns:
        A :class:`CodeContestsConversion`.

    Raises:
        RecordError: a row misses a field or has a wrong type (policy ``raise``).
        UnknownEnumError: a language, source or difficulty value outside the known enums.
    """
    path, lines = row_locations(rows, source_file)
    sink = BadRecordSink(on_bad_record)
    resolved = detect_numbering(rows, numbering, path)
    out = CodeContestsConversion(numbering=resolved)
    filtered: Counter = Counter()
    seen: dict[str, int] = {}
    no_tests = 0
    for row, line in zip(rows, lines, strict=True):
        row_filtered: Counter = Counter()
        try:
            records, problem = _convert_row(
                row, path, line, split, resolved, max_solutions_per_task, row_filtered
            )
            first = seen.setdefault(row["name"], line)
            if first != line:
                raise RecordError(
                    path, line, f"duplicate task name {row['name']!r} (first at line {first})"
                )
        except RecordError as error:
            sink.reject(error, row)
            continue
        filtered.update(row_filtered)
        out.records.extend(records)
        if problem is None:
            no_tests += 1
        else:
            out.problems.append(problem)
    out.quarantined = sink.quarantined
    n_correct = sum(r["is_correct"] for r in out.records)
    out.stats = {
        "rows": len(rows),
        "records_correct": n_correct,
        "records_incorrect": len(out.records) - n_correct,
        "problems": len(out.problems),
        "tasks_without_tests": no_tests,
        "quarantined": len(out.quarantined),
        **{f"filtered_{lang.lower()}": n for lang, n in sorted(filtered.items())},
    }
    logger.info(
        "%s (%s numbering): %s; non-Python-3 solutions filtered: %s",
        path,
        resolved,
        ", ".join(f"{k}={v}" for k, v in out.stats.items() if not k.startswith("filtered_")),
        dict(filtered) or "none",
    )
    if no_tests:
        logger.info("%s: %d tasks have no tests and give no evaluation problem", path, no_tests)
    if out.quarantined:
        logger.warning("%s: %d bad rows quarantined", path, len(out.quarantined))
    return out
