"""Does a model go with a tokenizer? One check, one exception, for every place that pairs them.

Token ids mean something only for the tokenizer that made them: the data's metadata counts
tokens with the ``tokenizer`` catalog entry, the training workers encode with the model
directory's own ``tokenizer.model``, evaluation encodes prompts with the ``tokenizer`` entry and
Rho-1 compares policy and reference losses id by id. A mismatch is never an error at run time
(every id below ``vocab_size`` is a valid embedding row): it silently trains or evaluates on
garbage. So each pairing is checked before anything runs, and refused with
:class:`TokenizerMismatchError` naming both files and their sizes.

Tokenizers are compared by their serialized SentencePiece model (the bytes of
``tokenizer.model``): the project never re-serializes one, so the same tokenizer is the same
bytes, from the Meta release through data_engineering to every trained model directory.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import sentencepiece as spm

from weighted_mtp.model_io.model_dir import TOKENIZER_FILE, ModelDirectoryError, open_fs


class TokenizerMismatchError(ModelDirectoryError, ValueError):
    """A model and a tokenizer that are used together do not share their vocabulary."""


class _HasProto(Protocol):
    @property
    def model_proto(self) -> bytes: ...


class _DirectoryHandle(Protocol):
    """``ModelDirectory`` and ``HFModelDirectory``: a location and its fsspec options."""

    path: str
    storage_options: dict[str, Any]


def proto_bytes(tokenizer: bytes | _HasProto) -> bytes:
    """The serialized SentencePiece model of a ``Tokenizer`` (or the bytes themselves)."""
    if isinstance(tokenizer, bytes | bytearray):
        return bytes(tokenizer)
    return bytes(tokenizer.model_proto)


def vocab_size_of(proto: bytes) -> int:
    """Number of pieces of a serialized SentencePiece model."""
    return spm.SentencePieceProcessor(model_proto=proto).get_piece_size()


def describe(proto: bytes, source: str) -> str:
    """``"<source> (32000 tokens, sha256 9e556afd44...)"``: what a message shows of a file."""
    digest = hashlib.sha256(proto).hexdigest()[:12]
    return f"{source} ({vocab_size_of(proto)} tokens, sha256 {digest})"


def shipped_tokenizer(model_dir: _DirectoryHandle) -> bytes | None:
    """The ``tokenizer.model`` a model directory ships, or None when it has none."""
    fs, root = open_fs(model_dir.path, model_dir.storage_options)
    path = f"{root}/{TOKENIZER_FILE}"
    if not fs.exists(path):
        return None
    return fs.cat_file(path)


def check_same_tokenizer(
    expected: bytes | _HasProto,
    expected_source: str,
    actual: bytes | _HasProto,
    actual_source: str,
    *,
    hint: str = "",
) -> None:
    """Refuse two tokenizers whose serialized models differ.

    Args:
        expected, actual: ``Tokenizer`` objects or serialized models.
        expected_source, actual_source: where each comes from (a file, a catalog entry), for
            the message.
        hint: what to do about it, appended to the message.

    Raises:
        TokenizerMismatchError: ``"tokenizer mismatch: <file a> (<n> tokens, sha256 ...) differs
            from <file b> (<m> tokens, sha256 ...)"`` + ``hint``.
    """
    a, b = proto_bytes(expected), proto_bytes(actual)
    if a == b:
        return
    message = (
        f"tokenizer mismatch: {describe(a, expected_source)} differs from "
        f"{describe(b, actual_source)}"
    )
    raise TokenizerMismatchError(f"{message}; {hint}" if hint else message)


def check_vocab_size(
    tokenizer: bytes | _HasProto,
    tokenizer_source: str,
    vocab_size: int,
    model_source: str,
    *,
    hint: str = "",
) -> None:
    """Refuse a tokenizer whose size differs from a model's ``vocab_size``.

    Raises:
        TokenizerMismatchError: naming the tokenizer file, the model file and both sizes.
    """
    proto = proto_bytes(tokenizer)
    size = vocab_size_of(proto)
    if size == vocab_size:
        return
    message = (
        f"tokenizer mismatch: {describe(proto, tokenizer_source)} does not fit "
        f"{model_source}, whose vocab_size is {vocab_size}"
    )
    raise TokenizerMismatchError(f"{message}; {hint}" if hint else message)


def check_model_tokenizer(
    model_dir: _DirectoryHandle,
    tokenizer: bytes | _HasProto,
    tokenizer_source: str,
    *,
    vocab_size: int | None = None,
    vocab_source: str | None = None,
    require_shipped: bool = False,
    hint: str = "",
) -> None:
    """Refuse a tokenizer that differs from the one a model directory ships.

    Args:
        model_dir: a ``ModelDirectory`` or ``HFModelDirectory`` handle (local or remote).
        tokenizer: the tokenizer used with the model (``Tokenizer`` or serialized model).
        tokenizer_source: where ``tokenizer`` comes from, for the message.
        vocab_size: the model's ``vocab_size``, when known; checked against the tokenizer.
        vocab_source: where ``vocab_size`` was read (default ``<model_dir>/params.json``).
        require_shipped: a directory without ``tokenizer.model`` is an error (the training
            workers encode with it), not just a vocab-size check.
        hint: what to do about a mismatch, appended to the message.

    Raises:
        TokenizerMismatchError: the shipped tokenizer or the vocabulary size differs.
        FileNotFoundError: ``require_shipped`` and the directory has no ``tokenizer.model``.
    """
    if vocab_size is not None:
        check_vocab_size(
            tokenizer,
            tokenizer_source,
            vocab_size,
            vocab_source or f"{model_dir.path}/params.json",
            hint=hint,
        )
    shipped = shipped_tokenizer(model_dir)
    if shipped is None:
        if require_shipped:
            raise FileNotFoundError(
                f"{model_dir.path}/{TOKENIZER_FILE} does not exist: a model directory must ship "
                f"the tokenizer it was trained with"
            )
        return
    check_same_tokenizer(
        tokenizer,
        tokenizer_source,
        shipped,
        f"{model_dir.path}/{TOKENIZER_FILE}",
        hint=hint,
    )
