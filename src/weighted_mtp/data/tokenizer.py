"""A thin, picklable wrapper over a SentencePiece model (LLaMA's tokenizer format)."""

from __future__ import annotations

from pathlib import Path

import sentencepiece as spm


class Tokenizer:
    """SentencePiece tokenizer with LLaMA conventions (BOS/EOS ids from the model).

    ``pad_id`` falls back to ``eos_id`` when the model defines no pad piece
    (LLaMA's does not); padding is always masked, so the choice is harmless.
    """

    def __init__(self, model_proto: bytes, *, source: str = "<bytes>") -> None:
        self.source = source
        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        return cls(path.read_bytes(), source=str(path))

    @property
    def model_proto(self) -> bytes:
        return self._proto

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    @property
    def pad_id(self) -> int:
        pad = self._sp.pad_id()
        return pad if pad >= 0 else self.eos_id

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self._sp.encode(text)
        if bos:
            ids = [self.bos_id, *ids]
        if eos:
            ids = [*ids, self.eos_id]
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(texts)

    def token_byte_spans(self, text: str) -> list[tuple[int, int]]:
        """``[(begin, end), ...]``: the UTF-8 byte range of ``text`` each token of
        ``encode(text)`` covers (a byte-fallback piece that starts a character covers none)."""
        proto = self._sp.encode(text, out_type="proto")
        return [(piece.begin, piece.end) for piece in proto.pieces]

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(list(ids))

    def __getstate__(self) -> dict:
        return {"proto": self._proto, "source": self.source}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["proto"], source=state["source"])
