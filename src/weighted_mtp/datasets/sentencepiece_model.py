"""``TokenizerDataset``: a SentencePiece ``tokenizer.model`` file <-> a ``Tokenizer``."""

from __future__ import annotations

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.datasets.jsonl import FileDataset


class TokenizerDataset(FileDataset):
    """A ``tokenizer.model`` (local or fsspec URL) as a
    :class:`~weighted_mtp.data.tokenizer.Tokenizer`; saving writes the model proto bytes as
    they are, so the file's checksum is that of ``tokenizer.model_proto``.

    Args: see :class:`~weighted_mtp.datasets.jsonl.FileDataset`.
    """

    def load(self) -> Tokenizer:
        with self._fs.open(self._path, "rb") as handle:
            return Tokenizer(handle.read(), source=self._url)

    def save(self, data: Tokenizer) -> None:
        self._ensure_parent()
        with self._fs.open(self._path, "wb") as handle:
            handle.write(data.model_proto)
        self._fs.invalidate_cache(self._path)
