"""The head-by-head MTP loss gives the naive all-heads loss's values and gradients."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from weighted_mtp.models import (
    IGNORE_INDEX,
    MTPTransformer,
    ValueHead,
    debug_args,
    mtp_loss_head_by_head,
    mtp_loss_naive,
    shift_labels,
)

TOL = dict(atol=1e-10, rtol=1e-10)
B, T, V, N_HEADS = 3, 12, 64, 4


@pytest.fixture(scope="module")
def model() -> MTPTransformer:
    torch.manual_seed(0)
    args = debug_args(dim=32, n_layers=6, n_kv_heads=2, vocab_size=V, n_future_tokens=N_HEADS)
    return MTPTransformer(args).double()


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """Left-padded rows with a prompt: targets only on output tokens."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V, (B, T), generator=gen)
    n_pad = torch.tensor([0, 3, 1])
    n_prompt = torch.tensor([4, 2, 6])
    labels = tokens.clone()
    attention = torch.ones(B, T, dtype=torch.bool)
    for row in range(B):
        tokens[row, : n_pad[row]] = 0
        attention[row, : n_pad[row]] = False
        labels[row, : n_pad[row] + n_prompt[row]] = IGNORE_INDEX
    labels[2, -2:] = IGNORE_INDEX  # right padding after an EOS as well
    positions = (attention.long().cumsum(-1) - 1).clamp(min=0)
    return {
        "tokens": tokens,
        "targets": shift_labels(labels),
        "positions": positions,
        "key_padding_mask": attention,
    }


def _grads(modules: list[torch.nn.Module], run: Callable[[], object]) -> tuple[object, dict]:
    for module in modules:
        module.zero_grad(set_to_none=True)
    out = run()
    grads = {
        f"{i}.{name}": p.grad.clone()
        for i, module in enumerate(modules)
        for name, p in module.named_parameters()
        if p.grad is not None
    }
    return out, grads


def _assert_same(naive: dict, hbh: dict) -> None:
    assert naive.keys() == hbh.keys() and naive
    for name in naive:
        torch.testing.assert_close(hbh[name], naive[name], **TOL, msg=name)


def _naive_backward(model, batch, scale=1.0, **kwargs):
    out = mtp_loss_naive(model, **batch, **kwargs)
    total = out.loss + (out.extra_loss if out.extra_loss is not None else 0)
    (total * scale).backward()
    return out


def test_plain_loss_full_sequences(model: MTPTransformer) -> None:
    tokens = torch.randint(0, V, (B, T))
    batch = {"tokens": tokens, "targets": shift_labels(tokens)}
    naive_out, naive = _grads([model], lambda: _naive_backward(model, batch))
    hbh_out, hbh = _grads([model], lambda: mtp_loss_head_by_head(model, **batch))
    _assert_same(naive, hbh)
    torch.testing.assert_close(hbh_out.head_losses, naive_out.head_losses, **TOL)
    torch.testing.assert_close(hbh_out.loss, naive_out.loss.detach(), **TOL)
    # Head k has T-1-k targets per row: the last k+1 positions predict past the end.
    assert hbh_out.n_tokens.tolist() == [B * (T - 1 - k) for k in range(N_HEADS)]
    # 1-head reading: sum over heads of mean CE.
    logits = model(tokens).detach()
    ce0 = F.cross_entropy(logits[:, :-1, 0].reshape(-1, V), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(hbh_out.head_losses[0], ce0, **TOL)


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_weighted_with_prompt_and_padding(model: MTPTransformer, chunk_size: int | None) -> None:
    batch = _batch()
    weights = torch.rand(B, T, dtype=torch.float64) * 2
    _, naive = _grads([model], lambda: _naive_backward(model, batch, weights=weights))
    _, hbh = _grads(
        [model],
        lambda: mtp_loss_head_by_head(model, **batch, weights=weights, chunk_size=chunk_size),
    )
    _assert_same(naive, hbh)
    # and the unweighted loss on the same batch
    _, naive = _grads([model], lambda: _naive_backward(model, batch))
    _, hbh = _grads([model], lambda: mtp_loss_head_by_head(model, **batch, chunk_size=3))
    _assert_same(naive, hbh)


def test_per_head_weights_weight_normalisation_mean_and_scale(model: MTPTransformer) -> None:
    batch = _batch(seed=2)
    weights = (torch.rand(B, T, N_HEADS, dtype=torch.float64) > 0.4).double()
    kwargs = dict(weights=weights, normalize="weight", head_reduction="mean")
    naive_out, naive = _grads([model], lambda: _naive_backward(model, batch, 0.25, **kwargs))
    hbh_out, hbh = _grads(
        [model], lambda: mtp_loss_head_by_head(model, **batch, loss_scale=0.25, **kwargs)
    )
    _assert_same(naive, hbh)
    torch.testing.assert_close(hbh_out.loss, naive_out.loss.detach(), **TOL)


def test_value_hook_and_weights_from_hidden(model: MTPTransformer) -> None:
    """The verifiable method's shape: TD-like weights and a value MSE from head 0's hidden."""
    torch.manual_seed(3)
    value_head = ValueHead(32).double()
    batch = _batch(seed=3)
    mask = batch["targets"] != IGNORE_INDEX

    def weights_fn(hidden: torch.Tensor) -> torch.Tensor:
        return torch.exp(value_head(hidden).clamp(-2, 2)) * mask

    def value_loss(hidden: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((value_head(hidden) - 1.0)[mask] ** 2).mean()

    kwargs = dict(weights=weights_fn, extra_loss_fn=value_loss)
    naive_out, naive = _grads([model, value_head], lambda: _naive_backward(model, batch, **kwargs))
    hbh_out, hbh = _grads(
        [model, value_head], lambda: mtp_loss_head_by_head(model, **batch, **kwargs)
    )
    assert any(name.startswith("1.") for name in hbh)  # the value head got its gradient
    _assert_same(naive, hbh)
    torch.testing.assert_close(hbh_out.extra_loss, naive_out.extra_loss.detach(), **TOL)


def test_head_weights_fn_sees_each_heads_token_loss(model: MTPTransformer) -> None:
    """Rho-1's shape: weights chosen from each head's own per-token CE."""
    batch = _batch(seed=4)
    seen: dict[int, torch.Tensor] = {}

    def select(k: int, ce: torch.Tensor) -> torch.Tensor:
        seen[k] = ce
        return (ce > ce[ce > 0].median()).double()

    hbh_out, hbh = _grads(
        [model], lambda: mtp_loss_head_by_head(model, **batch, head_weights_fn=select)
    )
    with torch.no_grad():
        logits = model(
            tokens=batch["tokens"],
            positions=batch["positions"],
            key_padding_mask=batch["key_padding_mask"],
        )
    targets = batch["targets"]
    chosen = torch.zeros(B, T, N_HEADS, dtype=torch.float64)
    for k in range(N_HEADS):
        expected = torch.zeros(B, T, dtype=torch.float64)
        valid = targets[:, k:] != IGNORE_INDEX
        ce = F.cross_entropy(
            logits[:, : T - k, k].reshape(-1, V),
            targets[:, k:].clamp(min=0).reshape(-1),
            reduction="none",
        ).view(B, T - k)
        expected[:, k:] = torch.where(valid, ce, 0.0)
        torch.testing.assert_close(seen[k], expected, **TOL)
        chosen[..., k] = (expected > expected[expected > 0].median()).double()
    _, naive = _grads([model], lambda: _naive_backward(model, batch, weights=chosen))
    _assert_same(naive, hbh)


def test_no_grad_gives_values_only(model: MTPTransformer) -> None:
    batch = _batch(seed=5)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        out = mtp_loss_head_by_head(model, **batch)
        ref = mtp_loss_naive(model, **batch)
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(out.head_losses, ref.head_losses, **TOL)


def test_bad_shapes_are_rejected(model: MTPTransformer) -> None:
    tokens = torch.randint(0, V, (2, 6))
    with pytest.raises(ValueError, match="weights must be"):
        mtp_loss_head_by_head(model, tokens, shift_labels(tokens), torch.ones(2, 5))
    with pytest.raises(ValueError, match="targets must both be"):
        mtp_loss_head_by_head(model, tokens, tokens[:, :-1])
