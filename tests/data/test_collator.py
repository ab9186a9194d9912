"""Collator: exact prompt/output boundary, labels and attention, padding, length policy."""

from __future__ import annotations

import pickle

import pytest
import sentencepiece as spm
import torch

from weighted_mtp.alignment import IGNORE_INDEX, head_view, shift_labels, target_mask
from weighted_mtp.data.collator import PromptOutputCollator, RecordFormatError
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


def last_valid_targets(targets: torch.Tensor) -> list[int]:
    """The target at the last valid position of each row of a target view."""
    mask = target_mask(targets)
    last = mask.shape[1] - 1 - mask.flip(1).int().argmax(1)
    assert mask.any(1).all()
    return targets[torch.arange(len(targets)), last].tolist()


def test_target_view_runs_from_last_prompt_position_to_eos(tokenizer: Tokenizer) -> None:
    records = [record("Print the sum.", "print(a + b)"), record("Add two numbers please.", "1")]
    batch = PromptOutputCollator(tokenizer, max_length=512)(records)
    ids, labels = batch["input_ids"], batch["labels"]
    targets = shift_labels(labels)
    mask = target_mask(targets)
    assert targets.shape == labels.shape
    for b, r in enumerate(records):
        n_prompt = 1 + len(tokenizer.encode(format_prompt(r["instruction"])))  # BOS included
        n = int(batch["attention_mask"][b].sum())
        # Position t predicts token t+1: valid targets from the last prompt position (which
        # predicts the first output token) to position n-2, whose target is the final EOS.
        assert mask[b].nonzero().flatten().tolist() == list(range(n_prompt - 1, n - 1))
        assert targets[b, n_prompt - 1 : n - 1].tolist() == ids[b, n_prompt:n].tolist()
        assert targets[b, n - 2].item() == tokenizer.eos_id
        assert targets[b, ~mask[b]].eq(IGNORE_INDEX).all()
    # Head k at position t predicts token t+k+1, read at index t+k of the same (once-shifted)
    # view: head_view(targets, k)[:, t].
    for k in range(1, 4):
        view = head_view(targets, k)
        assert view.shape[1] == labels.shape[1] - k
        assert torch.equal(view, targets[:, k:])
        for b in range(len(records)):
            t = int(target_mask(view[b : b + 1])[0].nonzero()[0])
            assert view[b, t].item() == ids[b, t + k + 1].item()


def test_every_row_ends_with_eos(tokenizer: Tokenizer) -> None:
    long_prompt = "Read two integers a and b from standard input and print their sum. " * 6
    records = [
        record("Print the sum.", "print(a + b)"),
        record(long_prompt, "def solve():\n    a, b = map(int, input().split())\n    print(a + b)"),
        record("Add.", "for i in range(n):\n    total += xs[i]\n" * 8),  # skipped
        record("Add.", ""),  # an empty output is its EOS alone
    ]
    collator = PromptOutputCollator(tokenizer, max_length=40, pad_to_multiple_of=8)
    batch = collator(records)
    assert batch["input_ids"].shape[0] == 3 and collator.stats.skipped == 1
    labels = batch["labels"]
    valid = labels != IGNORE_INDEX
    last = labels.shape[1] - 1 - valid.flip(1).int().argmax(1)
    assert labels[torch.arange(3), last].eq(tokenizer.eos_id).all()
    assert last_valid_targets(shift_labels(labels)) == [tokenizer.eos_id] * 3


def test_prompt_truncated_from_left_keeping_bos_and_header(tokenizer: Tokenizer) -> None:
    r = record(
        "Read two integers a and b from standard input and print their sum. " * 4, "print(a + b)"
    )
    prompt = tokenizer.encode(format_prompt(r["instruction"]))
    header = tokenizer.encode("### Response:\n")
    output = [*tokenizer.encode(r["output"]), tokenizer.eos_id]
    max_length = len(output) + 11
    collator = PromptOutputCollator(tokenizer, max_length=max_length)
    batch = collator([r])
    ids = batch["input_ids"][0].tolist()
    assert len(ids) == max_length
    # BOS, then the last 10 prompt tokens (the "### Response:" header survives), then the output.
    assert ids == [tokenizer.bos_id, *prompt[-10:], *output]
    assert tokenizer.decode(prompt[-10:]).endswith("### Response:\n")
    assert ids[1 + 10 - len(header) : 1 + 10] == header
    assert batch["labels"][0].ne(IGNORE_INDEX).sum().item() == len(output)
    assert batch["labels"][0, -1].item() == tokenizer.eos_id
    assert collator.stats.prompts_truncated == 1 and collator.stats.skipped == 0


def test_over_long_output_is_skipped_never_truncated(tokenizer: Tokenizer) -> None:
    long_output = "for i in range(n):\n    total += xs[i]\n" * 6
    short = record("Add.", "print(1)")
    records = [record("Sum the even numbers.", long_output, is_correct=False), short]
    output = tokenizer.encode(long_output)
    max_length = 24
    assert len(output) + 1 > max_length - 1

    collator = PromptOutputCollator(tokenizer, max_length=max_length)
    batch = collator(records)
    assert batch["input_ids"].shape[0] == 1 and batch["is_correct"].tolist() == [True]
    assert batch["input_ids"][0, 0].item() == tokenizer.bos_id
    kept_labels = batch["labels"][0]
    assert tokenizer.decode(kept_labels[kept_labels >= 0].tolist()[:-1]) == "print(1)"
    assert collator.stats.skipped == 1 and collator.stats.records == 2
    empty = collator(records[:1])
    assert empty["input_ids"].shape == (0, 0) and empty["labels"].shape == (0, 0)
    assert collator.stats.skipped == 2

    # Exactly at the limit (BOS + output + EOS == max_length) the output is kept whole and the
    # prompt is dropped entirely; one token less and it is skipped.
    exact = PromptOutputCollator(tokenizer, max_length=len(output) + 2)
    kept = exact([records[0]])
    assert kept["input_ids"][0].tolist() == [tokenizer.bos_id, *output, tokenizer.eos_id]
    assert exact.stats.prompts_truncated == 1 and exact.stats.skipped == 0
    short_by_one = PromptOutputCollator(tokenizer, max_length=len(output) + 1)
    assert short_by_one([records[0]])["input_ids"].shape == (0, 0)
    assert short_by_one.stats.skipped == 1

    # The truncating mode is gone, not ignored.
    with pytest.raises(TypeError, match="overflow"):
        PromptOutputCollator(tokenizer, max_length, overflow="truncate")  # type: ignore[call-arg]


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


def _with_span(rec: dict, span: list[int] | None) -> dict:
    return {**rec, "metadata": {**rec["metadata"], "bug_span": span}}


def test_bug_mask_marks_the_output_tokens_overlapping_the_span(tokenizer: Tokenizer) -> None:
    # "é" is not in the corpus: byte-fallback pieces, one of which covers no byte of its own.
    output = "n = int(input())\nif n >= 2:\n    print('é', n)\n"
    start = output.index(">=")
    records = [
        _with_span(record("Read n.", output, is_correct=False), [start, start + 2]),
        record("Read n.", "print(1)\n"),
        _with_span(record("Read n.", output, is_correct=False), [output.index("é"), len(output)]),
    ]
    batch = PromptOutputCollator(tokenizer, 256)(records)
    bug = batch["bug_mask"]
    assert bug.shape == batch["labels"].shape and bug.dtype == torch.bool
    assert not bug[1].any()
    assert not (bug & (batch["labels"] == IGNORE_INDEX)).any()  # output tokens only
    prompt_len = int((batch["labels"][0] == IGNORE_INDEX).cumprod(0).sum())
    ids = batch["input_ids"][0]
    # Slow reference: token j is in the span when the text of tokens < j ends before the
    # span's end and the text of tokens <= j reaches past its start.
    for row, span in ((0, (start, start + 2)), (2, (output.index("é"), len(output)))):
        n_out = int((batch["labels"][row] != IGNORE_INDEX).sum()) - 1  # without EOS
        out_ids = batch["input_ids"][row, prompt_len : prompt_len + n_out].tolist()
        expected = []
        for j in range(n_out):
            before = len(tokenizer.decode(out_ids[:j]).encode())
            through = len(tokenizer.decode(out_ids[: j + 1]).encode())
            lo = len(output[: span[0]].encode())
            hi = len(output[: span[1]].encode())
            expected.append(before < hi and max(through, before + 1) > lo)
        got = bug[row, prompt_len : prompt_len + n_out].tolist()
        assert got == expected and any(got)
        assert not bug[row, prompt_len + n_out :].any()  # never the EOS
    picked = tokenizer.decode(ids[bug[0]].tolist())
    assert ">=" in picked and "print" not in picked

    shifted = shift_labels(bug.long(), 0).bool()  # what BatchReader puts into Batch.extras
    assert torch.equal(shifted[:, :-1], bug[:, 1:])

    with pytest.raises(RecordFormatError, match="metadata.bug_span"):
        PromptOutputCollator(tokenizer, 256)([_with_span(record("x", "ab\n"), [2, 9])])
    assert "bug_mask" not in PromptOutputCollator(tokenizer, 256)([record("x", "ab\n")])
