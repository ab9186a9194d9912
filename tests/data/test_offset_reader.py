"""Offset reads must equal a full parse of the file, whatever subset and order is asked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

from weighted_mtp.data import offset_reader
from weighted_mtp.data.offset_reader import (
    JsonlReadError,
    LineBoundaryError,
    LineDecodeError,
    read_lines_at,
    read_records,
)

TEXTS = ["print(1)", "Σ résumé — 한국어 ≤ 10⁹", "emoji 🙂 and\ttab", 'quote " and \\ backslash', ""]


def _write_jsonl(path: Path, records: list[dict], *, final_newline: bool) -> pd.DataFrame:
    """Write records one a line and return the metadata table (row, offset, length, ...)."""
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in records]
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    path.write_bytes(b"\n".join(lines) + (b"\n" if final_newline else b""))
    return pd.DataFrame(
        {
            "row": np.arange(len(records)),
            "offset": offsets,
            "length": [len(line) for line in lines],
            "is_correct": [r["is_correct"] for r in records],
        }
    )


def _records(n: int) -> list[dict]:
    return [
        {
            "instruction": f"task {i}: {TEXTS[i % len(TEXTS)]}",
            "input": "",
            "output": TEXTS[(i * 3) % len(TEXTS)] * (i % 4),
            "task_id": f"t{i}",
            "is_correct": i % 3 == 0,
            "metadata": {"source": "x", "difficulty": i % 7, "has_tests": True},
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("final_newline", [True, False])
@pytest.mark.parametrize("max_gap", [0, 1 << 20])
def test_reads_equal_full_parse(tmp_path: Path, final_newline: bool, max_gap: int) -> None:
    records = _records(60)
    path = tmp_path / "train.jsonl"
    meta = _write_jsonl(path, records, final_newline=final_newline)
    full = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert full == records

    rng = np.random.default_rng(0)
    rows = rng.permutation(60)[:25].tolist() + [59, 0, 59]  # unsorted, last line, duplicates
    got = read_records(path, meta, rows, max_gap_bytes=max_gap)
    assert got == [full[r] for r in rows]
    # All of them, in file order, through the low-level function.
    assert read_lines_at(path, meta["offset"], meta["length"], max_gap_bytes=max_gap) == full


def test_coalescing_and_read_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = _records(40)
    path = tmp_path / "g.jsonl"
    meta = _write_jsonl(path, records, final_newline=True)
    calls: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        calls.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", counting_pread)
    rows = list(range(0, 40, 2))
    assert read_records(path, meta, rows, max_gap_bytes=1 << 20) == [records[r] for r in rows]
    assert len(calls) == 1  # every other line, gaps bridged: one read
    calls.clear()
    assert read_records(path, meta, rows, max_gap_bytes=0) == [records[r] for r in rows]
    assert len(calls) == len(rows)  # gaps not bridged: one read per line
    calls.clear()
    monkeypatch.setattr(offset_reader, "MAX_READ_BYTES", 512)
    assert read_records(path, meta, rows, max_gap_bytes=1 << 20) == [records[r] for r in rows]
    assert 1 < len(calls) < len(rows) and max(calls) <= 512 + int(meta["length"].max()) + 2


def test_metadata_rows_out_of_position_order(tmp_path: Path) -> None:
    records = _records(10)
    path = tmp_path / "a.jsonl"
    meta = _write_jsonl(path, records, final_newline=True).iloc[::-1].reset_index(drop=True)
    assert read_records(path, meta, [3, 7]) == [records[3], records[7]]
    with pytest.raises(KeyError, match="row 10 is not in the metadata"):
        read_records(path, meta, [10])


def test_fsspec_urls(tmp_path: Path) -> None:
    records = _records(20)
    path = tmp_path / "b.jsonl"
    meta = _write_jsonl(path, records, final_newline=False)
    with fsspec.open("memory://bucket/b.jsonl", "wb") as f:
        f.write(path.read_bytes())
    try:
        for url in ("memory://bucket/b.jsonl", f"file://{path}"):
            assert read_records(url, meta, [19, 4, 5]) == [records[19], records[4], records[5]]
        # A tiny gap forces one request per line on the remote path too.
        got = read_records("memory://bucket/b.jsonl", meta, [2, 9], max_gap_bytes=0)
        assert got == [records[2], records[9]]
    finally:
        fsspec.filesystem("memory").rm("/bucket", recursive=True)


def test_empty_request(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    meta = _write_jsonl(path, _records(3), final_newline=True)
    assert read_records(path, meta, []) == []


def test_length_past_end_of_file(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    meta = _write_jsonl(path, _records(5), final_newline=True)
    meta.loc[4, "length"] += 10
    with pytest.raises(LineBoundaryError, match=r"d\.jsonl: row 4: .*outside the file") as info:
        read_records(path, meta, [0, 4])
    assert info.value.row == 4 and info.value.path == str(path)


def test_line_not_ending_where_metadata_says(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    meta = _write_jsonl(path, _records(5), final_newline=True)
    meta.loc[2, "length"] -= 1
    with pytest.raises(LineBoundaryError, match=r"row 2: .*does not end after"):
        read_records(path, meta, [2])
    # An offset inside a line is caught by the byte before it.
    meta = _write_jsonl(path, _records(5), final_newline=True)
    meta.loc[3, "offset"] += 1
    meta.loc[3, "length"] -= 1
    with pytest.raises(LineBoundaryError, match=r"row 3: offset \d+ is not the start of a line"):
        read_records(path, meta, [3])


def test_bad_json_names_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    good = json.dumps({"a": 1}).encode()
    path.write_bytes(good + b"\n" + b'{"a": ' + b"\n" + b"[1, 2]" + b"\n" + b'"\xff"' + b"\n")
    offsets = [0, len(good) + 1, len(good) + 8, len(good) + 15]
    lengths = [len(good), 6, 6, 3]
    assert read_lines_at(path, offsets[:1], lengths[:1]) == [{"a": 1}]
    with pytest.raises(LineDecodeError, match=r"f\.jsonl: row 11: .*not UTF-8 JSON"):
        read_lines_at(path, offsets[1:2], lengths[1:2], rows=[11])
    with pytest.raises(LineDecodeError, match="expected an object"):
        read_lines_at(path, offsets[2:3], lengths[2:3])
    with pytest.raises(JsonlReadError, match="not UTF-8 JSON"):
        read_lines_at(path, offsets[3:4], lengths[3:4])
