"""SHA256 manifest of the files data_engineering produces.

The manifest is JSON: ``{"format": 1, "files": {name: {"sha256", "size", "rows"}}}`` where
``name`` is the catalog entry that wrote the file (the pipeline knows entries, not paths) and
``rows`` the number of records (lines or table rows; null for a tokenizer model).

Digests are computed from the exact bytes each dataset writes, while they are still in memory:
JSONL bytes come from :func:`weighted_mtp.data.records.dumps_line` (the writer's own
serialisation), Parquet bytes from the same ``to_parquet`` call the catalog's ParquetDataset
makes, the tokenizer from its model proto. :func:`verify_file` checks a file on disk (local or
fsspec URL) against its entry.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from typing import Any

import fsspec

from weighted_mtp.data.errors import MetadataMismatchError
from weighted_mtp.data.records import dumps_line

MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


def jsonl_bytes(records: Iterable[dict[str, Any]]) -> bytes:
    """The bytes of the JSONL file holding ``records`` (each line ends with ``\\n``)."""
    return b"".join(dumps_line(record) + b"\n" for record in records)


def entry_for_bytes(data: bytes, rows: int | None) -> dict[str, Any]:
    """A manifest entry for a file whose content is ``data``."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "rows": rows}


def entry_for_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A manifest entry for the JSONL file the JsonlDataset writes from ``records``."""
    digest = hashlib.sha256()
    size = 0
    for record in records:
        line = dumps_line(record) + b"\n"
        digest.update(line)
        size += len(line)
    return {"sha256": digest.hexdigest(), "size": size, "rows": len(records)}


def entry_for_table(table: Any, **to_parquet_args: Any) -> dict[str, Any]:
    """A manifest entry for the Parquet file ``table.to_parquet(file, **to_parquet_args)``
    writes (pass the catalog entry's ``save_args``)."""
    buffer = io.BytesIO()
    table.to_parquet(buffer, **to_parquet_args)
    return entry_for_bytes(buffer.getvalue(), len(table))


def build_manifest(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The manifest document for ``{name: entry}`` (names sorted, so the JSON is stable)."""
    return {"format": MANIFEST_FORMAT, "files": {name: entries[name] for name in sorted(entries)}}


def file_digest(path: str, storage_options: dict[str, Any] | None = None) -> tuple[str, int]:
    """``(sha256 hex, size in bytes)`` of a local file or fsspec URL, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with fsspec.open(path, "rb", **(storage_options or {})) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verify_file(
    path: str, entry: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> None:
    """Raise :class:`MetadataMismatchError` unless the file's size and sha256 match ``entry``."""
    sha, size = file_digest(path, storage_options)
    if size != entry["size"]:
        raise MetadataMismatchError(
            path, None, f"size {size} bytes, the manifest says {entry['size']}"
        )
    if sha != entry["sha256"]:
        raise MetadataMismatchError(
            path, None, f"sha256 {sha}, the manifest says {entry['sha256']}"
        )
