"""Batched autoregressive generation with a KV cache (head 0 of an MTP model).

Prompts of different lengths share one batch by left padding: every row's last prompt token
sits in the same column, so one decoding step appends one column for all rows. Padding is
invisible to the model: a key mask keeps padded keys out of attention and each row's RoPE
positions start at 0 on its first real token, so a padded row computes what it would alone.
A batch without padding needs neither: no mask, positions = cache slots.

A decoding step is lean: the RoPE rows and key mask of every step are built once per batch
and only sliced per step, only the prompt's last position is unembedded, and the new tokens
come to the host only when EOS or stop sequences need them.

How the next token is picked, each row's random stream and which rows share a batch are in
:mod:`weighted_mtp.evaluation.sampling`.

A row finishes at EOS, at a stop sequence found in its decoded text (the completion is cut
there) or after ``max_new_tokens``; finished rows leave the batch (their cache rows are
dropped), and the loop ends when no row is left.

The model is anything that follows ``docs/contracts.md``: ``model(tokens, start_pos=...,
cache=..., return_all_heads=False, positions=..., key_padding_mask=...)`` -> logits
``[B, T, 1, V]`` and ``model.new_cache(batch_size, max_len)`` with ``select_rows(index)``; an
:class:`MTPTransformer` takes the faster path through ``trunk_forward``/``head_forward``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from weighted_mtp.evaluation.sampling import Row, plan_batches, row_generators, select_next_token
from weighted_mtp.models.transformer import AttentionContext, MTPTransformer

logger = logging.getLogger(__name__)

FINISH_REASONS = ("length", "eos", "stop")

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


class _Head0Decoder:
    """Head 0 of a model over a left-padded batch with a KV cache: the prompt forward, then one
    token per step, rows dropped on request.

    Everything a step needs besides its token is built once: the RoPE rows of every future
    step (``[B or 1, max_new_tokens]``) and, when some row is padded, the key mask of every
    slot; a step only slices them. Without padding there is no mask at all (a decoding query
    attends to every slot written so far). An :class:`MTPTransformer` runs through
    ``trunk_forward``/``head_forward`` with that prebuilt context, and on the prompt runs head
    0's block and the unembedding at the last position only (``head_prefill``); any other
    model goes through its ``forward`` with ``positions`` and ``key_padding_mask`` slices, as
    ``docs/contracts.md`` defines them.
    """

    def __init__(
        self,
        model: nn.Module,
        tokens: torch.Tensor,
        prompt_valid: torch.Tensor,
        padded: bool,
        max_new_tokens: int,
    ) -> None:
        batch, width = tokens.shape
        device = tokens.device
        self.model = model
        self.tokens = tokens
        self.width = width
        self.fast = isinstance(model, MTPTransformer)
        self.cache = model.new_cache(batch, width + max_new_tokens)
        steps = torch.arange(max_new_tokens, device=device)
        if padded:
            self.prompt_positions = (prompt_valid.long().cumsum(dim=1) - 1).clamp(min=0)
            # The last prompt column is real in every row (left padding): its position + 1 is
            # where generation starts.
            self.step_positions = self.prompt_positions[:, -1:] + 1 + steps  # [B, N]
            valid = torch.ones(batch, width + max_new_tokens, dtype=torch.bool, device=device)
            valid[:, :width] = prompt_valid
        else:
            valid = None
            self.prompt_positions = None
            self.step_positions = (width + steps)[None]  # [1, N]: a position is its slot
        self.valid = valid  # [B, S] or None; every generated slot is real
        if self.fast:
            # One context for all steps: its RoPE rows are sliced per step (no mask: the
            # decoding contexts get theirs from ``valid``).
            self.table = model.attention_context(
                self.step_positions.shape[0], max_new_tokens, positions=self.step_positions
            )
            # [B, 1, 1, S] view: every decoding query's own slot is real, so SDPA never sees
            # an all-masked row.
            self.mask = None if valid is None else valid[:, None, None, :]

    def prefill(self) -> torch.Tensor:
        """Logits ``[B, V]`` of the token after each prompt (fills the cache)."""
        if not self.fast:
            logits = self.model(
                self.tokens,
                start_pos=0,
                cache=self.cache,
                return_all_heads=False,
                positions=self.prompt_positions,
                key_padding_mask=None if self.valid is None else self.valid[:, : self.width],
            )
            return logits[:, -1, 0]
        model = self.model
        ctx = model.attention_context(
            self.tokens.shape[0],
            self.width,
            cache=self.cache,
            positions=self.prompt_positions,
            key_padding_mask=None if self.valid is None else self.valid[:, : self.width],
        )
        return model.output(model.head_prefill(0, model.trunk_forward(self.tokens, ctx=ctx), ctx))

    def step(self, tokens: torch.Tensor, step: int) -> torch.Tensor:
        """Logits ``[B, V]`` after ``tokens [B]``, the ``step``-th generated token (0-based)."""
        start = self.width + step
        if not self.fast:
            logits = self.model(
                tokens[:, None],
                start_pos=start,
                cache=self.cache,
                return_all_heads=False,
                positions=None if self.valid is None else self.step_positions[:, step : step + 1],
                key_padding_mask=None if self.valid is None else self.valid[:, : start + 1],
            )
            return logits[:, -1, 0]
        table = self.table
        ctx = AttentionContext(
            cos=table.cos[:, step : step + 1],
            sin=table.sin[:, step : step + 1],
            rotation=None if table.rotation is None else table.rotation[:, step : step + 1],
            mask=None if self.mask is None else self.mask[..., : start + 1],
            is_causal=False,
            start_pos=start,
            cache=self.cache,
        )
        model = self.model
        hidden = model.head_forward(0, model.trunk_forward(tokens[:, None], ctx=ctx), ctx=ctx)
        return model.output(hidden[:, 0])

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (``[B']`` long) only."""
        self.cache = self.cache.select_rows(index)
        if self.valid is None:
            return  # unpadded: the step tables have one row shared by all
        self.valid = self.valid.index_select(0, index)
        self.step_positions = self.step_positions.index_select(0, index)
        if self.fast:
            self.mask = self.valid[:, None, None, :]
            table = self.table
            self.table = replace(
                table,
                cos=table.cos.index_select(0, index),
                sin=table.sin.index_select(0, index),
                rotation=None if table.rotation is None else table.rotation.index_select(0, index),
            )


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
    generators: Sequence[torch.Generator] | None = None,
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
        generators: one CPU generator per prompt, instead of ``generator``: each row samples
            from its own stream (:func:`select_next_token`), whatever batch it is in.

    Returns:
        ``B`` :class:`Generation`, in prompt order.
    """
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    if stop and decode is None:
        raise ValueError("generate: stop sequences need a decode function")
    if generators is not None and len(generators) != len(prompts):
        raise ValueError(f"generate: {len(generators)} generators for {len(prompts)} prompts")
    if max_new_tokens <= 0:
        return [Generation([], "", "length") for _ in prompts]

    device = _model_device(model)
    tokens, prompt_valid = left_pad(prompts, pad_id, device)
    padded = len({len(p) for p in prompts}) > 1
    decoder = _Head0Decoder(model, tokens, prompt_valid, padded, max_new_tokens)
    logits = decoder.prefill()

    def text_of(ids: list[int]) -> str:
        return truncate_at_stop(decode(ids), stop)[0] if decode is not None else ""

    if eos_id is None and not stop:
        # Nothing can end a row early: every row runs to the budget, the tokens stay on the
        # device until the end (no host round trip per step).
        out = torch.empty(len(prompts), max_new_tokens, dtype=torch.long, device=device)
        for step in range(max_new_tokens):
            next_tokens = select_next_token(
                logits,
                temperature=temperature,
                top_p=top_p,
                generator=generator,
                generators=generators,
            )
            out[:, step] = next_tokens
            if step + 1 < max_new_tokens:
                logits = decoder.step(next_tokens, step)
        return [Generation(ids, text_of(ids), "length") for ids in out.tolist()]

    # EOS and stop sequences are decided on the host: one copy of the B new tokens per step
    # (also needed to decode the text that stop sequences are searched in). A row leaves the
    # batch at the step it finishes, so the rows left, and the random numbers they draw, are
    # exactly those of a row-by-row reading of the rules.
    completions: list[list[int]] = [[] for _ in prompts]
    reasons = ["length"] * len(prompts)
    rows = list(range(len(prompts)))  # original index of each active row
    row_generators = list(generators) if generators is not None else None
    for step in range(max_new_tokens):
        next_tokens = select_next_token(
            logits,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
            generators=row_generators,
        )
        keep = []
        for j, (row, token) in enumerate(zip(rows, next_tokens.tolist(), strict=True)):
            if token == eos_id:
                reasons[row] = "eos"  # EOS itself is not part of the completion
                continue
            completions[row].append(token)
            if stop and truncate_at_stop(decode(completions[row]), stop)[1]:  # type: ignore[misc]
                reasons[row] = "stop"
                continue
            keep.append(j)
        if not keep or step + 1 == max_new_tokens:
            break
        if len(keep) < len(rows):
            index = torch.tensor(keep, dtype=torch.long, device=device)
            decoder.select_rows(index)
            next_tokens = next_tokens.index_select(0, index)
            rows = [rows[j] for j in keep]
            if row_generators is not None:
                row_generators = [row_generators[j] for j in keep]
        logits = decoder.step(next_tokens, step)
    return [
        Generation(ids, text_of(ids), reason)
        for ids, reason in zip(completions, reasons, strict=True)
    ]


def clip_prompt(ids: list[int], max_prompt_tokens: int) -> list[int]:
    """Keep the last ``max_prompt_tokens`` of a prompt (its end is what the model continues)."""
    return ids if len(ids) <= max_prompt_tokens else ids[len(ids) - max_prompt_tokens :]


def fit_prompts(
    model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int
) -> list[list[int]]:
    """``prompts`` with those longer than the model's ``max_seq_len - max_new_tokens`` cut to
    their last tokens (logged); unchanged for a model without ``args.max_seq_len``.

    Raises:
        ValueError: ``max_new_tokens`` leaves no room for a prompt.
    """
    max_seq_len = getattr(getattr(model, "args", None), "max_seq_len", None)
    if max_seq_len is None:
        return [list(p) for p in prompts]
    budget = max_seq_len - max_new_tokens
    if budget < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt")
    clipped = [clip_prompt(list(p), budget) for p in prompts]
    n_clipped = sum(len(a) != len(b) for a, b in zip(clipped, prompts, strict=True))
    if n_clipped:
        logger.warning("%d prompt(s) clipped to their last %d tokens", n_clipped, budget)
    return clipped


def generate_rows(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    rows: Sequence[Row],
    *,
    seed: int = 0,
    stream: str = "",
    temperature: float = 0.0,
    **options: Any,
) -> list[Generation]:
    """One batch of :func:`generate`: row ``(p, s)`` is sample ``s`` of ``prompts[p]``; sampled
    rows draw from their own generator (:func:`~weighted_mtp.evaluation.sampling.pair_seed`
    of ``seed``, ``stream`` and the row), so a row's completion is the same in any batch order
    and on any worker. ``options``: :func:`generate`'s other keyword arguments."""
    generators = row_generators(seed, rows, stream) if temperature > 0 else None
    return generate(
        model,
        [prompts[p] for p, _ in rows],
        temperature=temperature,
        generators=generators,
        **options,
    )


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
    stream: str = "",
    eos_id: int | None = None,
    pad_id: int = 0,
    decode: Decode | None = None,
    stop: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> list[list[Generation]]:
    """``n_samples`` completions for each tokenised prompt, ``batch_size`` rows at a time.

    Rows (prompt x sample) are sorted by prompt length before batching so that a batch holds
    similar lengths and pads little (:func:`~weighted_mtp.evaluation.sampling.plan_batches`,
    the same batches the data-parallel workers share out). Each row samples from a generator
    seeded with ``(seed, stream, prompt, sample)``, so the same call returns the same samples,
    however the rows are split between processes. Prompts longer than the model's
    ``max_seq_len - max_new_tokens`` keep their last tokens (logged).
    ``progress(done_rows, total_rows)`` is called after each batch.

    Returns:
        ``len(prompts)`` lists of ``n_samples`` :class:`Generation`.
    """
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be >= 1, got {n_samples}, {batch_size}")
    prompts = fit_prompts(model, prompts, max_new_tokens)
    batches = plan_batches([len(p) for p in prompts], n_samples, batch_size)
    results: list[list[Generation | None]] = [[None] * n_samples for _ in prompts]
    done, total = 0, len(prompts) * n_samples
    for chunk in batches:
        generations = generate_rows(
            model,
            prompts,
            chunk,
            seed=seed,
            stream=stream,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            eos_id=eos_id,
            pad_id=pad_id,
            decode=decode,
            stop=stop,
        )
        for (p, s), generation in zip(chunk, generations, strict=True):
            results[p][s] = generation
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    return results  # type: ignore[return-value]
