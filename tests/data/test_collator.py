"""Collator: exact prompt/output boundary, labels and attention, padding, truncation policy."""

from __future__ import annotations

import pickle

import pytest
import sentencepiece as spm
import torch

from weighted_mtp.data.collator import (
    IGNORE_INDEX,
    PromptOutputCollator,
    RecordFormatError,
    shift_labels,
)
from weighted_mtp.data.prompt import format_prompt
from weighted_mtp.data.tokenizer import Tokenizer

CORPUS = [
    "Below is an instruction that describes a task. Write a response that completes the request.",
    "### Instruction:",
    "### Response:",
    "Read two integers a and b from standard input and print their sum.",
    "Given a list of n numbers, print the largest one.",
    "def solve():\n    a, b = map(int, input().split())\n    print(a + b)",
    "n = int(input())\nxs = list(map(int, input().split()))\nprint(max(xs))",
    "for i in range(n):\n    if xs[i] % 2 == 0:\n        total += xs[i]",
    "import sys\ninput = sys.stdin.readline",
    "The first line contains t, the number of test cases.",
    "Output a single integer, the answer modulo 10^9 + 7.",
    "while left < right:\n    mid = (left + right) // 2",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    root = tmp_path_factory.mktemp("spm")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 4) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(root / "tok"),
        vocab_size=400,  # byte_fallback alone takes 256 pieces
        model_type="bpe",
        add_dummy_prefix=False,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return Tokenizer.from_file(root / "tok.model")


def record(instruction: str, output: str, *, is_correct: bool = True, input: str = "") -> dict:  # noqa: A002
    return {
        "instruction": instruction,
        "input": input,
        "output": output,
        "task_id": "t",
        "is_correct": is_correct,
        "metadata": {"source": "test", "difficulty": 1, "has_tests": True},
    }


def test_labels_attention_and_padding(tokenizer: Tokenizer) -> None:
    records = [
        record("Print the sum.", "print(a + b)"),
        record(
            "Read n numbers and print the largest one, then stop.",
            "print(max(xs))",
            is_correct=False,
        ),
        record("Add.", "x = 1\nprint(x)", input="1 2"),
    ]
    batch = PromptOutputCollator(tokenizer, max_length=512)(records)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.dtype == labels.dtype == torch.long and mask.dtype == torch.bool
    assert batch["is_correct"].tolist() == [True, False, True]

    lengths = []
    for b, r in enumerate(records):
        prompt = [tokenizer.bos_id, *tokenizer.encode(format_prompt(r["instruction"], r["input"]))]
        output = [*tokenizer.encode(r["output"]), tokenizer.eos_id]
        n = len(prompt) + len(output)
        lengths.append(n)
        assert ids[b, :n].tolist() == prompt + output
        assert labels[b, : len(prompt)].eq(IGNORE_INDEX).all()
        assert labels[b, len(prompt) : n].tolist() == output
        assert labels[b, n:].eq(IGNORE_INDEX).all()
        assert mask[b, :n].all() and not mask[b, n:].any()
        assert ids[b, n:].eq(tokenizer.pad_id).all()
        # The output span decodes to exactly the output: the boundary is exact.
        assert tokenizer.decode(labels[b, len(prompt) : n - 1].tolist()) == r["output"]
    # Right padding to the longest sequence of the batch, not to max_length.
    assert ids.shape == (3, max(lengths))
    assert len(set(lengths)) == 3


def test_shift_labels_matches_next_token_semantics(tokenizer: Tokenizer) -> None:
    batch = PromptOutputCollator(tokenizer, max_length=512)(
        [record("Print the sum.", "print(a + b)"), record("Add two numbers please.", "print(1)")]
    )
    labels = batch["labels"]
    targets, mask = shift_labels(labels)
    assert targets.shape == mask.shape == labels.shape and mask.dtype == torch.bool
    for b in range(2):
        out = (labels[b] != IGNORE_INDEX).nonzero().flatten()
        first, last = out[0].item(), out[-1].item()
        # Position t predicts token t+1: the span runs from the last prompt position to the
        # position whose target is the final EOS.
        assert mask[b].nonzero().flatten().tolist() == list(range(first - 1, last))
        assert targets[b, last - 1].item() == tokenizer.eos_id
        assert (
            targets[b, first - 1 : last].tolist()
            == batch["input_ids"][b, first : last + 1].tolist()
        )
        assert targets[b, ~mask[b]].eq(0).all()
    # Head k (offset k + 1) is the next-token view shifted by k more.
    t3, m3 = shift_labels(labels, 3)
    assert torch.equal(m3[:, :-2], mask[:, 2:]) and not m3[:, -3:].any()
    assert torch.equal(t3[:, :-2], targets[:, 2:])


def test_prompt_truncated_from_left_keeping_bos(tokenizer: Tokenizer) -> None:
    r = record(
        "Read two integers a and b from standard input and print their sum. " * 4, "print(a + b)"
    )
    prompt = tokenizer.encode(format_prompt(r["instruction"]))
    output = [*tokenizer.encode(r["output"]), tokenizer.eos_id]
    max_length = len(output) + 11
    collator = PromptOutputCollator(tokenizer, max_length=max_length)
    batch = collator([r])
    ids = batch["input_ids"][0].tolist()
    assert len(ids) == max_length
    # BOS, then the last 10 prompt tokens (the "### Response:" header survives), then the output.
    assert ids == [tokenizer.bos_id, *prompt[-10:], *output]
    assert tokenizer.decode(prompt[-10:]).endswith("### Response:\n")
    assert batch["labels"][0].ne(IGNORE_INDEX).sum().item() == len(output)
    assert collator.stats.prompts_truncated == 1 and collator.stats.outputs_truncated == 0


def test_output_too_long_truncate_or_skip(tokenizer: Tokenizer) -> None:
    long_output = "for i in range(n):\n    total += xs[i]\n" * 6
    short = record("Add.", "print(1)")
    records = [record("Sum the even numbers.", long_output, is_correct=False), short]
    output = tokenizer.encode(long_output)
    max_length = 24
    assert len(output) + 1 > max_length - 1

    truncating = PromptOutputCollator(tokenizer, max_length=max_length, overflow="truncate")
    batch = truncating(records)
    assert batch["input_ids"].shape[0] == 2
    assert batch["input_ids"][0].tolist() == [tokenizer.bos_id, *output[: max_length - 1]]
    assert batch["labels"][0, 0].item() == IGNORE_INDEX
    assert batch["labels"][0, 1:].tolist() == output[: max_length - 1]
    assert truncating.stats.outputs_truncated == 1

    skipping = PromptOutputCollator(tokenizer, max_length=max_length, overflow="skip")
    batch = skipping(records)
    assert batch["input_ids"].shape[0] == 1 and batch["is_correct"].tolist() == [True]
    assert batch["input_ids"][0, 0].item() == tokenizer.bos_id
    assert skipping.stats.skipped == 1 and skipping.stats.records == 2
    empty = skipping(records[:1])
    assert empty["input_ids"].shape == (0, 0) and empty["labels"].shape == (0, 0)
    assert skipping.stats.skipped == 2


def test_pad_to_multiple_and_pickle(tokenizer: Tokenizer) -> None:
    collator = PromptOutputCollator(tokenizer, max_length=256, pad_to_multiple_of=16)
    batch = collator([record("Add.", "print(1)")])
    assert batch["input_ids"].shape[1] % 16 == 0
    clone = pickle.loads(pickle.dumps(collator))
    assert torch.equal(clone([record("Add.", "print(1)")])["input_ids"], batch["input_ids"])


def test_bad_record_names_field(tokenizer: Tokenizer) -> None:
    collator = PromptOutputCollator(tokenizer, max_length=64)
    with pytest.raises(RecordFormatError, match=r"record 1 .*'output' is missing"):
        collator([record("a", "b"), {"instruction": "x", "task_id": "cc/1"}])
    with pytest.raises(RecordFormatError, match="'instruction' is int"):
        collator([{"instruction": 3, "output": "x"}])
