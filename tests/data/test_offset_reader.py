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


def _coalesce_reference(
    starts: list[int], ends: list[int], max_gap: int, cap: int
) -> list[list[int]]:
    """The grouping rule spelled out one range at a time: a sorted range joins the current
    group when it starts within ``max_gap`` bytes of the furthest end read so far and in the
    same ``cap``-byte block of the file as the previous range's start."""
    groups: list[list[int]] = []
    reach = prev_start = 0
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        if groups and start <= reach + max_gap and start // cap == prev_start // cap:
            groups[-1].append(i)
            reach = max(reach, end)
        else:
            groups.append([i])
            reach = end
        prev_start = start
    return groups


@pytest.mark.parametrize("seed", range(6))
def test_coalesce_matches_reference(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    cap = int(rng.choice([64, 500, 1 << 20]))
    monkeypatch.setattr(offset_reader, "MAX_READ_BYTES", cap)
    lengths = rng.integers(0, 120, size=300)
    offsets = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    size = int(offsets[-1] + lengths[-1] + 1)
    # A sample with duplicates, laid out as read_lines_at lays it out.
    picked = np.sort(rng.choice(300, size=int(rng.integers(1, 200)), replace=True))
    starts = np.maximum(offsets[picked] - 1, 0)
    ends = np.minimum(offsets[picked] + lengths[picked] + 1, size)
    for max_gap in (0, 1, 40, 300, 1 << 20):
        first, last = offset_reader._coalesce(starts, ends, max_gap)
        got = [list(range(f, stop)) for f, stop in zip(first.tolist(), last.tolist(), strict=True)]
        assert got == _coalesce_reference(starts.tolist(), ends.tolist(), max_gap, cap)


def test_remote_batches_bounded_by_count_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    records = _records(50)
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in records]
    data = b"\n".join(lines) + b"\n"
    offsets = np.concatenate([[0], np.cumsum([len(x) + 1 for x in lines])[:-1]])
    lengths = np.array([len(x) for x in lines])
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/batches.jsonl", data)
    batches: list[list[tuple[int, int]]] = []
    real_cat_ranges = MemoryFileSystem.cat_ranges

    def recording_cat_ranges(self, paths, starts, ends, **kwargs):  # noqa: ANN001, ANN202
        batches.append(list(zip(starts, ends, strict=True)))
        return real_cat_ranges(self, paths, starts, ends, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "cat_ranges", recording_cat_ranges)
    monkeypatch.setattr(offset_reader, "REMOTE_BATCH_RANGES", 4)
    monkeypatch.setattr(offset_reader, "REMOTE_BATCH_BYTES", 300)
    try:
        rows = list(range(49, -1, -3))
        got = read_lines_at(
            "memory://bucket/batches.jsonl", offsets[rows], lengths[rows], max_gap_bytes=0
        )
        assert got == [records[r] for r in rows]
        ranges = [r for batch in batches for r in batch]
        assert len(ranges) == len(rows)  # one range per line, each requested once
        assert [s for s, _ in ranges] == sorted(s for s, _ in ranges)
        for batch in batches:
            assert len(batch) <= 4
            assert len(batch) == 1 or sum(e - s for s, e in batch) <= 300
        assert len(batches) > len(rows) / 4  # the byte bound split some batches further
    finally:
        fs.rm("/bucket", recursive=True)


def test_s3_reads_equal_full_parse(tmp_path: Path, moto_s3_endpoint: str) -> None:
    """Through s3fs against an S3 endpoint (moto_server on 127.0.0.1): coalesced and
    one-range-per-line reads give the records a full parse gives, and a stale metadata table
    fails with the URL and row."""
    options = {"client_kwargs": {"endpoint_url": moto_s3_endpoint}}
    records = _records(80)
    path = tmp_path / "s3.jsonl"
    meta = _write_jsonl(path, records, final_newline=True)
    fs = fsspec.filesystem("s3", **options)
    fs.mkdir("offset-reader")
    url = "s3://offset-reader/train.jsonl"
    fs.put(str(path), url)
    rows = np.random.default_rng(1).permutation(80)[:30].tolist() + [79, 0, 79]
    for max_gap in (0, 200, 1 << 20):
        got = read_records(url, meta, rows, max_gap_bytes=max_gap, storage_options=options)
        assert got == [records[r] for r in rows]
    assert read_records(url, meta, rows, storage_options=options) == [records[r] for r in rows]
    stale = meta.copy()
    stale.loc[5, "length"] -= 1
    with pytest.raises(LineBoundaryError, match=r"s3://offset-reader/train\.jsonl: row 5: "):
        read_records(url, stale, [4, 5], storage_options=options)
