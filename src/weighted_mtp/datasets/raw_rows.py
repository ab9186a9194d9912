"""``RawRowsDataset``: rows of a published dataset (Parquet or JSONL) as ``list[dict]``."""

from __future__ import annotations

import gzip
import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from weighted_mtp.data.records import SourcedRows, dumps_line
from weighted_mtp.datasets.jsonl import FileDataset, check_choice, parse_jsonl_lines

FORMATS = ("parquet", "jsonl")


def to_python(value: Any) -> Any:
    """Replace numpy arrays and scalars (from pandas/pyarrow) by lists and Python scalars."""
    if isinstance(value, dict):
        return {key: to_python(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_python(value.tolist())
    return value


def _infer_format(path: str) -> str:
    name = path.lower().removesuffix(".gz")
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    raise ValueError(f"{path}: cannot tell the format from the name; set format: parquet|jsonl")


class RawRowsDataset(FileDataset):
    """Rows of a raw dataset file, e.g. Hugging Face ``deepmind/code_contests`` parquet shards
    or ``mbpp.jsonl``.

    ``load`` returns a :class:`~weighted_mtp.data.records.SourcedRows` (a list of plain dicts
    that also carries the file URL and each row's line number, for error messages). Nested
    Parquet columns come back as dicts and lists, never numpy arrays. ``save`` writes JSONL
    (optionally gzip-compressed, by a ``.gz`` suffix) or Parquet.

    Args:
        filepath, credentials, fs_args, metadata: see
            :class:`~weighted_mtp.datasets.jsonl.FileDataset`.
        format: ``parquet`` or ``jsonl``; inferred from the file name when omitted.
    """

    def __init__(
        self,
        *,
        filepath: str,
        format: str | None = None,  # noqa: A002 - the catalog key users expect
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            filepath=filepath, credentials=credentials, fs_args=fs_args, metadata=metadata
        )
        check_choice("format", format, FORMATS)
        self._format = format or _infer_format(str(filepath))

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "format": self._format}

    def load(self) -> SourcedRows:
        with self._fs.open(self._path, "rb") as handle:
            if self._format == "parquet":
                table = pq.read_table(handle)
                # Parquet rows are numbered from 1 like lines, so messages read "file:row".
                return SourcedRows(to_python(table.to_pylist()), self._url)
            raw = handle.read()
        if self._path.endswith(".gz"):
            raw = gzip.decompress(raw)
        rows, numbers = parse_jsonl_lines(io.BytesIO(raw), self._url)
        return SourcedRows(rows, self._url, numbers)

    def save(self, data: list[dict[str, Any]]) -> None:
        rows = [to_python(row) for row in data]
        self._ensure_parent()
        if self._format == "parquet":
            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(rows), buffer)
            payload = buffer.getvalue()
        else:
            payload = b"".join(dumps_line(row) + b"\n" for row in rows)
            if self._path.endswith(".gz"):
                # mtime=0: the same rows give the same bytes (and the same checksum).
                payload = gzip.compress(payload, mtime=0)
        with self._fs.open(self._path, "wb") as handle:
            handle.write(payload)
        self._fs.invalidate_cache(self._path)
