"""Batches of training records: Alpaca prompt + output, prompt positions masked out of the loss.

Each record (``docs/contracts.md``) becomes ``[BOS] + encode(format_prompt(instruction, input))
+ encode(output) + [EOS]``. Prompt and output are tokenized separately and concatenated, so the
boundary between them is exact (no token straddles it) and the label span is exactly the output
and its EOS.

Label alignment: ``labels`` are aligned with ``input_ids`` (unshifted, as in Hugging Face):
``labels[b, t] == input_ids[b, t]`` where token t belongs to the output or is the final EOS, and
``IGNORE_INDEX`` (-100) on prompt (BOS included) and padding. The model's position t predicts
token t+1 (head k predicts token t+k+1), so losses and weights use the shifted view
:func:`shift_labels` ``(labels, 1 + k)``: a target ``[B, T]`` whose position t holds the label
of token t+1+k, and a mask that is True from the last prompt position to the position whose
target is the final EOS, which is the ``mask`` of the TD and Rho-1 functions
(``weighted_mtp.weighting``).

Truncation policy (``max_length``, counted in tokens including BOS and EOS): the output has
priority. An over-long prompt loses tokens from its left, right after BOS (the instruction's
beginning goes; the ``### Response:`` header that precedes the output stays). If the output and
its EOS alone do not fit beside BOS, ``overflow`` decides: ``"truncate"`` (default) keeps BOS and
the first ``max_length - 1`` output tokens, so the sequence has no EOS and no prompt;
``"skip"`` drops the record from the batch. Both are counted (:attr:`PromptOutputCollator.stats`)
so that a pipeline can log them; sampling with ``max_tokens`` avoids both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from weighted_mtp.data.prompt import format_prompt
from weighted_mtp.data.tokenizer import Tokenizer

IGNORE_INDEX = -100

Overflow = Literal["truncate", "skip"]


class RecordFormatError(ValueError):
    """A training record lacks a field the collator needs, or has the wrong type."""


@dataclass
class CollatorStats:
    """Running counts since the collator was built (per process: DataLoader workers each
    keep their own)."""

    records: int = 0
    prompts_truncated: int = 0
    outputs_truncated: int = 0
    skipped: int = 0


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


class PromptOutputCollator:
    """Turns a list of training records into padded tensors; picklable for DataLoader workers.

    Args:
        tokenizer: the model's tokenizer.
        max_length: longest sequence in tokens, BOS and EOS included (>= 2).
        overflow: what to do with a record whose output does not fit (module docstring).
        pad_to_multiple_of: round the batch length up to a multiple of this (1 = no rounding),
            to give kernels friendlier shapes; padding is masked either way.

    Calling it on ``records`` returns a dict of tensors, ``B`` = records kept,
    ``T`` = the longest kept sequence (right padding, not ``max_length``):

    - ``input_ids [B, T]`` long, padded with ``tokenizer.pad_id``;
    - ``attention_mask [B, T]`` bool, True on prompt and output tokens;
    - ``labels [B, T]`` long, unshifted: token ids on output and EOS, ``IGNORE_INDEX`` elsewhere;
    - ``is_correct [B]`` bool, when every record has ``is_correct`` (the critic and TD reward).

    A batch whose records were all skipped has ``B == 0`` and ``T == 0``.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int,
        *,
        overflow: Overflow = "truncate",
        pad_to_multiple_of: int = 1,
    ) -> None:
        if max_length < 2:
            raise ValueError(f"max_length = {max_length}: expected >= 2 (BOS and one token)")
        if overflow not in ("truncate", "skip"):
            raise ValueError(f"overflow = {overflow!r}: expected 'truncate' or 'skip'")
        if pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of = {pad_to_multiple_of}: expected >= 1")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.overflow = overflow
        self.pad_to_multiple_of = pad_to_multiple_of
        self.stats = CollatorStats()

    def encode(self, records: Sequence[dict]) -> list[tuple[list[int], list[int]] | None]:
        """Prompt and output token ids of each record after truncation, or None if skipped.

        Prompt ids start with BOS; output ids end with EOS (unless the output was truncated).
        """
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
                if self.overflow == "skip":
                    self.stats.skipped += 1
                    encoded.append(None)
                    continue
                self.stats.outputs_truncated += 1
                encoded.append(([bos], output[: limit - 1]))
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
        if records and all("is_correct" in r for r in records):
            batch["is_correct"] = torch.tensor(
                [bool(records[i]["is_correct"]) for i in kept], dtype=torch.bool
            )
        return batch


def shift_labels(
    labels: torch.Tensor, offset: int = 1, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets that position t predicts, ``offset`` tokens ahead, and where they count.

    Args:
        labels: ``[B, T]`` long, unshifted (as the collator returns them).
        offset: how far ahead position t predicts: 1 for the next token (head 0), ``k + 1`` for
            MTP head k.
        ignore_index: the label value of positions without loss.

    Returns:
        ``(targets, mask)``, both ``[B, T]``: ``targets[:, t] = labels[:, t + offset]`` (0 where
        ``mask`` is False, so it indexes logits safely), ``mask`` bool, True where that label
        is a real token (the output and its EOS). Columns past ``T - offset`` are masked.
    """
    if offset < 0:
        raise ValueError(f"offset = {offset}: expected >= 0")
    shifted = torch.full_like(labels, ignore_index)
    if offset < labels.shape[1]:
        shifted[:, : labels.shape[1] - offset] = labels[:, offset:]
    mask = shifted != ignore_index
    return shifted.masked_fill(~mask, 0), mask
