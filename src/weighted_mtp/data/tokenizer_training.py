"""SentencePiece tokenizers for micro models, trained on the training corpus.

The trained model keeps text byte-exact: identity normalisation, no dummy prefix, no removal
of repeated whitespace, byte fallback for unseen characters, and user-defined pieces for a
newline and for runs of spaces (Python indentation), so ``decode(encode(text)) == text`` for
any string and ``encode(a) + encode(b)`` decodes to ``a + b``. :func:`check_round_trip` proves
it on every record before the tokenizer is used.

A pretrained model's own ``tokenizer.model`` (e.g. LLaMA's, for the 7B MTP model) is taken as
is instead when a path is given.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import fsspec
import sentencepiece as spm

from weighted_mtp.data.errors import TokenizerRoundTripError
from weighted_mtp.data.prompt import format_prompt
from weighted_mtp.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

#: unk, bos, eos: LLaMA's ids, so code written for LLaMA's tokenizer works on micro models.
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
_N_BYTE_PIECES = 256
_SPACE = "\u2581"  # SentencePiece's escaped whitespace


def corpus_texts(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The texts a model trained on ``records`` sees: each formatted prompt and each output."""
    for record in records:
        yield format_prompt(record["instruction"], record["input"])
        yield record["output"]


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int,
    model_type: str = "bpe",
    space_runs: Sequence[int] = (2, 4, 8, 16),
    num_threads: int = 1,
    max_sentence_length: int = 1 << 20,
    character_coverage: float = 0.9995,
) -> Tokenizer:
    """Train a byte-exact SentencePiece model on ``texts``.

    Args:
        texts: training texts (whole documents; newlines are pieces of their own).
        vocab_size: the target size. Byte fallback alone takes 256 pieces plus 3 specials, so it
            must be above 259 + the user-defined pieces; a corpus too small for the target gives
            fewer pieces (``Tokenizer.vocab_size`` is the truth).
        model_type: ``bpe`` or ``unigram``.
        space_runs: runs of this many spaces become single user-defined pieces (indentation).
        num_threads: trainer threads; 1 keeps the result identical from run to run.
        max_sentence_length: bytes; longer texts would be skipped by the trainer.
        character_coverage: fraction of the corpus' characters that get pieces of their own;
            the rarest others are spelled in bytes (still exact), which keeps small vocabularies
            possible on multilingual text.

    Returns:
        The :class:`~weighted_mtp.data.tokenizer.Tokenizer`.
    """
    # SentencePiece matches user-defined pieces after replacing spaces by U+2581, so runs of
    # spaces must be given in that form (plain spaces would never match).
    user_symbols = ["\n", *(_SPACE * n for n in sorted(set(space_runs)) if n > 1)]
    floor = _N_BYTE_PIECES + 3 + len(user_symbols)
    if vocab_size <= floor:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: byte fallback, specials and "
            f"{len(user_symbols)} user-defined pieces already take {floor}"
        )
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            byte_fallback=True,
            character_coverage=character_coverage,
            user_defined_symbols=user_symbols,
            max_sentence_length=max_sentence_length,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_id=-1,
            # A micro corpus may not support the target size: fewer pieces, not a failure.
            hard_vocab_limit=False,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as exc:
        if "required_chars" not in str(exc):
            raise
        raise ValueError(
            f"vocab_size {vocab_size} cannot hold the characters the corpus needs at "
            f"character_coverage {character_coverage}: raise vocab_size or lower the "
            f"coverage ({exc})"
        ) from exc
    tokenizer = Tokenizer(model.getvalue(), source="<trained>")
    logger.info(
        "trained a %s SentencePiece model: %d pieces (target %d)",
        model_type,
        tokenizer.vocab_size,
        vocab_size,
    )
    return tokenizer


def load_tokenizer(path: str, storage_options: dict[str, Any] | None = None) -> Tokenizer:
    """A ``tokenizer.model`` from a local path or fsspec URL (``s3://``: credentials from
    ``storage_options`` or boto's chain).

    Raises:
        FileNotFoundError: the file does not exist, naming it.
    """
    try:
        with fsspec.open(path, "rb", **(storage_options or {})) as handle:
            return Tokenizer(handle.read(), source=path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"pretrained tokenizer {path} does not exist (expected a SentencePiece "
            f"tokenizer.model, e.g. the one in the base model directory)"
        ) from exc


def check_round_trip(
    tokenizer: Tokenizer, records: Sequence[dict[str, Any]], *, source: str = "<records>"
) -> None:
    """Raise unless ``decode(encode(x)) == x`` for every text field of every record.

    Raises:
        TokenizerRoundTripError: naming the record (1-based line of ``source``), its task_id,
            the field and the first differing character.
    """
    fields = ("instruction", "input", "output")
    for line, record in enumerate(records, start=1):
        texts = [record[f] for f in fields]
        for field, text, ids in zip(fields, texts, tokenizer.encode_batch(texts), strict=True):
            back = tokenizer.decode(ids)
            if back != text:
                at = next(
                    (i for i, (a, b) in enumerate(zip(text, back, strict=False)) if a != b),
                    min(len(text), len(back)),
                )
                raise TokenizerRoundTripError(
                    f"{source}:{line}: task {record.get('task_id')!r}, field {field!r}: "
                    f"decode(encode(text)) differs from the text at character {at} "
                    f"({text[at : at + 20]!r} became {back[at : at + 20]!r})"
                )


def build_tokenizer(
    records: Sequence[dict[str, Any]],
    *,
    vocab_size: int,
    pretrained_path: str | None = None,
    storage_options: dict[str, Any] | None = None,
    model_type: str = "bpe",
    space_runs: Sequence[int] = (2, 4, 8, 16),
    num_threads: int = 1,
) -> Tokenizer:
    """Train a tokenizer on ``records`` (and prove the round trip on each), or load
    ``pretrained_path`` (a path or fsspec URL, opened with ``storage_options``) when given.

    A pretrained tokenizer is checked too, but only logged: LLaMA's adds a dummy prefix and is
    not byte-exact on leading spaces by design, and the model was trained with it as it is.
    """
    if pretrained_path:
        tokenizer = load_tokenizer(pretrained_path, storage_options)
        try:
            check_round_trip(tokenizer, records, source="training records")
        except TokenizerRoundTripError as exc:
            logger.warning("pretrained tokenizer %s is not byte-exact: %s", pretrained_path, exc)
        return tokenizer
    tokenizer = train_tokenizer(
        corpus_texts(records),
        vocab_size=vocab_size,
        model_type=model_type,
        space_runs=space_runs,
        num_threads=num_threads,
    )
    check_round_trip(tokenizer, records, source="training records")
    return tokenizer
