"""StackedHeads (the MTP heads as one batched block) against each head's own block."""

from __future__ import annotations

import pytest
import torch

from weighted_mtp.evaluation.stacked_heads import StackedHeads
from weighted_mtp.models import MTPTransformer, debug_args


def model(**overrides) -> MTPTransformer:
    torch.manual_seed(4)
    net = MTPTransformer(debug_args(max_seq_len=64, **overrides)).double().eval()
    net.init_weights(std=0.2)
    return net


def reference_hidden(net: MTPTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Each head's normed hidden state on the whole sequence, no cache: ``[n, T, dim]``."""
    trunk = net.trunk_forward(tokens)
    return torch.cat([net.head_forward(k, trunk) for k in range(net.n_future_tokens)])


@pytest.mark.parametrize("n_kv_heads", [None, 2])  # plain attention and grouped-query
def test_prompt_then_steps_match_every_heads_own_block(n_kv_heads):
    net = model(n_kv_heads=n_kv_heads)
    tokens = torch.randint(0, net.args.vocab_size, (1, 20))
    expected = reference_hidden(net, tokens)
    heads = StackedHeads(net, net.n_future_tokens)
    heads.new_cache(32)
    cache = net.new_cache(1, 32)
    with torch.no_grad():
        # A prompt of 11 positions (last one only), then steps of 4, 1 and 4 positions.
        ctx = net.attention_context(1, 11, cache=cache)
        last = heads.run(net.trunk_forward(tokens[:, :11], ctx=ctx), ctx, last_only=True)
        torch.testing.assert_close(last[:, 0], expected[:, 10], rtol=1e-10, atol=1e-10)
        for start, stop in ((11, 15), (15, 16), (16, 20)):
            ctx = net.attention_context(1, stop - start, start_pos=start, cache=cache)
            trunk = net.trunk_forward(tokens[:, start:stop], ctx=ctx)
            out = heads.run(trunk, ctx, last_only=False)
            torch.testing.assert_close(out, expected[:, start:stop], rtol=1e-10, atol=1e-10)


def test_a_step_after_a_partial_acceptance_overwrites_the_rejected_slots():
    net = model()
    tokens = torch.randint(0, net.args.vocab_size, (1, 12))
    wrong = tokens.clone()
    wrong[:, 9:] = (tokens[:, 9:] + 1) % net.args.vocab_size
    heads = StackedHeads(net, 3)  # heads 0..2 of 4
    heads.new_cache(16)
    cache = net.new_cache(1, 16)
    with torch.no_grad():
        ctx = net.attention_context(1, 8, cache=cache)
        heads.run(net.trunk_forward(tokens[:, :8], ctx=ctx), ctx, last_only=True)
        # Positions 8..11 with wrong tokens from 9 on: only position 8 is kept...
        ctx = net.attention_context(1, 4, start_pos=8, cache=cache)
        heads.run(net.trunk_forward(wrong[:, 8:12], ctx=ctx), ctx, last_only=False)
        # ...so the next step restarts at 9 and must not see the rejected keys.
        ctx = net.attention_context(1, 3, start_pos=9, cache=cache)
        out = heads.run(net.trunk_forward(tokens[:, 9:12], ctx=ctx), ctx, last_only=False)
    expected = reference_hidden(net, tokens)[:3, 9:12]
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_bfloat16_stays_close_to_the_float64_heads():
    net = model()
    tokens = torch.randint(0, net.args.vocab_size, (1, 10))
    expected = reference_hidden(net, tokens)[:, -1]
    low = net.to(torch.bfloat16)
    heads = StackedHeads(low, low.n_future_tokens)
    heads.new_cache(16)
    with torch.no_grad():
        ctx = low.attention_context(1, 10, cache=low.new_cache(1, 16))
        last = heads.run(low.trunk_forward(tokens, ctx=ctx), ctx, last_only=True)[:, 0]
    assert last.dtype == torch.bfloat16
    torch.testing.assert_close(last.double(), expected, rtol=0.05, atol=0.05)


def test_misuse_is_named():
    net = model()
    with pytest.raises(ValueError, match="n_heads=5"):
        StackedHeads(net, 5)
    heads = StackedHeads(net, 2)
    ctx = net.attention_context(1, 1)
    with pytest.raises(RuntimeError, match="before new_cache"):
        heads.run(torch.zeros(1, 1, net.args.dim, dtype=torch.float64), ctx, last_only=True)
