"""Exceptions raised by the converters, the record validators and the metadata checks.

Every error names the file (path or URL, or a catalog name when no path is known), the 1-based
line or row it concerns, and what was expected there, so that a bad input can be fixed without
a debugger.
"""

from __future__ import annotations


class DataError(ValueError):
    """Base class of the data_engineering errors (a ``ValueError``: the input is wrong)."""


class RecordError(DataError):
    """One record (line of a JSONL file, row of a Parquet file) does not follow its schema.

    Attributes:
        path: the file the record came from.
        line: its 1-based line (JSONL) or row (Parquet) number, or None when unknown.
        message: what was wrong and what was expected.
    """

    def __init__(self, path: str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.message = message

    def __reduce__(self):  # noqa: ANN204 - keeps the three-argument constructor picklable
        return (type(self), (self.path, self.line, self.message))


class MalformedJsonError(RecordError):
    """A line of a JSONL file is not UTF-8 JSON, or not a JSON object."""


class UnknownEnumError(RecordError):
    """An enum value (language, source, difficulty) is not in any known numbering."""


class MetadataMismatchError(DataError):
    """A metadata table does not describe its JSONL file (rows, offsets, lengths, checksum).

    Attributes:
        path: the JSONL file.
        row: the 0-based ``row`` value of the first offending table row, or None for a
            whole-file mismatch (row count, checksum).
    """

    def __init__(self, path: str, row: int | None, message: str) -> None:
        where = f"{path}: metadata row {row}" if row is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.row = row
        self.message = message

    def __reduce__(self):  # noqa: ANN204
        return (type(self), (self.path, self.row, self.message))


class TokenizerRoundTripError(DataError):
    """A tokenizer does not give back the exact text of a record after encode -> decode."""
