"""Batches of training records: Alpaca prompt + output, prompt positions masked out of the loss.

Each record (``docs/contracts.md``) becomes ``[BOS] + encode(format_prompt(instruction, input))
+ encode(output) + [EOS]``. Prompt and output are tokenized separately and concatenated, so the
boundary between them is exact (no token straddles it) and the label span is exactly the output
and its EOS.

Label alignment (:mod:`weighted_mtp.alignment`, the one definition shared with the loss and the
weighting): ``labels`` are unshifted, Hugging Face style, aligned with ``input_ids``:
``labels[b, t] == input_ids[b, t]`` where token t belongs to the output or is the final EOS, and
``IGNORE_INDEX`` (-100) on the prompt (BOS included) and on padding. The collator never shifts.
The target view is ``weighted_mtp.alignment.shift_labels(labels)``: ``targets[:, t]`` is the
token position t predicts with head 0 (token t+1), valid from the last prompt position to the
position whose target is the final EOS (``alignment.target_mask``, the ``mask`` of the TD and
Rho-1 functions). Head k at position t predicts token t+k+1 and uses index t+k of that one target
view (``alignment.head_view(targets, k)``), not a view shifted again per head.

Length policy (``max_length``, counted in tokens including BOS and EOS): an output is never cut,
since the reward of an output sits on its EOS and a cut output would carry it on an arbitrary
token. A record whose output and EOS do not fit beside BOS is skipped (dropped from the batch)
and counted in ``stats.skipped``. An over-long prompt loses tokens from its left, right after
BOS (the instruction's beginning goes; the ``### Response:`` header that precedes the output
stays, unless the output leaves no room for it) and is counted in ``stats.prompts_truncated``.
So every kept row ends with the EOS on its last label. Sampling with ``max_tokens``
(:mod:`weighted_mtp.data.sampling`, at ``max_length - 1``) avoids both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from weighted_mtp.alignment import IGNORE_INDEX
from weighted_mtp.data.prompt import format_prompt
from weighted_mtp.data.tokenizer import Tokenizer


class RecordFormatError(ValueError):
    """A training record lacks a field the collator needs, or has the wrong type."""


@dataclass
class CollatorStats:
    """Running counts since the collator was built (per process: DataLoader workers each
    keep their own)."""

    records: int = 0
    prompts_truncated: int = 0
    skipped: int = 0  # outputs (with EOS) longer than max_length - 1: never truncated


def _field(record: dict, key: str, index: int, *, required: bool = True) -> str:
    value = record.get(key, None if required else "")
    if not isinstance(value, str):
        name = record.get("task_id", "?")
        got = "missing" if value is None else type(value).__name__
        raise RecordFormatError(
            f"record {index} of the batch (task_id {name!r}): field {key!r} is {got}, "
            "expected a string (see docs/contracts.md)"
        )
    return value


def _bug_span(record: dict, index: int) -> tuple[int, int] | None:
    span = (record.get("metadata") or {}).get("bug_span")
    if span is None:
        return None
    output = record.get("output", "")
    if (
        not isinstance(span, (list, tuple))
        or len(span) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in span)
        or not 0 <= span[0] < span[1] <= len(output)
    ):
        raise RecordFormatError(
            f"record {index} of the batch (task_id {record.get('task_id', '?')!r}): "
            f"metadata.bug_span is {span!r}, expected [start, end) character offsets with "
            f"0 <= start < end <= {len(output)} (the output's length) or null"
        )
    return int(span[0]), int(span[1])


def span_token_mask(
    token_bytes: Sequence[tuple[int, int]], text: str, span: tuple[int, int]
) -> np.ndarray:
    """``[n_tokens]`` bool: the tokens of ``text`` (their UTF-8 byte ranges,
    ``Tokenizer.token_byte_spans``) that overlap the character span ``[start, end)``. A token
    covering no byte (the first of a character's byte-fallback pieces) counts as covering the
    byte it starts at, so a span starting at that character starts at that token."""
    start = len(text[: span[0]].encode("utf-8"))
    end = len(text[: span[1]].encode("utf-8"))
    ranges = np.asarray(token_bytes, dtype=np.int64).reshape(-1, 2)
    begins, ends = ranges[:, 0], np.maximum(ranges[:, 1], ranges[:, 0] + 1)
    return (begins < end) & (ends > start)


class PromptOutputCollator:
    """Turns a list of training records into padded tensors; picklable for DataLoader workers.

    Args:
        tokenizer: the model's tokenizer.
        max_length: longest sequence in tokens, BOS and EOS included (>= 2); records whose
            output and EOS do not fit beside BOS are skipped (module docstring).
        pad_to_multiple_of: round the batch length up to a multiple of this (1 = no rounding),
            to give kernels friendlier shapes; padding is masked either way.

    Calling it on ``records`` returns a dict of tensors, ``B`` = records kept (in order),
    ``T`` = the longest kept sequence (right padding, not ``max_length``):

    - ``input_ids [B, T]`` long, padded with ``tokenizer.pad_id``;
    - ``attention_mask [B, T]`` bool, True on prompt and output tokens;
    - ``labels [B, T]`` long, unshifted: token ids on output and EOS, ``IGNORE_INDEX`` elsewhere
      (the last label that is not ``IGNORE_INDEX`` is always EOS);
    - ``is_correct [B]`` bool, when every record has ``is_correct`` (the critic and TD reward);
    - ``bug_mask [B, T]`` bool, aligned with ``labels``, when a kept record has
      ``metadata.bug_span`` (``[start, end)`` character offsets into its output where an
      incorrect program departs from its correct twin): True on the output tokens that overlap
      the span (validation diagnostics; :func:`span_token_mask`).

    A batch whose records were all skipped has ``B == 0`` and ``T == 0``.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int,
        *,
        pad_to_multiple_of: int = 1,
    ) -> None:
        if max_length < 2:
            raise ValueError(f"max_length = {max_length}: expected >= 2 (BOS and one token)")
        if pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of = {pad_to_multiple_of}: expected >= 1")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.stats = CollatorStats()

    def encode(self, records: Sequence[dict]) -> list[tuple[list[int], list[int]] | None]:
        """Prompt and output token ids of each record after prompt truncation, or None if the
        record was skipped. Prompt ids start with BOS; output ids always end with EOS."""
        prompts = [
            format_prompt(_field(r, "instruction", i), _field(r, "input", i, required=False))
            for i, r in enumerate(records)
        ]
        outputs = [_field(r, "output", i) for i, r in enumerate(records)]
        # One call per side: sentencepiece encodes a list in C++ (threaded), not token by token.
        prompt_ids = self.tokenizer.encode_batch(prompts)
        output_ids = self.tokenizer.encode_batch(outputs)
        bos, eos, limit = self.tokenizer.bos_id, self.tokenizer.eos_id, self.max_length

        encoded: list[tuple[list[int], list[int]] | None] = []
        for prompt, output in zip(prompt_ids, output_ids, strict=True):
            self.stats.records += 1
            output = [*output, eos]
            if len(output) > limit - 1:
                self.stats.skipped += 1
                encoded.append(None)
                continue
            budget = limit - 1 - len(output)  # prompt tokens that fit after BOS
            if len(prompt) > budget:
                self.stats.prompts_truncated += 1
                prompt = prompt[len(prompt) - budget :] if budget else []
            encoded.append(([bos, *prompt], output))
        return encoded

    def __call__(self, records: Sequence[dict]) -> dict[str, torch.Tensor]:
        encoded = self.encode(records)
        kept = [i for i, e in enumerate(encoded) if e is not None]
        lengths = [len(encoded[i][0]) + len(encoded[i][1]) for i in kept]  # type: ignore[index]
        width = max(lengths, default=0)
        width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of

        # Fill numpy buffers row by row (cheap slice assignment), convert to torch once.
        input_ids = np.full((len(kept), width), self.tokenizer.pad_id, dtype=np.int64)
        labels = np.full((len(kept), width), IGNORE_INDEX, dtype=np.int64)
        attention = np.zeros((len(kept), width), dtype=bool)
        for b, i in enumerate(kept):
            prompt, output = encoded[i]  # type: ignore[misc]
            p, n = len(prompt), len(prompt) + len(output)
            input_ids[b, :p] = prompt
            input_ids[b, p:n] = output
            labels[b, p:n] = output
            attention[b, :n] = True

        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "labels": torch.from_numpy(labels),
        }
        spans = [_bug_span(records[i], i) for i in kept]
        if any(span is not None for span in spans):
            bug = np.zeros((len(kept), width), dtype=bool)
            for b, (i, span) in enumerate(zip(kept, spans, strict=True)):
                if span is not None:
                    p = len(encoded[i][0])  # type: ignore[index]
                    text = records[i]["output"]
                    tokens = span_token_mask(self.tokenizer.token_byte_spans(text), text, span)
                    bug[b, p : p + len(tokens)] = tokens
            batch["bug_mask"] = torch.from_numpy(bug)
        if records and all("is_correct" in r for r in records):
            batch["is_correct"] = torch.tensor(
                [bool(records[i]["is_correct"]) for i in kept], dtype=torch.bool
            )
        return batch
