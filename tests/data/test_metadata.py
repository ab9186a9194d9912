"""Metadata tables: offsets against a full parse, token counts, and mismatch detection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from weighted_mtp.data.errors import MetadataMismatchError
from weighted_mtp.data.manifest import entry_for_records, entry_for_table, verify_file
from weighted_mtp.data.metadata import (
    COLUMNS,
    build_metadata,
    line_spans,
    normalise_metadata_table,
    verify_metadata,
)
from weighted_mtp.data.offset_reader import read_records
from weighted_mtp.data.prompt import format_prompt
from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.datasets import JsonlDataset


def record(i: int, text: str, *, correct: bool = True) -> dict[str, Any]:
    return {
        "instruction": f"Task {i}: {text}",
        "input": "" if i % 2 else f"input {i}",
        "output": f"def f_{i}():\n\treturn {text!r}\n",
        "task_id": f"t/{i}",
        "is_correct": correct,
        "metadata": {"source": "test", "difficulty": i % 5, "has_tests": True},
    }


#: Multi-byte UTF-8 (2, 3 and 4 bytes), escapes, a line separator that is not a newline.
TEXTS = ["plain", "héllo", "世界", "emoji 🚀", 'quote " and \\ slash', "tab\tnl\nls\u2028x", ""]


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return [record(i, t, correct=i % 3 != 0) for i, t in enumerate(TEXTS * 3)]


@pytest.fixture(scope="module")
def tokenizer(records):
    texts = [format_prompt(r["instruction"], r["input"]) for r in records]
    texts += [r["output"] for r in records]
    return train_tokenizer(texts * 5, vocab_size=320)


@pytest.fixture
def written(tmp_path: Path, records, tokenizer) -> tuple[Path, pd.DataFrame]:
    path = tmp_path / "train.jsonl"
    JsonlDataset(filepath=str(path), schema="training").save(records)
    return path, build_metadata(records, tokenizer)


def test_offsets_match_a_full_parse(written, records) -> None:
    path, table = written
    data = path.read_bytes()
    assert list(table.columns) == list(COLUMNS)
    assert {c: str(t) for c, t in table.dtypes.items()} == {
        c: ("object" if d == "object" else d) for c, d in COLUMNS.items()
    }
    # Independent parse: split the bytes on newlines.
    starts, position = [], 0
    for line in data.split(b"\n")[:-1]:
        starts.append(position)
        position += len(line) + 1
    assert table["offset"].tolist() == starts
    for row in table.itertuples():
        line = data[row.offset : row.offset + row.length]
        assert json.loads(line) == records[row.row]
        assert data[row.offset + row.length : row.offset + row.length + 1] == b"\n"
    # Multi-byte characters make byte and character lengths differ.
    lengths = table["length"].to_numpy()
    chars = np.array([len(json.dumps(r, ensure_ascii=False)) for r in records])
    assert (lengths > chars).any()
    assert table["row"].tolist() == list(range(len(records)))
    assert table["task_id"].tolist() == [r["task_id"] for r in records]
    assert table["is_correct"].tolist() == [r["is_correct"] for r in records]


def test_offset_reader_reads_the_rows_back(written, records) -> None:
    path, table = written
    rows = [5, 0, 20, 5]
    assert read_records(path, table, rows) == [records[i] for i in rows]


def test_token_counts(written, records, tokenizer) -> None:
    _, table = written
    for row in table.itertuples():
        r = records[row.row]
        assert row.n_prompt_tokens == len(
            tokenizer.encode(format_prompt(r["instruction"], r["input"]))
        )
        assert row.n_output_tokens == len(tokenizer.encode(r["output"])) + 1  # + EOS


def test_line_spans_of_nothing() -> None:
    offsets, lengths = line_spans([])
    assert offsets.shape == lengths.shape == (0,)


def test_verify_accepts_the_matching_pair_and_the_manifest(written, records) -> None:
    path, table = written
    entry = entry_for_records(records)
    verify_metadata(path, table, manifest_entry=entry)
    verify_file(str(path), entry)


def _mutated(table: pd.DataFrame, column: str, row: int, value: Any) -> pd.DataFrame:
    table = table.copy()
    table.loc[row, column] = value
    return table


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda t: t.iloc[:-1], r"more lines than the table's 20 rows"),
        (
            lambda t: pd.concat([t, t.iloc[-1:]], ignore_index=True).assign(
                row=np.arange(len(t) + 1)
            ),
            r"the file has 21 lines, the table 22 rows",
        ),
        (lambda t: _mutated(t, "offset", 3, 10**9), r"metadata row 3: offset 1000000000"),
        (
            lambda t: _mutated(t, "length", 7, 5),
            r"metadata row 7: offset \d+, length 5 in the table",
        ),
        (lambda t: _mutated(t, "task_id", 4, "t/999"), r"metadata row 4: \(task_id, is_correct"),
        (lambda t: _mutated(t, "is_correct", 1, False), r"metadata row 1: "),
        (lambda t: _mutated(t, "row", 2, 7), r"metadata row 7: table position 2 holds row 7"),
        (lambda t: t.drop(columns=["length"]), r"lacks columns \['length'\]"),
    ],
)
def test_verify_detects_a_table_that_does_not_match(written, mutate, pattern) -> None:
    path, table = written
    with pytest.raises(MetadataMismatchError, match=pattern) as info:
        verify_metadata(path, mutate(table))
    assert str(path) in str(info.value)


def test_verify_detects_a_changed_file(written, records) -> None:
    path, table = written
    entry = entry_for_records(records)
    data = bytearray(path.read_bytes())
    index = data.index(b"plain")
    data[index : index + 5] = b"PLAIN"  # same length: offsets still agree, checksum does not
    path.write_bytes(bytes(data))
    verify_metadata(path, table)
    with pytest.raises(MetadataMismatchError, match=r"checksum mismatch"):
        verify_metadata(path, table, manifest_entry=entry)
    with pytest.raises(MetadataMismatchError, match=r"sha256 .*the manifest says"):
        verify_file(str(path), entry)


def test_table_manifest_entry_matches_the_written_parquet(tmp_path: Path, written) -> None:
    _, table = written
    path = tmp_path / "meta.parquet"
    table.to_parquet(path)
    verify_file(str(path), entry_for_table(table))
    assert entry_for_table(table)["rows"] == len(table)


def test_bug_span_columns_carry_the_records_spans_and_old_tables_read_as_none(
    tmp_path: Path, tokenizer
) -> None:
    records = [record(0, "a"), record(1, "b", correct=False), record(2, "c", correct=False)]
    records[1]["metadata"]["bug_span"] = [6, 9]
    records[2]["metadata"]["bug_span"] = None
    table = build_metadata(records, tokenizer)
    assert table["bug_start"].tolist() == [-1, 6, -1] and table["bug_end"].tolist() == [-1, 9, -1]
    path = tmp_path / "t.jsonl"
    JsonlDataset(filepath=str(path), schema="training").save(records)
    verify_metadata(path, table)
    with pytest.raises(MetadataMismatchError, match=r"metadata row 1: bug span \(6, 10\)"):
        verify_metadata(path, _mutated(table, "bug_end", 1, 10))
    # A table written before the columns existed: verified without them, normalised to -1.
    old = table.drop(columns=["bug_start", "bug_end"])
    verify_metadata(path, old)
    again = normalise_metadata_table(old)
    assert again["bug_start"].tolist() == [-1, -1, -1] and str(again["bug_end"].dtype) == "int64"
