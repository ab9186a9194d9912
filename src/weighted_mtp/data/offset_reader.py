"""Read any subset of a JSONL file's lines by byte offset, never scanning the file.

The metadata table written beside each training JSONL (see ``docs/contracts.md``) holds, for
every line, its ``offset`` (first byte) and ``length`` (bytes without the newline). Reading a
sample is then a handful of positioned reads:

1. the requested lines are sorted by offset, so the file is visited front to back;
2. lines closer than ``max_gap_bytes`` are coalesced into one read (fewer syscalls locally,
   far fewer requests on object stores, where each request costs milliseconds);
3. each read range starts one byte before its first line and ends one byte after its last, so
   every line's boundaries are checked: the byte before it is a newline (or it starts the
   file) and the byte after it is a newline (or the file ends there);
4. records come back in the order they were asked for.

Local paths use ``os.pread`` on one descriptor; fsspec URLs (``s3://``, ``memory://``, ...)
use ``fs.cat_ranges``, which remote filesystems run concurrently, in batches bounded by count
and by bytes (so a dense sample never holds more than ``REMOTE_BATCH_BYTES`` of buffers).

This module imports neither torch nor pandas, so a process that only reads stays lean.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np

if TYPE_CHECKING:  # annotations only: a reader process need not import pandas
    import pandas as pd

#: Gap below which two requested lines are read in one go, per filesystem kind. Locally a
#: syscall costs about as much as copying a few KiB from the page cache; on object stores a
#: request costs as much as transferring about a megabyte (measured against moto_server: about
#: 6 ms of server and client CPU per GET against 150-250 MB/s of streaming). The remote default
#: therefore favours time: a sample as dense as the stage-1 sample (1.35% of the lines) is then
#: read almost whole, in large concurrent ranges. Where bytes cost more than requests (metered
#: egress, a slow link), pass ``max_gap_bytes=0`` (only the sampled lines: 74x fewer bytes
#: there) or ``65536`` (5.6x fewer), at many more requests; ``docs/benchmarks/sampling.md`` has
#: the measured trade-off.
LOCAL_MAX_GAP_BYTES = 4096
REMOTE_MAX_GAP_BYTES = 1 << 20
#: Upper bound (up to one line) on the bytes fetched by one coalesced read.
MAX_READ_BYTES = 16 << 20
#: Remote reads are requested in batches (run concurrently by the filesystem) of at most this
#: many ranges and, unless a single range is larger, this many bytes: a dense sample, whose
#: coalesced reads are up to ``MAX_READ_BYTES`` each, never holds more than this in buffers.
REMOTE_BATCH_RANGES = 256
REMOTE_BATCH_BYTES = 64 << 20


class JsonlReadError(ValueError):
    """A line of a JSONL file could not be read as the metadata describes it.

    Attributes:
        path: the file (path or URL).
        row: the metadata row (line number) of the offending line.
    """

    def __init__(self, path: str, row: int, message: str) -> None:
        super().__init__(f"{path}: row {row}: {message}")
        self.path = path
        self.row = row


class LineBoundaryError(JsonlReadError):
    """The offset/length of a line do not match the file (past its end, or not a whole line)."""


class LineDecodeError(JsonlReadError):
    """The bytes of a line are not UTF-8 JSON."""


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _coalesce(starts: np.ndarray, ends: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Group sorted ranges: returns (first index of each group, one past its last index).

    ``starts`` must be sorted; ``ends`` may overlap (duplicate requests), hence the running max.
    A group also ends where the starts cross a ``MAX_READ_BYTES`` boundary of the file, so a
    dense sample never turns into one read of the whole file (a read is then at most
    ``MAX_READ_BYTES`` plus one line).
    """
    if len(starts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    reach = np.maximum.accumulate(ends)
    chunk = starts // MAX_READ_BYTES
    new_group = np.empty(len(starts), dtype=bool)
    new_group[0] = True
    new_group[1:] = (starts[1:] > reach[:-1] + max_gap) | (chunk[1:] != chunk[:-1])
    first = np.flatnonzero(new_group)
    last = np.append(first[1:], len(starts))
    return first, last


def read_lines_at(
    path: str | os.PathLike[str],
    offsets: Sequence[int] | np.ndarray,
    lengths: Sequence[int] | np.ndarray,
    *,
    rows: Sequence[int] | np.ndarray | None = None,
    max_gap_bytes: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[dict]:
    """Parse the JSONL lines at the given byte positions, in the order given.

    Args:
        path: a local path or an fsspec URL.
        offsets: ``[N]`` byte offset of each line's first byte.
        lengths: ``[N]`` byte length of each line, without its newline.
        rows: ``[N]`` row numbers used in error messages (default: the position in ``offsets``).
        max_gap_bytes: lines closer than this are read in one request (default: 4 KiB locally,
            1 MiB on remote filesystems).
        storage_options: passed to fsspec for URLs (credentials, endpoint).

    Returns:
        ``N`` dicts, one per requested line, in the requested order (duplicates allowed).

    Raises:
        LineBoundaryError: a line runs past the end of the file, or the bytes around it are not
            newlines (the offset/length do not describe a whole line of this file).
        LineDecodeError: a line is not valid UTF-8 JSON, or not a JSON object.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if offsets.shape != lengths.shape or offsets.ndim != 1:
        raise ValueError(
            f"offsets and lengths must be 1-D of one length, got {offsets.shape} and {lengths.shape}"
        )
    rows = np.arange(len(offsets)) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.shape != offsets.shape:
        raise ValueError(f"rows must match offsets, got {rows.shape} and {offsets.shape}")
    n = len(offsets)
    if n == 0:
        return []

    path = os.fspath(path)
    fs, fs_path = fsspec.core.url_to_fs(path, **(storage_options or {}))
    local = _is_local(fs)
    size = os.path.getsize(fs_path) if local else int(fs.size(fs_path))

    bad = np.flatnonzero((offsets < 0) | (lengths < 0) | (offsets + lengths > size))
    if len(bad):
        i = bad[0]
        raise LineBoundaryError(
            path,
            int(rows[i]),
            f"offset {offsets[i]} + length {lengths[i]} lies outside the file "
            f"({size} bytes; {len(bad)} of {n} requested lines are out of range)",
        )

    # Sorting makes reads sequential; a stable sort keeps duplicates in request order.
    order = np.argsort(offsets, kind="stable")
    # One byte of context on each side, clipped to the file, to check the line's boundaries.
    starts = np.maximum(offsets[order] - 1, 0)
    ends = np.minimum(offsets[order] + lengths[order] + 1, size)
    if max_gap_bytes is None:
        max_gap_bytes = LOCAL_MAX_GAP_BYTES if local else REMOTE_MAX_GAP_BYTES
    first, last = _coalesce(starts, ends, max_gap_bytes)
    group_starts = starts[first]
    group_ends = np.maximum.reduceat(ends, first)

    out: list[dict | None] = [None] * n
    # Python ints once, rather than a numpy scalar per access in the per-line loop.
    off_list, len_list, row_list = offsets.tolist(), lengths.tolist(), rows.tolist()

    def parse(buf: bytes, buf_start: int, indices: np.ndarray) -> None:
        for i in indices.tolist():
            out[i] = _parse_line(path, buf, buf_start, size, off_list[i], len_list[i], row_list[i])

    # Parsing allocates one container per JSON object and array and frees none, which only
    # makes the cyclic GC rescan the growing heap again and again (~15% of the parse time).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _read_groups(fs, fs_path, local, group_starts, group_ends, first, last, order, parse)
    finally:
        if gc_was_enabled:
            gc.enable()
    return out  # type: ignore[return-value]  # every slot was filled above


def _read_groups(
    fs: fsspec.AbstractFileSystem,
    fs_path: str,
    local: bool,
    group_starts: np.ndarray,
    group_ends: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    order: np.ndarray,
    parse: Callable[[bytes, int, np.ndarray], None],
) -> None:
    """Fetch each coalesced range and hand its lines (``order[first[g]:last[g]]``) to ``parse``."""
    starts, ends = group_starts.tolist(), group_ends.tolist()
    if local:
        fd = os.open(fs_path, os.O_RDONLY)
        try:
            for g in range(len(starts)):
                buf = os.pread(fd, ends[g] - starts[g], starts[g])
                parse(buf, starts[g], order[first[g] : last[g]])
        finally:
            os.close(fd)
    else:
        for b, e in _remote_batches(starts, ends):
            bufs = fs.cat_ranges([fs_path] * (e - b), starts[b:e], ends[b:e])
            for k, buf in enumerate(bufs):
                g = b + k
                if isinstance(buf, Exception):
                    raise buf
                parse(buf, starts[g], order[first[g] : last[g]])


def _remote_batches(starts: list[int], ends: list[int]) -> list[tuple[int, int]]:
    """Split the ranges into consecutive ``(begin, end)`` index batches of at most
    ``REMOTE_BATCH_RANGES`` ranges and ``REMOTE_BATCH_BYTES`` bytes (a range larger than that
    goes alone), so memory is bounded by bytes, not only by the number of ranges."""
    batches: list[tuple[int, int]] = []
    b, total = 0, 0
    for g in range(len(starts)):
        size = ends[g] - starts[g]
        if g > b and (g - b >= REMOTE_BATCH_RANGES or total + size > REMOTE_BATCH_BYTES):
            batches.append((b, g))
            b, total = g, 0
        total += size
    if len(starts):
        batches.append((b, len(starts)))
    return batches


def _parse_line(
    path: str, buf: bytes, buf_start: int, size: int, off: int, length: int, row: int
) -> dict:
    """Check the boundaries of the line at ``off`` inside ``buf`` (file bytes from ``buf_start``)
    and parse it."""
    a = off - buf_start
    b = a + length
    if b > len(buf):
        raise LineBoundaryError(path, row, f"short read: the file ends before byte {off + length}")
    if off > 0 and buf[a - 1] != 0x0A:
        raise LineBoundaryError(
            path, row, f"offset {off} is not the start of a line (byte {off - 1} is not a newline)"
        )
    if off + length < size and buf[b] != 0x0A:
        raise LineBoundaryError(
            path,
            row,
            f"line at offset {off} does not end after {length} bytes "
            f"(byte {off + length} is not a newline)",
        )
    try:
        record = json.loads(buf[a:b])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LineDecodeError(path, row, f"line at offset {off} is not UTF-8 JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise LineDecodeError(
            path, row, f"line at offset {off} is a JSON {type(record).__name__}, expected an object"
        )
    return record


def read_records(
    jsonl_path: str | os.PathLike[str],
    metadata: pd.DataFrame,
    rows: Sequence[int] | np.ndarray,
    *,
    max_gap_bytes: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[dict]:
    """Read the records of ``rows`` (values of the metadata's ``row`` column), in that order.

    Args:
        jsonl_path: the training JSONL (local path or fsspec URL).
        metadata: its metadata table, a pandas DataFrame with at least ``row``, ``offset`` and
            ``length`` columns (other columns are ignored).
        rows: ``[N]`` row numbers, as returned by the functions of ``weighted_mtp.data.sampling``.
        max_gap_bytes, storage_options: see :func:`read_lines_at`.

    Returns:
        ``N`` record dicts in the order of ``rows``.

    Raises:
        KeyError: a requested row is not in the metadata.
        JsonlReadError: see :func:`read_lines_at`.
    """
    rows = np.asarray(rows, dtype=np.int64)
    table_rows = metadata["row"].to_numpy(dtype=np.int64)
    positions = _positions_of(table_rows, rows)
    missing = np.flatnonzero(positions < 0)
    if len(missing):
        raise KeyError(
            f"{os.fspath(jsonl_path)}: row {int(rows[missing[0]])} is not in the metadata table "
            f"({len(missing)} of {len(rows)} requested rows missing; the table has "
            f"{len(table_rows)} rows)"
        )
    return read_lines_at(
        jsonl_path,
        metadata["offset"].to_numpy(dtype=np.int64)[positions],
        metadata["length"].to_numpy(dtype=np.int64)[positions],
        rows=rows,
        max_gap_bytes=max_gap_bytes,
        storage_options=storage_options,
    )


def _positions_of(table_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Positions of ``rows`` in ``table_rows`` (-1 where absent), without a hash table.

    Metadata tables are written in row order, so the common case is a lookup by position; the
    general case sorts once (1M rows: tens of milliseconds).
    """
    n = len(table_rows)
    if n and table_rows[0] == 0 and table_rows[-1] == n - 1 and (np.diff(table_rows) == 1).all():
        inside = (rows >= 0) & (rows < n)
        return np.where(inside, rows, -1)
    sorter = np.argsort(table_rows, kind="stable")
    idx = np.searchsorted(table_rows, rows, sorter=sorter)
    idx = np.minimum(idx, max(n - 1, 0))
    found = (table_rows[sorter[idx]] == rows) if n else np.zeros(len(rows), dtype=bool)
    return np.where(found, sorter[idx], -1)
