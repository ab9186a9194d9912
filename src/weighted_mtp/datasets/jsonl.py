"""``JsonlDataset``: a list of dicts <-> a JSONL file (local or any fsspec URL, ``s3://``...).

With ``load_as: location`` it loads a :class:`JsonlLocation` (where the file is) instead of its
records: the torchrun training workers read the rows they need by byte offset themselves, so
the Kedro process must not read a corpus it would only pass on.

Also home of :class:`FileDataset`, the small fsspec base the project's single-file datasets
share: it parses the path in the constructor and opens the filesystem on first use, so that
building a catalog touches no file, network or credentials.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io import AbstractDataset
from kedro.io.core import DatasetError, get_filepath_str, get_protocol_and_path

from weighted_mtp.data.errors import MalformedJsonError
from weighted_mtp.data.records import SCHEMAS, dumps_line, validate_records


class FileDataset(AbstractDataset):
    """Base of the project's one-file datasets: path parsing, lazy filesystem, ``_describe``.

    Args:
        filepath: a local path or an fsspec URL (``s3://bucket/key``, ``memory://...``).
        credentials: passed to the fsspec filesystem (``key``, ``secret``,
            ``client_kwargs: {endpoint_url: ...}`` for S3).
        fs_args: extra filesystem constructor arguments.
        metadata: free-form, ignored by Kedro (kedro-viz shows it).
    """

    def __init__(
        self,
        *,
        filepath: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(str(filepath))
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._storage_options = {**deepcopy(credentials or {}), **deepcopy(fs_args or {})}
        self._fs_cache: fsspec.AbstractFileSystem | None = None
        self.metadata = metadata

    @property
    def _fs(self) -> fsspec.AbstractFileSystem:
        if self._fs_cache is None:
            options = dict(self._storage_options)
            if self._protocol == "file":
                options.setdefault("auto_mkdir", True)
            self._fs_cache = fsspec.filesystem(self._protocol, **options)
        return self._fs_cache

    @property
    def _path(self) -> str:
        return get_filepath_str(self._filepath, self._protocol)

    @property
    def _url(self) -> str:
        """The path as users wrote it (with its protocol), for messages."""
        return self._path if self._protocol == "file" else f"{self._protocol}://{self._path}"

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "protocol": self._protocol}

    def _exists(self) -> bool:
        return self._fs.exists(self._path)

    def _release(self) -> None:
        super()._release()
        if self._fs_cache is not None:
            self._fs_cache.invalidate_cache(self._path)

    def _ensure_parent(self) -> None:
        # Object stores have no directories; local paths need theirs.
        if self._protocol == "file":
            self._fs.makedirs(str(self._filepath.parent), exist_ok=True)


def check_choice(
    name: str, value: str | None, choices: Collection[str], listed: str | None = None
) -> None:
    """Constructor option check: ``value`` must be None or one of ``choices``.

    Raises:
        ValueError: ``"<name> must be one of <listed>, got <value>"``; ``listed`` defaults to
            ``choices`` as given.
    """
    if value is not None and value not in choices:
        shown = choices if listed is None else listed
        raise ValueError(f"{name} must be one of {shown}, got {value!r}")


def parse_jsonl_lines(lines: Iterable[bytes], url: str) -> tuple[list[dict[str, Any]], list[int]]:
    """Parse JSONL bytes lines; returns the objects and their 1-based line numbers.

    Blank lines are skipped (their numbers are not reused, so messages cite the file's lines).

    Raises:
        MalformedJsonError: a line is not UTF-8 JSON or not an object, naming the line.
    """
    records: list[dict[str, Any]] = []
    numbers: list[int] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            # Without its newline, so that error columns point into the line itself.
            value = json.loads(raw.rstrip(b"\r\n"))
        except UnicodeDecodeError as exc:
            raise MalformedJsonError(url, number, f"not UTF-8 ({exc.reason})") from exc
        except json.JSONDecodeError as exc:
            raise MalformedJsonError(
                url, number, f"invalid JSON at column {exc.colno}: {exc.msg} (expected an object)"
            ) from exc
        if not isinstance(value, dict):
            raise MalformedJsonError(
                url, number, f"a JSON {type(value).__name__}, expected an object"
            )
        records.append(value)
        numbers.append(number)
    return records, numbers


LOAD_AS = ("records", "location")


@dataclass(frozen=True)
class JsonlLocation:
    """Where a JSONL file lives: what ``JsonlDataset(load_as="location")`` loads.

    Attributes:
        url: the file as a local absolute path or an fsspec URL (``s3://bucket/key``).
        storage_options: the fsspec options of the catalog entry (credentials included, hence
            left out of ``repr``); pass only their non-secret part to other processes.
    """

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)


class JsonlDataset(FileDataset):
    """A JSONL file of objects, one per line, as a ``list[dict]``.

    ``save`` writes each object with :func:`weighted_mtp.data.records.dumps_line` (compact,
    UTF-8), the serialisation the metadata tables' byte offsets are computed from. ``load``
    reports malformed lines with their line number.

    Args:
        filepath, credentials, fs_args, metadata: see :class:`FileDataset`.
        schema: ``"training"`` or ``"problem"`` to validate every record on load and save
            against ``docs/contracts.md``; None accepts any objects.
        load_as: ``"records"`` (default) loads the ``list[dict]``; ``"location"`` loads a
            :class:`JsonlLocation` without reading the file (it must exist). ``save`` always
            takes records, so one entry can be written by one pipeline as records and read by
            another as a location.

    Example (catalog.yml)::

        codecontests_train_jsonl:
          type: weighted_mtp.datasets.JsonlDataset
          filepath: s3://bucket/codecontests/train.jsonl
          schema: training
          load_as: location
          credentials: s3_credentials
    """

    def __init__(
        self,
        *,
        filepath: str,
        schema: str | None = None,
        load_as: str = "records",
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            filepath=filepath, credentials=credentials, fs_args=fs_args, metadata=metadata
        )
        check_choice("schema", schema, SCHEMAS, listed=f"{sorted(SCHEMAS)} or None")
        check_choice("load_as", load_as, LOAD_AS)
        self._schema = schema
        self._load_as = load_as

    def _describe(self) -> dict[str, Any]:
        described = {**super()._describe(), "schema": self._schema}
        if self._load_as != "records":
            described["load_as"] = self._load_as
        return described

    def load(self) -> list[dict[str, Any]] | JsonlLocation:
        if self._load_as == "location":
            return self._location()
        with self._fs.open(self._path, "rb") as handle:
            records, numbers = parse_jsonl_lines(handle, self._url)
        if self._schema is not None:
            # Validate with the file's own line numbers in messages.
            check = SCHEMAS[self._schema]
            for record, number in zip(records, numbers, strict=True):
                check(record, self._url, number)
        return records

    def _location(self) -> JsonlLocation:
        # Fail here, naming the file, rather than in a worker process minutes later.
        if not self._fs.exists(self._path):
            raise DatasetError(f"{self._url} does not exist")
        # Absolute: the location is handed to processes that may run in another directory.
        url = os.path.abspath(self._path) if self._protocol == "file" else self._url
        return JsonlLocation(url, deepcopy(self._storage_options))

    def save(self, data: Iterable[dict[str, Any]]) -> None:
        records = list(data)
        if self._schema is not None:
            validate_records(records, self._schema, self._url)
        self._ensure_parent()
        with self._fs.open(self._path, "wb") as handle:
            for record in records:
                handle.write(dumps_line(record) + b"\n")
        self._fs.invalidate_cache(self._path)
