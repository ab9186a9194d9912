"""Tiny models and tokenizers for tests: small ``ModelArgs``, a seeded ``MTPTransformer`` and a
SentencePiece model trained in memory."""

from __future__ import annotations

import io

import sentencepiece as spm
import torch

from weighted_mtp.models.args import ModelArgs
from weighted_mtp.models.transformer import MTPTransformer


def tiny_args(**overrides) -> ModelArgs:
    """3 blocks of width 32 (4 query / 2 KV heads), vocab 64, 2 future tokens, 32 positions;
    ``overrides`` replace any field."""
    base = dict(
        dim=32,
        n_layers=3,
        n_heads=4,
        n_kv_heads=2,
        vocab_size=64,
        multiple_of=16,
        n_future_tokens=2,
        max_seq_len=32,
    )
    base.update(overrides)
    return ModelArgs(**base)


def tiny_model(**overrides) -> MTPTransformer:
    """``MTPTransformer(tiny_args(**overrides))`` initialised under seed 0, in eval mode."""
    torch.manual_seed(0)
    return MTPTransformer(tiny_args(**overrides)).eval()


def train_sentencepiece(text: list[str], vocab_size: int) -> bytes:
    """A serialized BPE SentencePiece model of ``vocab_size`` pieces trained on ``text``."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text),
        model_writer=out,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return out.getvalue()
