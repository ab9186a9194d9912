"""Trained micro tokenizers are byte-exact on every record; pretrained ones are copied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from weighted_mtp.data.errors import TokenizerRoundTripError
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.data.tokenizer_training import (
    BOS_ID,
    EOS_ID,
    build_tokenizer,
    check_round_trip,
    corpus_texts,
    train_tokenizer,
)
from weighted_mtp.datasets import TokenizerDataset

PROGRAMS = [
    "def f(x):\n    if x:\n        return x * 2\n    return 0\n",
    "class A:\n\tdef g(self):\n\t\treturn 'tabs'\n",
    "s = input()\n\n\nprint(s[::-1])   # trailing spaces   \n",
    "print('héllo 世界 🚀')\r\n",
    "   leading spaces and a final space ",
    "x=1\n" * 20,
]


def make_records() -> list[dict[str, Any]]:
    return [
        {
            "instruction": f"Solve problem {i}:\n  keep   the  spacing.\n\tTabbed line.",
            "input": "" if i % 2 else "3\n1 2 3\n",
            "output": program,
            "task_id": f"t/{i}",
            "is_correct": True,
            "metadata": {"source": "test", "difficulty": 0, "has_tests": True},
        }
        for i, program in enumerate(PROGRAMS)
    ]


@pytest.fixture(scope="module")
def trained() -> Tokenizer:
    return build_tokenizer(make_records() * 3, vocab_size=400)


def test_round_trip_is_exact_on_every_record_and_unseen_text(trained: Tokenizer) -> None:
    records = make_records()
    check_round_trip(trained, records)
    for record in records:
        for text in (record["instruction"], record["input"], record["output"]):
            assert trained.decode(trained.encode(text)) == text
    unseen = "ĳ ∮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢\x00\x7f\u2028  \t \n"  # byte fallback covers these
    assert trained.decode(trained.encode(unseen)) == unseen


def test_concatenation_and_no_dummy_prefix(trained: Tokenizer) -> None:
    a, b = "def f():\n", "    return 1\n"
    assert trained.decode(trained.encode(a) + trained.encode(b)) == a + b
    assert trained.decode(trained.encode(" x")) == " x"


def test_indentation_runs_are_single_pieces(trained: Tokenizer) -> None:
    newline = trained.encode("\n")
    assert len(newline) == 1
    assert len(trained.encode(" " * 4)) == 1
    assert len(trained.encode(" " * 8)) == 1
    assert len(trained.encode(" " * 16)) == 1


def test_specials_follow_llama(trained: Tokenizer) -> None:
    assert (trained.bos_id, trained.eos_id) == (BOS_ID, EOS_ID)
    ids = trained.encode("x", bos=True, eos=True)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert trained.pad_id == EOS_ID  # no pad piece


def test_vocab_size_is_a_parameter() -> None:
    texts = list(corpus_texts(make_records())) * 20
    small = train_tokenizer(texts, vocab_size=340)
    large = train_tokenizer(texts, vocab_size=420)
    assert small.vocab_size == 340
    assert 340 < large.vocab_size <= 420
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(texts, vocab_size=260)
    # Bytes + specials + user pieces + the corpus' characters do not fit in 300.
    with pytest.raises(ValueError, match="cannot hold the characters"):
        train_tokenizer(texts, vocab_size=300)


def test_training_is_deterministic() -> None:
    texts = list(corpus_texts(make_records())) * 5
    assert train_tokenizer(texts, vocab_size=360).model_proto == (
        train_tokenizer(texts, vocab_size=360).model_proto
    )


def test_round_trip_failure_names_the_record(trained: Tokenizer) -> None:
    class Lossy:
        """A tokenizer that drops tabs, as a whitespace-normalising one would."""

        def encode_batch(self, texts: list[str]) -> list[str]:
            return [t.replace("\t", "") for t in texts]

        def decode(self, ids: str) -> str:
            return ids

    records = make_records()
    with pytest.raises(TokenizerRoundTripError, match=r"corpus:1: task 't/0', field 'instruction'"):
        check_round_trip(Lossy(), records, source="corpus")  # type: ignore[arg-type]


def test_pretrained_path_copies_the_model(tmp_path: Path, trained: Tokenizer) -> None:
    path = tmp_path / "model" / "tokenizer.model"
    TokenizerDataset(filepath=str(path)).save(trained)
    copied = build_tokenizer(make_records(), vocab_size=10_000, pretrained_path=str(path))
    assert copied.model_proto == trained.model_proto
    assert copied.vocab_size == trained.vocab_size
