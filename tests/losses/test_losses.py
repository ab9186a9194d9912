"""Every method's loss against a direct computation written here: loops over rows, heads and
tokens, plain autograd, float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from weighted_mtp.alignment import IGNORE_INDEX, head_valid_counts, shift_labels
from weighted_mtp.losses import (
    BaselineMethod,
    Batch,
    CriticMethod,
    LossContext,
    Rho1Method,
    RowGroup,
    VerifiableMethod,
    linear_cross_entropy,
    mtp_cross_entropy,
)
from weighted_mtp.models import MTPTransformer, ValueHead, debug_args
from weighted_mtp.training.module import MTPTrainingModule

B, T, V, N_HEADS = 3, 14, 40, 4


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = MTPTransformer(debug_args(vocab_size=V, dim=32, n_heads=4, n_kv_heads=2)).double()
    head = ValueHead(32).double()
    tokens = torch.randint(0, V, (B, T))
    labels = tokens.clone()
    labels[:, :4] = IGNORE_INDEX  # prompt
    labels[1, :6] = IGNORE_INDEX  # a longer prompt
    labels[2, 10:] = IGNORE_INDEX  # padding
    targets = shift_labels(labels)
    is_correct = torch.tensor([True, False, True])
    return model, head, tokens, targets, is_correct


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _naive_hiddens(model, tokens):
    logits, _ = model(tokens, return_hidden=True)
    ctx = model.attention_context(*tokens.shape)
    trunk = model.trunk_forward(tokens, ctx=ctx)
    hiddens = [model.head_forward(k, trunk, ctx=ctx) for k in range(model.n_future_tokens)]
    return logits, hiddens


def _loop_mtp(logits, targets, weight_of=lambda b, j, k: 1.0, denom_of=None):
    """Sum over heads of sum_w(ce) / (valid count), by loops: head k at position t predicts
    targets[t+k]."""
    total = 0.0
    for k in range(logits.shape[2]):
        acc, n = 0.0, 0
        for b in range(logits.shape[0]):
            for t in range(T - k):
                j = t + k
                if targets[b, j] == IGNORE_INDEX:
                    continue
                ce = F.cross_entropy(logits[b, t, k][None], targets[b, j][None])
                acc = acc + weight_of(b, j, k) * ce
                n += 1
        denom = n if denom_of is None else denom_of(k)
        total = total + (acc / denom if denom else 0.0)
    return total


@pytest.mark.parametrize("chunk", [1, 5, 1024])
def test_linear_cross_entropy_matches_autograd(chunk):
    torch.manual_seed(1)
    h = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, 8, dtype=torch.float64, requires_grad=True)
    tgt = torch.randint(0, V, (11,))
    coef = torch.rand(11, dtype=torch.float64)
    loss, ce, used = linear_cross_entropy(
        h, w, tgt, [RowGroup(0, 4, coef=coef[:4]), RowGroup(4, 11, coef=coef[4:])], chunk_size=chunk
    )
    (loss * 3.0).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref_ce = F.cross_entropy(h @ w.T, tgt, reduction="none")
    ((ref_ce * coef).sum() * 3.0).backward()
    torch.testing.assert_close(ce, ref_ce.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(used, coef, rtol=0, atol=0)
    torch.testing.assert_close(gh, h.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(gw, w.grad, rtol=0, atol=1e-12)


def test_linear_cross_entropy_coef_fn_sees_losses_and_no_grad_path():
    torch.manual_seed(2)
    h = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, 8, dtype=torch.float64)
    tgt = torch.randint(0, V, (6,))
    seen = []

    def keep_top_half(ce):
        seen.append(ce.clone())
        return (ce >= ce.median()).double()

    loss, ce, coef = linear_cross_entropy(
        h, w, tgt, [RowGroup(0, 6, coef_fn=keep_top_half)], chunk_size=2
    )
    ref = F.cross_entropy(h @ w.T, tgt, reduction="none")
    torch.testing.assert_close(seen[0], ref.detach())
    loss.backward()
    g = h.grad.clone()
    h.grad = None
    (ref * (ref.detach() >= ref.detach().median())).sum().backward()
    torch.testing.assert_close(g, h.grad, rtol=0, atol=1e-12)
    with torch.no_grad():
        loss2, _, _ = linear_cross_entropy(h, w, tgt, [RowGroup(0, 6, coef_fn=keep_top_half)])
    assert float(loss2) == pytest.approx(float(loss.detach()))


def test_collator_batch_through_loss_counts_tokens_per_head():
    """The real producer (collator) feeding the real consumer (the MTP loss): counted tokens
    per head equal a hand count."""
    from weighted_mtp.data.collator import PromptOutputCollator

    class CharTokenizer:  # one token per character: lengths are countable by hand
        vocab_size, bos_id, eos_id, pad_id = 300, 1, 2, 0

        def encode_batch(self, texts):
            return [[3 + (ord(c) % 250) for c in t] for t in texts]

    collator = PromptOutputCollator(CharTokenizer(), max_length=400)
    records = [
        {"instruction": "add", "input": "", "output": "abcdef"},  # 6 output tokens + EOS
        {"instruction": "say hi", "input": "", "output": "hi"},  # 2 + EOS
    ]
    batch = collator(records)
    targets = shift_labels(batch["labels"])
    # Head k counts the targets it can reach: output tokens + EOS = 7 and 3, minus nothing
    # for head 0; head k loses the first k targets of each row only if they sit before
    # column k, which a prompt of >= 4 tokens never allows: so every head sees 7 + 3 = 10.
    prompts = [len(collator.encode([r])[0][0]) for r in records]
    assert min(prompts) > N_HEADS
    expected = [10] * N_HEADS
    assert head_valid_counts(targets, N_HEADS).tolist() == expected
    torch.manual_seed(0)
    model = MTPTransformer(debug_args(vocab_size=300, dim=32, n_heads=4, n_kv_heads=2))
    ctx = model.attention_context(*batch["input_ids"].shape)
    trunk = model.trunk_forward(batch["input_ids"], ctx=ctx)
    hiddens = [model.head_forward(k, trunk, ctx=ctx) for k in range(N_HEADS)]
    out = mtp_cross_entropy(hiddens, model.output.weight, targets)
    assert out.n_tokens.tolist() == expected
    # The last target each row trains on is EOS, never padding or token 0.
    for b in range(2):
        valid = (targets[b] != IGNORE_INDEX).nonzero().flatten()
        assert int(targets[b, valid[-1]]) == CharTokenizer.eos_id
        assert (targets[b, valid] != CharTokenizer.pad_id).all()


def test_head_alignment_near_the_end():
    """Head k never reads past T: a target at column T-1 is reached by head k from t=T-1-k."""
    labels = torch.full((1, 6), IGNORE_INDEX)
    labels[0, 1:] = torch.tensor([5, 6, 7, 8, 9])
    targets = shift_labels(labels)
    assert targets[0].tolist() == [5, 6, 7, 8, 9, IGNORE_INDEX]
    assert head_valid_counts(targets, 4).tolist() == [5, 4, 3, 2]


def test_baseline_matches_loops_and_gradients(setup):
    model, _, tokens, targets, _ = setup
    module = MTPTrainingModule(model, None, BaselineMethod())
    denoms = head_valid_counts(targets, N_HEADS).double()
    loss, metrics = module(tokens, targets, ctx=LossContext(denominators=denoms, chunk_size=7))
    loss.backward()
    ours = _grads(model)
    model.zero_grad(set_to_none=True)
    logits, _ = _naive_hiddens(model, tokens)
    ref = _loop_mtp(logits, targets)
    ref.backward()
    assert float(loss) == pytest.approx(float(ref), abs=1e-12)
    assert metrics.finalize()["train/loss"] == pytest.approx(float(ref), abs=1e-12)
    for name, g in _grads(model).items():
        torch.testing.assert_close(ours[name], g, rtol=1e-9, atol=1e-12, msg=name)


def test_loss_scale_and_global_denominators(setup):
    """Two micro-batches with step-level denominators sum to the full-batch loss; loss_scale
    multiplies the value (world size under DDP), not the reported metric."""
    model, _, tokens, targets, _ = setup
    module = MTPTrainingModule(model, None, BaselineMethod())
    denoms = head_valid_counts(targets, N_HEADS).double()
    full, _ = module(tokens, targets, ctx=LossContext(denominators=denoms))
    parts = []
    for rows in (slice(0, 1), slice(1, 3)):
        loss, m = module(
            tokens[rows], targets[rows], ctx=LossContext(denominators=denoms, loss_scale=2.0)
        )
        parts.append((float(loss), m.finalize()["train/loss"]))
    assert sum(p[0] for p in parts) == pytest.approx(2 * float(full), abs=1e-12)
    assert sum(p[1] for p in parts) == pytest.approx(float(full), abs=1e-12)


def test_critic_matches_direct_mse_and_trains_only_value_head(setup):
    model, head, tokens, targets, is_correct = setup
    module = MTPTrainingModule(model, head, CriticMethod())
    assert all(not p.requires_grad for p in model.parameters())
    denoms = head_valid_counts(targets, N_HEADS).double()
    loss, metrics = module(tokens, targets, is_correct, ctx=LossContext(denominators=denoms))
    loss.backward()
    _, hidden = model(tokens, return_hidden=True)
    values = head(hidden, targets != IGNORE_INDEX)
    acc, n = 0.0, 0
    for b in range(B):
        for t in range(T):
            if targets[b, t] != IGNORE_INDEX:
                acc = acc + (values[b, t] - float(is_correct[b])) ** 2
                n += 1
    assert float(loss) == pytest.approx(float(acc / n), abs=1e-12)
    assert all(p.grad is None for p in model.parameters())
    assert head.weight.grad is not None
    assert 0.0 <= metrics.finalize()["critic/value_accuracy"] <= 1.0


def test_verifiable_matches_loops(setup):
    model, head, tokens, targets, is_correct = setup
    beta, w_min, w_max, coef = 0.9, 0.1, 5.0, 0.5
    method = VerifiableMethod(value_coef=coef, beta=beta, w_min=w_min, w_max=w_max, gamma=1.0)
    module = MTPTrainingModule(model, head, method)
    denoms = head_valid_counts(targets, N_HEADS).double()
    loss, metrics = module(tokens, targets, is_correct, ctx=LossContext(denominators=denoms))
    loss.backward()
    ours = _grads(module)
    module.zero_grad(set_to_none=True)

    logits, hidden = model(tokens, return_hidden=True)
    values = head(hidden, targets != IGNORE_INDEX)
    v = values.detach()
    weights = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        valid = [t for t in range(T) if targets[b, t] != IGNORE_INDEX]
        for i, t in enumerate(valid):
            target_v = float(is_correct[b]) if i == len(valid) - 1 else float(v[b, valid[i + 1]])
            td = target_v - float(v[b, t])
            weights[b, t] = min(max(math.exp(td / beta), w_min), w_max)
    ce = _loop_mtp(logits, targets, weight_of=lambda b, j, k: weights[b, j])
    sq, n = 0.0, 0
    for b in range(B):
        for t in range(T):
            if targets[b, t] != IGNORE_INDEX:
                sq = sq + (values[b, t] - float(is_correct[b])) ** 2
                n += 1
    ref = ce + coef * sq / n
    ref.backward()
    assert float(loss) == pytest.approx(float(ref), abs=1e-10)
    for name, g in _grads(module).items():
        torch.testing.assert_close(ours[name], g, rtol=1e-9, atol=1e-11, msg=name)
    m = metrics.finalize()
    assert m["weights/min"] >= w_min - 1e-12 and m["weights/max"] <= w_max + 1e-12


@pytest.mark.parametrize("head0_always", [True, False])
def test_rho1_matches_loops(setup, head0_always):
    model, _, tokens, targets, _ = setup
    top_k = 0.5
    ref_ce = torch.rand(B, T, dtype=torch.float64) * 3
    method = Rho1Method(reference=lambda ids, tg: ref_ce, top_k=top_k, head0_always=head0_always)
    module = MTPTrainingModule(model, None, method)
    batch = Batch(input_ids=tokens, targets=targets)
    method.prepare(batch)
    denoms = head_valid_counts(targets, N_HEADS).double()
    loss, metrics = module(tokens, targets, None, batch.ref_ce, ctx=LossContext(denoms))
    loss.backward()
    ours = _grads(model)
    model.zero_grad(set_to_none=True)

    logits, _ = _naive_hiddens(model, tokens)
    total = 0.0
    for k in range(N_HEADS):
        items = []
        for b in range(B):
            for t in range(T - k):
                j = t + k
                if targets[b, j] == IGNORE_INDEX:
                    continue
                ce = F.cross_entropy(logits[b, t, k][None], targets[b, j][None])
                items.append((float(ce) - float(ref_ce[b, j]), ce))
        if k == 0 and head0_always:
            kept = [ce for _, ce in items]
        else:
            n_keep = max(1, math.ceil(top_k * len(items)))
            threshold = sorted((e for e, _ in items), reverse=True)[n_keep - 1]
            kept = [ce for e, ce in items if e >= threshold]
        total = total + sum(kept) / len(kept)
    total.backward()
    assert float(loss) == pytest.approx(float(total), abs=1e-10)
    for name, g in _grads(model).items():
        torch.testing.assert_close(ours[name], g, rtol=1e-9, atol=1e-11, msg=name)
    ratios = metrics.finalize()
    assert ratios["rho1/kept_ratio_head_1"] == pytest.approx(0.5, abs=0.1)
    if head0_always:
        assert ratios["rho1/kept_ratio_head_0"] == 1.0


def test_rho1_head0_is_normalised_by_the_step_count_like_baseline(setup):
    """With accumulation, head 0 (always trained) of rho1 equals the baseline's head 0: both
    divide by the step's token count, whatever the micro-batch split."""
    model, _, tokens, targets, _ = setup
    ref_ce = torch.rand(B, T, dtype=torch.float64)
    denoms = head_valid_counts(targets, N_HEADS).double()
    rho1 = MTPTrainingModule(model, None, Rho1Method(reference=lambda i, t: ref_ce))
    base = MTPTrainingModule(model, None, BaselineMethod())
    totals = {"rho1": 0.0, "base": 0.0}
    parts = (slice(0, 1), slice(1, 3))
    micro = torch.stack([head_valid_counts(targets[r], N_HEADS).double() for r in parts])
    for rows in parts:
        ctx = LossContext(denominators=denoms, n_micro=2, micro_counts=micro)
        _, m = rho1(tokens[rows], targets[rows], None, ref_ce[rows], ctx=ctx)
        totals["rho1"] += m.finalize()["train/head_0_loss"]
        _, m = base(tokens[rows], targets[rows], ctx=ctx)
        totals["base"] += m.finalize()["train/head_0_loss"]
    assert totals["rho1"] == pytest.approx(totals["base"], abs=1e-12)
