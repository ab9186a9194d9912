"""The metadata table beside each training JSONL, and its check against the file.

One row per JSONL line (``docs/contracts.md``): ``row, offset, length, is_correct, difficulty,
task_id, n_prompt_tokens, n_output_tokens, bug_start, bug_end``. ``bug_start``/``bug_end``
are the record's ``metadata.bug_span`` (characters of the output where an incorrect synthetic
program departs from its correct twin), -1 where it has none (correct programs, real data);
tables written before they existed read as -1. ``offset``/``length`` are byte positions (length
without the newline), so samplers pick rows from this table alone and readers seek
(:mod:`weighted_mtp.data.offset_reader`).

Offsets are computed from the very bytes the JSONL writer emits
(:func:`weighted_mtp.data.records.dumps_line`), as the lines are produced: building the table
never reads the written file back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import fsspec
import numpy as np
import pandas as pd

from weighted_mtp.data.errors import MetadataMismatchError
from weighted_mtp.data.prompt import format_prompt
from weighted_mtp.data.records import dumps_line
from weighted_mtp.data.tokenizer import Tokenizer

COLUMNS: dict[str, str] = {
    "row": "int64",
    "offset": "int64",
    "length": "int64",
    "is_correct": "bool",
    "difficulty": "int64",
    "task_id": "object",
    "n_prompt_tokens": "int64",
    "n_output_tokens": "int64",
    "bug_start": "int64",
    "bug_end": "int64",
}
#: Columns added after the first tables were written, with the value an old table reads as.
OPTIONAL_COLUMNS: dict[str, int] = {"bug_start": -1, "bug_end": -1}


def _bug_span(record: dict[str, Any]) -> tuple[int, int]:
    span = (record.get("metadata") or {}).get("bug_span")
    return (-1, -1) if span is None else (int(span[0]), int(span[1]))


#: Records are tokenised in batches of this many (SentencePiece's batch call is multithreaded).
_BATCH = 1024


def line_spans(records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets [N], lengths [N])`` of the lines the JSONL writer produces for ``records``."""
    lengths = np.fromiter(
        (len(dumps_line(record)) for record in records), dtype=np.int64, count=len(records)
    )
    offsets = np.zeros(len(records), dtype=np.int64)
    # Each line is followed by one newline byte.
    np.cumsum(lengths[:-1] + 1, out=offsets[1:])
    return offsets, lengths


def build_metadata(records: Sequence[dict[str, Any]], tokenizer: Tokenizer) -> pd.DataFrame:
    """The metadata table of the JSONL file holding ``records`` in this order.

    Args:
        records: training records (validated upstream).
        tokenizer: counts ``n_prompt_tokens`` (tokens of ``format_prompt(instruction, input)``)
            and ``n_output_tokens`` (tokens of ``output`` plus the EOS).

    Returns:
        A DataFrame with the columns and dtypes of :data:`COLUMNS`, one row per record.
    """
    offsets, lengths = line_spans(records)
    n_prompt = np.zeros(len(records), dtype=np.int64)
    n_output = np.zeros(len(records), dtype=np.int64)
    for start in range(0, len(records), _BATCH):
        batch = records[start : start + _BATCH]
        prompts = [format_prompt(r["instruction"], r["input"]) for r in batch]
        outputs = [r["output"] for r in batch]
        n_prompt[start : start + len(batch)] = [len(ids) for ids in tokenizer.encode_batch(prompts)]
        n_output[start : start + len(batch)] = [
            len(ids) + 1 for ids in tokenizer.encode_batch(outputs)
        ]
    table = pd.DataFrame(
        {
            "row": np.arange(len(records), dtype=np.int64),
            "offset": offsets,
            "length": lengths,
            "is_correct": np.array([r["is_correct"] for r in records], dtype=bool),
            "difficulty": np.array([r["metadata"]["difficulty"] for r in records], dtype=np.int64),
            "task_id": pd.Series([r["task_id"] for r in records], dtype=object),
            "n_prompt_tokens": n_prompt,
            "n_output_tokens": n_output,
            "bug_start": np.array([_bug_span(r)[0] for r in records], dtype=np.int64),
            "bug_end": np.array([_bug_span(r)[1] for r in records], dtype=np.int64),
        }
    )
    return normalise_metadata_table(table)


def normalise_metadata_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with exactly the contract's columns, in order, with their canonical dtypes.

    Parquet readers may return ``task_id`` as a string extension dtype; casting back to
    ``object`` makes ``to_parquet`` write the same bytes as the original table (the manifest
    relies on it). Optional columns a table lacks (:data:`OPTIONAL_COLUMNS`) are added.
    """
    missing = {c: v for c, v in OPTIONAL_COLUMNS.items() if c not in table.columns}
    if missing:
        table = table.assign(**missing)
    return table[list(COLUMNS)].astype(COLUMNS).reset_index(drop=True)


def _check_columns(path: str, table: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in table.columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise MetadataMismatchError(
            path, None, f"metadata table lacks columns {missing} (expected {list(COLUMNS)})"
        )
    for column, dtype in COLUMNS.items():
        if dtype == "object" or column not in table.columns:
            continue
        if str(table[column].dtype) != dtype:
            raise MetadataMismatchError(
                path, None, f"column {column!r} has dtype {table[column].dtype}, expected {dtype}"
            )


def verify_metadata(
    jsonl_path: str | os.PathLike[str],
    table: pd.DataFrame,
    *,
    manifest_entry: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Check that ``table`` describes the JSONL file at ``jsonl_path``, in one streaming pass.

    Checks: the columns and dtypes; ``row`` is ``0..N-1``; the file has exactly ``N`` lines;
    every ``offset``/``length`` is the position of its line; ``task_id``, ``is_correct`` and
    ``difficulty`` agree with the record on that line; and with ``manifest_entry`` the file's
    size, sha256 and row count match the manifest.

    Raises:
        MetadataMismatchError: naming the file and the first table row that disagrees (or no
            row, for a whole-file mismatch such as the row count or the checksum).
    """
    path = os.fspath(jsonl_path)
    _check_columns(path, table)
    n = len(table)
    rows = table["row"].to_numpy(dtype=np.int64)
    bad = np.flatnonzero(rows != np.arange(n))
    if len(bad):
        raise MetadataMismatchError(
            path,
            int(rows[bad[0]]),
            f"table position {bad[0]} holds row {rows[bad[0]]}, "
            f"expected row numbers 0..{n - 1} in order",
        )
    offsets = table["offset"].to_numpy(dtype=np.int64)
    lengths = table["length"].to_numpy(dtype=np.int64)
    task_ids = table["task_id"].tolist()
    correct = table["is_correct"].to_numpy(dtype=bool)
    difficulty = table["difficulty"].to_numpy(dtype=np.int64)
    has_spans = all(c in table.columns for c in OPTIONAL_COLUMNS)
    if has_spans:
        bug_start = table["bug_start"].to_numpy(dtype=np.int64)
        bug_end = table["bug_end"].to_numpy(dtype=np.int64)

    digest = hashlib.sha256()
    position = 0
    index = 0
    with fsspec.open(path, "rb", **(storage_options or {})) as handle:
        for line in handle:
            digest.update(line)
            body = line[:-1] if line.endswith(b"\n") else line
            if index >= n:
                raise MetadataMismatchError(
                    path, None, f"the file has more lines than the table's {n} rows"
                )
            if offsets[index] != position or lengths[index] != len(body):
                raise MetadataMismatchError(
                    path,
                    index,
                    f"offset {offsets[index]}, length {lengths[index]} in the table; the line "
                    f"is at offset {position} with length {len(body)}",
                )
            try:
                record = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise MetadataMismatchError(path, index, f"line is not UTF-8 JSON: {exc}") from exc
            expected = (task_ids[index], bool(correct[index]), int(difficulty[index]))
            found = (
                record.get("task_id"),
                record.get("is_correct"),
                (record.get("metadata") or {}).get("difficulty"),
            )
            if found != expected:
                raise MetadataMismatchError(
                    path,
                    index,
                    f"(task_id, is_correct, difficulty) is {expected} in the table, "
                    f"{found} in the file",
                )
            if has_spans and _bug_span(record) != (bug_start[index], bug_end[index]):
                raise MetadataMismatchError(
                    path,
                    index,
                    f"bug span ({bug_start[index]}, {bug_end[index]}) in the table, "
                    f"{_bug_span(record)} in the file",
                )
            position += len(line)
            index += 1
    if index != n:
        raise MetadataMismatchError(path, None, f"the file has {index} lines, the table {n} rows")
    if manifest_entry is not None:
        sha = digest.hexdigest()
        if position != manifest_entry["size"] or sha != manifest_entry["sha256"]:
            raise MetadataMismatchError(
                path,
                None,
                f"checksum mismatch: the file has {position} bytes, sha256 {sha}; the manifest "
                f"says {manifest_entry['size']} bytes, sha256 {manifest_entry['sha256']}",
            )
        if manifest_entry.get("rows") is not None and manifest_entry["rows"] != n:
            raise MetadataMismatchError(
                path, None, f"the manifest says {manifest_entry['rows']} rows, the table has {n}"
            )
