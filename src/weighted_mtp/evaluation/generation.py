"""Batched autoregressive generation with a KV cache (head 0 of an MTP model).

Prompts of different lengths share one batch by left padding: every row's last prompt token
sits in the same column, so one decoding step appends one column for all rows. Padding is
invisible to the model: ``key_padding_mask`` keeps padded keys out of attention and
``positions`` gives each row RoPE positions that start at 0 on its first real token, so a
padded row computes what it would alone.

A row finishes at EOS, at a stop sequence found in its decoded text (the completion is cut
there) or after ``max_new_tokens``; finished rows leave the batch (their cache rows are
dropped), and the loop ends when no row is left.

The model is anything that follows ``docs/contracts.md``: ``model(tokens, start_pos=...,
cache=..., return_all_heads=False, positions=..., key_padding_mask=...)`` -> logits
``[B, T, 1, V]`` and ``model.new_cache(batch_size, max_len)`` with ``select_rows(index)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)

FINISH_REASONS = ("length", "eos", "stop")
_LENGTH, _EOS, _STOP = 0, 1, 2

Decode = Callable[[list[int]], str]


@dataclass(frozen=True)
class Generation:
    """One completion.

    ``token_ids``: the generated tokens, EOS excluded (tokens after a stop sequence are kept:
    they were generated). ``text``: the decoded tokens cut at the first stop sequence (empty
    when no ``decode`` was given). ``n_tokens``: ``len(token_ids)``, the decoding work spent.
    ``finish_reason``: ``length``, ``eos`` or ``stop``.
    """

    token_ids: list[int]
    text: str
    finish_reason: str

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest occurrence of any stop sequence.

    Returns ``(text_before_stop, found)``.
    """
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut], True


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def select_next_token(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token of each row from ``logits [B, V]`` -> ``[B]`` (long).

    ``temperature <= 0`` is greedy (argmax). Otherwise sample from ``softmax(logits / T)``
    restricted to the nucleus: the most probable tokens whose preceding cumulative mass is
    below ``top_p`` (the top token is always kept, so a tiny ``top_p`` is greedy).
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    # multinomial renormalises, so the truncated rows need no explicit division.
    choice = torch.multinomial(sorted_probs, 1, generator=generator)
    return order.gather(-1, choice).squeeze(-1)


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``tokens [B, P]`` and ``valid [B, P]`` (False on padding)."""
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    width = int(lengths.max())
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if len(prompt):
            tokens[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
    valid = torch.arange(width)[None, :] >= (width - lengths)[:, None]
    return tokens.to(device), valid.to(device)


@torch.no_grad()
def generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    pad_id: int = 0,
    decode: Decode | None = None,
    stop: Sequence[str] = (),
    generator: torch.Generator | None = None,
) -> list[Generation]:
    """Generate one completion per prompt, all rows in one batch.

    Args:
        model: an MTP model (head 0 decodes); put it in eval mode first.
        prompts: ``B`` lists of token ids (each non-empty), any lengths.
        max_new_tokens: at most this many tokens per row.
        temperature, top_p: see :func:`select_next_token` (``temperature=0``: greedy).
        eos_id: a row finishes when it emits this token (not part of the completion).
        pad_id: filler for left padding (never attended).
        decode: token ids -> text; needed for ``stop`` and for ``Generation.text``.
        stop: a row finishes as soon as its decoded text contains one of these strings.
        generator: the random source for sampling (seed it for reproducible samples).

    Returns:
        ``B`` :class:`Generation`, in prompt order.
    """
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    if stop and decode is None:
        raise ValueError("generate: stop sequences need a decode function")
    if max_new_tokens <= 0:
        return [Generation([], "", "length") for _ in prompts]

    device = _model_device(model)
    tokens, prompt_valid = left_pad(prompts, pad_id, device)
    batch, width = tokens.shape
    total = width + max_new_tokens
    # valid[b, s]: slot s of row b holds a real token; every generated slot is real.
    valid = torch.ones(batch, total, dtype=torch.bool, device=device)
    valid[:, :width] = prompt_valid
    lengths = prompt_valid.sum(dim=1)  # [B] real prompt lengths
    positions = (prompt_valid.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, P]

    cache = model.new_cache(batch, total)
    logits = model(
        tokens,
        start_pos=0,
        cache=cache,
        return_all_heads=False,
        positions=positions,
        key_padding_mask=valid[:, :width],
    )
    next_logits = logits[:, -1, 0]  # [B, V]

    out = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    n_generated = torch.full((batch,), max_new_tokens, dtype=torch.long, device=device)
    finish = torch.full((batch,), _LENGTH, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)  # original index of each active row
    for step in range(max_new_tokens):
        next_tokens = select_next_token(
            next_logits, temperature=temperature, top_p=top_p, generator=generator
        )
        out[rows, step] = next_tokens
        done = (
            next_tokens == eos_id
            if eos_id is not None
            else torch.zeros_like(next_tokens, dtype=torch.bool)
        )
        n_generated[rows[done]] = step  # EOS itself is not part of the completion
        finish[rows[done]] = _EOS
        if stop:
            # Text is only known after decoding, row by row; only unfinished rows are checked.
            so_far = out[rows, : step + 1].tolist()
            for j, row_done in enumerate(done.tolist()):
                if not row_done and truncate_at_stop(decode(so_far[j]), stop)[1]:
                    done[j] = True
                    n_generated[rows[j]] = step + 1
                    finish[rows[j]] = _STOP
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            rows, lengths, valid = rows[keep], lengths[keep], valid[keep]
            next_tokens = next_tokens[keep]
            cache = cache.select_rows(keep)
        logits = model(
            next_tokens[:, None],
            start_pos=width + step,
            cache=cache,
            return_all_heads=False,
            positions=(lengths + step)[:, None],
            key_padding_mask=valid[:, : width + step + 1],
        )
        next_logits = logits[:, -1, 0]

    results = []
    for ids, count, reason in zip(out.tolist(), n_generated.tolist(), finish.tolist(), strict=True):
        ids = ids[:count]
        text = truncate_at_stop(decode(ids), stop)[0] if decode is not None else ""
        results.append(Generation(ids, text, FINISH_REASONS[reason]))
    return results


def clip_prompt(ids: list[int], max_prompt_tokens: int) -> list[int]:
    """Keep the last ``max_prompt_tokens`` of a prompt (its end is what the model continues)."""
    return ids if len(ids) <= max_prompt_tokens else ids[len(ids) - max_prompt_tokens :]


def generate_samples(
    model: nn.Module,
    prompts: Sequence[list[int]],
    *,
    n_samples: int = 1,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    eos_id: int | None = None,
    pad_id: int = 0,
    decode: Decode | None = None,
    stop: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> list[list[Generation]]:
    """``n_samples`` completions for each tokenised prompt, ``batch_size`` rows at a time.

    Rows (prompt x sample) are sorted by prompt length before batching so that a batch holds
    similar lengths and pads little. Sampling draws from one ``torch.Generator`` seeded with
    ``seed``, so the same call returns the same samples. Prompts longer than the model's
    ``max_seq_len - max_new_tokens`` keep their last tokens (logged).
    ``progress(done_rows, total_rows)`` is called after each batch.

    Returns:
        ``len(prompts)`` lists of ``n_samples`` :class:`Generation`.
    """
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be >= 1, got {n_samples}, {batch_size}")
    max_seq_len = getattr(getattr(model, "args", None), "max_seq_len", None)
    if max_seq_len is not None:
        budget = max_seq_len - max_new_tokens
        if budget < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt")
        clipped = [clip_prompt(list(p), budget) for p in prompts]
        n_clipped = sum(len(a) != len(b) for a, b in zip(clipped, prompts, strict=True))
        if n_clipped:
            logger.warning("%d prompt(s) clipped to their last %d tokens", n_clipped, budget)
        prompts = clipped

    device = _model_device(model)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    rows = sorted(
        ((p, s) for p in range(len(prompts)) for s in range(n_samples)),
        key=lambda row: len(prompts[row[0]]),
    )
    results: list[list[Generation | None]] = [[None] * n_samples for _ in prompts]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        generations = generate(
            model,
            [prompts[p] for p, _ in chunk],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            eos_id=eos_id,
            pad_id=pad_id,
            decode=decode,
            stop=stop,
            generator=generator,
        )
        for (p, s), generation in zip(chunk, generations, strict=True):
            results[p][s] = generation
        if progress is not None:
            progress(start + len(chunk), len(rows))
    return results  # type: ignore[return-value]
