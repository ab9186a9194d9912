"""Self-speculative greedy decoding with the MTP heads (Gloeckle et al. 2024, Sec. 3.2;
blockwise parallel decoding, Stern et al. 2018).

At the position of the last accepted token, head 0 gives the next token for sure (it is the
greedy choice) and heads 1..n-1 guess the ``n-1`` tokens after it. One forward over
``[next, guess_1, ..., guess_{n-1}]`` then verifies every guess at once: head 0 at offset
``i`` is the greedy token after ``guess_i`` (or after ``next`` for ``i = 0``). The longest
prefix of guesses that agrees with head 0 is accepted, and head 0's token after that prefix
is committed too (a correction when a guess was wrong, a bonus when all were right). The
same forward already drafts the following guesses (heads 1.. at the last accepted offset).

Every committed token is head 0's argmax given an all-greedy prefix, so the output equals
plain greedy decoding token for token. Rejected guesses left keys/values in cache slots
beyond the accepted length; the next call starts at the accepted length and overwrites them
(the cache keeps no length of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from weighted_mtp.evaluation.generation import Decode, Generation, truncate_at_stop
from weighted_mtp.evaluation.stacked_heads import StackedHeads
from weighted_mtp.models.transformer import MTPTransformer


@dataclass
class SpeculativeStats:
    """Counters of self-speculative decoding (add them up across prompts with ``+=``).

    ``n_forwards`` counts model calls including the prompt's, so plain greedy decoding has
    ``tokens_per_forward == 1``. ``n_drafted``: guesses sent to verification;
    ``n_accepted``: those head 0 agreed with.
    """

    n_generated: int = 0
    n_forwards: int = 0
    n_drafted: int = 0
    n_accepted: int = 0

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted guesses, in [0, 1] (0 when nothing was drafted)."""
        return self.n_accepted / self.n_drafted if self.n_drafted else 0.0

    @property
    def tokens_per_forward(self) -> float:
        """Committed tokens per model call (1 for plain greedy; up to n_future_tokens)."""
        return self.n_generated / self.n_forwards if self.n_forwards else 0.0

    def __iadd__(self, other: SpeculativeStats) -> SpeculativeStats:
        self.n_generated += other.n_generated
        self.n_forwards += other.n_forwards
        self.n_drafted += other.n_drafted
        self.n_accepted += other.n_accepted
        return self

    def as_dict(self) -> dict[str, float]:
        return {
            "n_generated": self.n_generated,
            "n_forwards": self.n_forwards,
            "n_drafted": self.n_drafted,
            "n_accepted": self.n_accepted,
            "acceptance_rate": self.acceptance_rate,
            "tokens_per_forward": self.tokens_per_forward,
        }


def _finished(
    ids: list[int], eos_id: int | None, decode: Decode | None, stop: Sequence[str]
) -> str | None:
    """The finish reason if the committed tokens ``ids`` end the completion, else None."""
    if eos_id is not None and ids and ids[-1] == eos_id:
        return "eos"
    if stop and decode is not None and truncate_at_stop(decode(ids), stop)[1]:
        return "stop"
    return None


def _prompt_guesses(
    model: nn.Module, tokens: torch.Tensor, cache: Any, heads: StackedHeads | None, n_draft: int
) -> list[int]:
    """Head 0's next token and heads 1..n_draft's guesses after the prompt ``tokens [1, P]``.

    Every head runs on the whole prompt so that its cache holds every position for later
    steps. With ``heads`` (an :class:`MTPTransformer`'s, stacked) the head blocks run in full
    at the last position only: the other positions' logits would be thrown away, their
    keys/values are all that later positions need.
    """
    if heads is None:
        logits = model(tokens, start_pos=0, cache=cache, return_all_heads=True)
        return logits[0, -1].argmax(-1).tolist()[: 1 + n_draft]
    net = heads.model
    ctx = net.attention_context(1, tokens.shape[1], cache=cache)
    hidden = heads.run(net.trunk_forward(tokens, ctx=ctx), ctx, last_only=True)  # [n, 1, dim]
    return net.output(hidden)[:, 0].argmax(-1).tolist()


def _n_draft(model: nn.Module, n_draft: int | None) -> int:
    """Guesses per step: ``n_draft`` clipped to ``[0, n_future_tokens - 1]`` (None: the most)."""
    n_heads = int(model.n_future_tokens)
    return n_heads - 1 if n_draft is None else max(0, min(n_draft, n_heads - 1))


def _accepted(drafts: Sequence[int], greedy: Sequence[int]) -> int:
    """How many leading ``drafts`` agree with head 0's greedy tokens after each of them."""
    accepted = 0
    while accepted < len(drafts) and drafts[accepted] == greedy[accepted]:
        accepted += 1
    return accepted


def verify(
    model: nn.Module,
    block: torch.Tensor,
    start_pos: int,
    cache: Any,
    drafts: Sequence[int],
    n_draft: int,
    heads: StackedHeads | None = None,
) -> tuple[list[int], list[int]]:
    """One verification forward of ``block = [[last committed, *drafts]]`` at cache slot
    ``start_pos`` -> ``(tokens to commit, next drafts)``.

    The tokens to commit are the accepted drafts and head 0's token after them; the next drafts
    are heads 1..n_draft at the last accepted offset. ``heads``: the model's heads stacked
    (:class:`StackedHeads`, for an :class:`MTPTransformer`), which run as one batched block;
    without them, the model's forward (the contract of ``docs/contracts.md``).
    """
    if heads is None:
        logits = model(block, start_pos=start_pos, cache=cache, return_all_heads=True)
        best = logits[0].argmax(-1).t()  # [n_heads, 1 + len(drafts)]
    else:
        net = heads.model
        ctx = net.attention_context(1, block.shape[1], start_pos=start_pos, cache=cache)
        hidden = heads.run(net.trunk_forward(block, ctx=ctx), ctx, last_only=False)
        best = net.output(hidden).argmax(-1)  # [n_heads, 1 + len(drafts)]
    by_head = best[: 1 + n_draft].tolist()
    accepted = _accepted(drafts, by_head[0])
    verified = [*drafts[:accepted], by_head[0][accepted]]
    return verified, [row[accepted] for row in by_head[1:]]


@torch.no_grad()
def speculative_generate(
    model: nn.Module,
    prompt: Sequence[int],
    *,
    max_new_tokens: int,
    eos_id: int | None = None,
    decode: Decode | None = None,
    stop: Sequence[str] = (),
    n_draft: int | None = None,
    stacked_heads: StackedHeads | None = None,
) -> tuple[Generation, SpeculativeStats]:
    """Greedy completion of one prompt, drafting with heads 1..n-1 and verifying with head 0.

    Args:
        model: an MTP model with ``n_future_tokens >= 1`` (1 head: plain greedy, one token
            per forward); it must follow the forward/cache contract of ``docs/contracts.md``.
        prompt: token ids, non-empty.
        max_new_tokens, eos_id, decode, stop: as :func:`generation.generate`; the result is
            the same :class:`Generation` plain greedy decoding returns.
        n_draft: guesses per step (default and maximum: ``n_future_tokens - 1``).
        stacked_heads: ``StackedHeads(model, 1 + n_draft)`` built by the caller, to share it
            across prompts (default: built here for an :class:`MTPTransformer`; other models
            run through their forward).

    Returns:
        ``(generation, stats)``.
    """
    if not prompt:
        raise ValueError("speculative_generate: the prompt needs at least one token")
    if stop and decode is None:
        raise ValueError("speculative_generate: stop sequences need a decode function")
    n_draft = _n_draft(model, n_draft)
    stats = SpeculativeStats()
    if max_new_tokens <= 0:
        return Generation([], "", "length"), stats

    device = next(model.parameters()).device
    # Slots never go past prompt + max_new_tokens: the drafts fed are capped by the budget.
    cache = model.new_cache(1, len(prompt) + max_new_tokens)
    heads = stacked_heads
    if heads is None and isinstance(model, MTPTransformer):
        heads = StackedHeads(model, 1 + n_draft)
    if heads is not None:
        if heads.n_heads != 1 + n_draft:
            raise ValueError(f"stacked_heads has {heads.n_heads} heads, n_draft={n_draft}")
        heads.new_cache(len(prompt) + max_new_tokens)
    tokens = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    guesses = _prompt_guesses(model, tokens, cache, heads, n_draft)
    stats.n_forwards = 1
    committed = [guesses[0]]  # head 0's token is greedy's; heads 1.. guess the ones after it
    drafts = guesses[1 : 1 + n_draft]
    filled = len(prompt)  # slots [0, filled) hold the prompt and every committed token but the last
    reason = _finished(committed, eos_id, decode, stop)

    while reason is None and len(committed) < max_new_tokens:
        drafts = drafts[: max_new_tokens - len(committed)]
        block = torch.tensor([[committed[-1], *drafts]], dtype=torch.long, device=device)
        verified, next_drafts = verify(model, block, filled, cache, drafts, n_draft, heads)
        stats.n_forwards += 1
        accepted = len(verified) - 1
        stats.n_drafted += len(drafts)
        stats.n_accepted += accepted
        # Commit one token at a time so that EOS or a stop sequence inside the accepted run
        # ends the completion exactly where plain greedy decoding would.
        for token in verified:
            committed.append(token)
            reason = _finished(committed, eos_id, decode, stop)
            if reason is not None or len(committed) >= max_new_tokens:
                break
        filled += 1 + accepted
        drafts = next_drafts

    ids = committed[:max_new_tokens]
    if reason == "eos":
        ids = ids[:-1]
    stats.n_generated = len(ids)
    text = truncate_at_stop(decode(ids), stop)[0] if decode is not None else ""
    return Generation(ids, text, reason or "length"), stats


def speculative_generate_many(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_id: int | None = None,
    decode: Decode | None = None,
    stop: Sequence[str] = (),
    n_draft: int | None = None,
    progress: Callable[[int, SpeculativeStats], None] | None = None,
) -> tuple[list[Generation], SpeculativeStats]:
    """:func:`speculative_generate` for each prompt in turn, the heads stacked once for all;
    the stats are summed. ``progress(done, stats so far)`` is called after each prompt."""
    total = SpeculativeStats()
    generations = []
    n_draft = _n_draft(model, n_draft)
    heads = StackedHeads(model, 1 + n_draft) if isinstance(model, MTPTransformer) else None
    for prompt in prompts:
        generation, stats = speculative_generate(
            model,
            prompt,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            decode=decode,
            stop=stop,
            n_draft=n_draft,
            stacked_heads=heads,
        )
        generations.append(generation)
        total += stats
        if progress is not None:
            progress(len(generations), total)
    return generations, total
