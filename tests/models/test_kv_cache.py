"""Cached decoding equals a full forward, for every head (trunk and head blocks are cached)."""

from __future__ import annotations

import pytest
import torch

from weighted_mtp.models import KVCache, MTPTransformer, debug_args

ATOL = 1e-10


@pytest.fixture(scope="module")
def model() -> MTPTransformer:
    torch.manual_seed(0)
    return MTPTransformer(debug_args(dim=32, n_layers=6, n_heads=4, n_kv_heads=2)).double().eval()


@torch.no_grad()
def test_prefill_then_single_tokens_match_full_forward(model: MTPTransformer) -> None:
    tokens = torch.randint(0, 128, (2, 12))
    full = model(tokens)  # [B, T, n, V]
    cache = model.new_cache(2, 16)
    assert isinstance(cache, KVCache) and cache.n_blocks == 2 + 4 and cache.dtype == torch.float64
    steps = [model(tokens[:, :5], cache=cache)]
    for pos in range(5, 12):
        steps.append(model(tokens[:, pos : pos + 1], start_pos=pos, cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)


@torch.no_grad()
def test_multi_token_chunks_and_rollback(model: MTPTransformer) -> None:
    tokens = torch.randint(0, 128, (2, 14))
    cache = model.new_cache(2, 14)
    model(tokens[:, :4], cache=cache)
    # A rejected draft: slots 4..7 are written with wrong tokens, then rewritten.
    model(torch.randint(0, 128, (2, 4)), start_pos=4, cache=cache)
    got = [model(tokens[:, 4:8], start_pos=4, cache=cache)]
    got.append(model(tokens[:, 8:11], start_pos=8, cache=cache))
    got.append(model(tokens[:, 11:14], start_pos=11, cache=cache))
    torch.testing.assert_close(torch.cat(got, dim=1), model(tokens)[:, 4:], atol=ATOL, rtol=0)


@torch.no_grad()
def test_left_padded_batch_matches_rows_alone(model: MTPTransformer) -> None:
    pad = 0
    prompts = [torch.randint(1, 128, (7,)), torch.randint(1, 128, (4,))]
    continuation = torch.randint(1, 128, (2, 3))
    width = 7
    tokens = torch.full((2, width), pad)
    attention = torch.zeros(2, width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt) :] = prompt
        attention[row, width - len(prompt) :] = True
    positions = (attention.long().cumsum(-1) - 1).clamp(min=0)

    cache = model.new_cache(2, width + 3)
    key_mask = torch.cat([attention, torch.ones(2, 3, dtype=torch.bool)], dim=1)
    prefill = model(tokens, cache=cache, positions=positions, key_padding_mask=attention)
    assert torch.isfinite(prefill).all()  # padding queries must not produce NaN
    last_pos = positions[:, -1:]
    steps = []
    for i in range(3):
        steps.append(
            model(
                continuation[:, i : i + 1],
                start_pos=width + i,
                cache=cache,
                positions=last_pos + 1 + i,
                key_padding_mask=key_mask[:, : width + i + 1],
            )
        )
    for row, prompt in enumerate(prompts):
        alone = model(torch.cat([prompt, continuation[row]])[None])
        n = len(prompt)
        torch.testing.assert_close(prefill[row, width - n :], alone[0, :n], atol=ATOL, rtol=0)
        torch.testing.assert_close(torch.cat(steps, dim=1)[row], alone[0, n:], atol=ATOL, rtol=0)


@torch.no_grad()
def test_head0_only_calls_and_hidden(model: MTPTransformer) -> None:
    tokens = torch.randint(0, 128, (1, 6))
    full, hidden = model(tokens, return_hidden=True)
    cache = model.new_cache(1, 6)
    logits, h = model(tokens[:, :3], cache=cache, return_all_heads=False, return_hidden=True)
    logits2, h2 = model(
        tokens[:, 3:], start_pos=3, cache=cache, return_all_heads=False, return_hidden=True
    )
    assert logits.shape == (1, 3, 1, 128)
    torch.testing.assert_close(torch.cat([logits, logits2], 1), full[:, :, :1], atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.cat([h, h2], 1), hidden, atol=ATOL, rtol=0)


def test_cache_errors(model: MTPTransformer) -> None:
    cache = model.new_cache(1, 4)
    with torch.no_grad(), pytest.raises(ValueError, match="cannot hold"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
    with torch.no_grad(), pytest.raises(ValueError, match="batch size"):
        model(torch.zeros(2, 2, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="needs a cache"):
        model(torch.zeros(1, 2, dtype=torch.long), start_pos=2)


@torch.no_grad()
def test_select_rows_keeps_remaining_sequences(model: MTPTransformer) -> None:
    tokens = torch.randint(0, 128, (3, 6))
    cache = model.new_cache(3, 6)
    model(tokens[:, :5], cache=cache)
    kept = cache.select_rows(torch.tensor([2, 0]))
    step = model(tokens[[2, 0], 5:], start_pos=5, cache=kept)
    torch.testing.assert_close(step, model(tokens[[2, 0]])[:, 5:], atol=ATOL, rtol=0)


@torch.no_grad()
def test_blocks_are_allocated_on_first_write(model: MTPTransformer) -> None:
    tokens = torch.randint(0, 128, (3, 7))
    cache = model.new_cache(3, 7)
    assert all(k is None for k in cache.keys)
    model(tokens[:, :4], cache=cache, return_all_heads=False)
    n_trunk = model.n_trunk_blocks
    # Head-0 decoding never touches the extra heads' buffers.
    assert [k is not None for k in cache.keys] == [True] * (n_trunk + 1) + [False] * 3
    kept = cache.select_rows(torch.tensor([2, 0]))
    assert [k is not None for k in kept.values] == [True] * (n_trunk + 1) + [False] * 3
    assert kept.keys[0].shape[0] == 2 and cache.keys[0].shape[0] == 3
    step = model(tokens[[2, 0], 4:5], start_pos=4, cache=kept, return_all_heads=False)
    torch.testing.assert_close(step, model(tokens[[2, 0], :5])[:, 4:, :1], atol=ATOL, rtol=0)
    # A head that first runs late reads zeros for the slots it never wrote, as an eagerly
    # zero-filled cache would give.
    late = model(tokens[:, 4:5], start_pos=4, cache=cache)
    eager = model.new_cache(3, 7)
    model(tokens[:, :4], cache=eager, return_all_heads=False)
    for block in range(n_trunk + 1, eager.n_blocks):
        eager.update(block, 0, *(torch.zeros(3, 2, 4, 8, dtype=torch.float64),) * 2)
    torch.testing.assert_close(
        late, model(tokens[:, 4:5], start_pos=4, cache=eager), atol=0, rtol=0
    )
    assert cache.dtype == torch.float64 and cache.device.type == "cpu"


@torch.no_grad()
@pytest.mark.parametrize("padded", [False, True])
def test_head_prefill_equals_the_full_block_and_fills_the_cache(
    model: MTPTransformer, padded: bool
) -> None:
    tokens = torch.randint(1, 128, (2, 9))
    valid = torch.ones(2, 9, dtype=torch.bool)
    if padded:
        valid[1, :4] = False  # row 1: 5 real tokens, left-padded
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
    extra = dict(positions=positions, key_padding_mask=valid) if padded else {}
    full, hidden = model(tokens, return_hidden=True, **extra)
    cache = model.new_cache(2, 10)
    ctx = model.attention_context(2, 9, cache=cache, **extra)
    trunk = model.trunk_forward(tokens, ctx=ctx)
    last = [model.head_prefill(k, trunk, ctx) for k in range(model.n_future_tokens)]
    torch.testing.assert_close(last[0], hidden[:, -1], atol=ATOL, rtol=0)
    logits = model.output(torch.stack(last, dim=1))  # [B, n, V]
    torch.testing.assert_close(logits, full[:, -1], atol=ATOL, rtol=0)
    # The prefix keys/values in the cache serve the next token as a full prefill would.
    nxt = torch.randint(1, 128, (2, 1))
    step_extra = (
        dict(positions=positions[:, -1:] + 1, key_padding_mask=torch.cat([valid, valid[:, -1:]], 1))
        if padded
        else {}
    )
    step = model(nxt, start_pos=9, cache=cache, **step_extra)
    reference = model.new_cache(2, 10)
    model(tokens, cache=reference, **extra)
    expected = model(nxt, start_pos=9, cache=reference, **step_extra)
    torch.testing.assert_close(step, expected, atol=ATOL, rtol=0)


def test_head_prefill_needs_a_cache(model: MTPTransformer) -> None:
    ctx = model.attention_context(1, 3)
    with torch.no_grad(), pytest.raises(ValueError, match="needs a cache"):
        model.head_prefill(0, torch.zeros(1, 3, model.args.dim, dtype=torch.float64), ctx)
