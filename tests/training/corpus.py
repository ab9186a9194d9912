"""A tiny but real training world for the training tests: synthetic CodeContests rows through
the real converter, a JSONL written with the real serialiser, its metadata table, a trained
SentencePiece tokenizer, a micro MTP model directory and a micro reference directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from weighted_mtp.data.codecontests import convert_codecontests
from weighted_mtp.data.metadata import build_metadata
from weighted_mtp.data.records import dumps_line
from weighted_mtp.data.synthetic import generate_codecontests_rows
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.data.tokenizer_training import corpus_texts, train_tokenizer
from weighted_mtp.model_io.micro import build_micro_mtp, build_micro_reference
from weighted_mtp.model_io.model_dir import save_model_dir
from weighted_mtp.model_io.reference import save_reference_model
from weighted_mtp.models import ModelArgs


@dataclass
class Corpus:
    root: Path
    train_jsonl: Path
    valid_jsonl: Path
    train_metadata: pd.DataFrame
    valid_metadata: pd.DataFrame
    tokenizer: Tokenizer
    model_dir: Path
    reference_dir: Path


def _write(records: list[dict], path: Path) -> None:
    with path.open("wb") as handle:
        for record in records:
            handle.write(dumps_line(record) + b"\n")


def build_corpus(root: Path, *, n_train_tasks: int = 12, dim: int = 32) -> Corpus:
    root.mkdir(parents=True, exist_ok=True)
    train = convert_codecontests(
        generate_codecontests_rows(n_train_tasks, seed=3, split="train"), source_file="train"
    ).records
    valid = convert_codecontests(
        generate_codecontests_rows(4, seed=4, split="valid"), source_file="valid", split="valid"
    ).records
    tokenizer = train_tokenizer(corpus_texts(train + valid), vocab_size=512)
    train_path, valid_path = root / "train.jsonl", root / "valid.jsonl"
    _write(train, train_path)
    _write(valid, valid_path)
    args = ModelArgs(
        dim=dim,
        n_layers=5,
        n_heads=4,
        n_kv_heads=2,
        vocab_size=tokenizer.vocab_size,
        multiple_of=16,
        n_future_tokens=4,
        max_seq_len=1024,
    )
    model_dir = root / "micro-mtp"
    save_model_dir(build_micro_mtp(args, seed=0), args, tokenizer, model_dir, origin="test")
    reference_dir = root / "micro-ref"
    reference = build_micro_reference(
        tokenizer.vocab_size,
        dim=32,
        n_layers=1,
        seed=1,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
    )
    save_reference_model(reference, reference_dir, tokenizer=tokenizer)
    return Corpus(
        root=root,
        train_jsonl=train_path,
        valid_jsonl=valid_path,
        train_metadata=build_metadata(train, tokenizer),
        valid_metadata=build_metadata(valid, tokenizer),
        tokenizer=tokenizer,
        model_dir=model_dir,
        reference_dir=reference_dir,
    )
