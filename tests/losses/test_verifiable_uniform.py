"""The control's loss (``verifiable_uniform``): verifiable's value loss with every MTP weight 1,
against a direct computation (loops over rows, heads and tokens, plain autograd, float64), and
its metrics: the TD weights it would have applied, as verifiable logs them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from weighted_mtp.alignment import IGNORE_INDEX, head_valid_counts, shift_labels
from weighted_mtp.losses import (
    BaselineMethod,
    LossContext,
    VerifiableMethod,
    VerifiableUniformMethod,
)
from weighted_mtp.models import MTPTransformer, ValueHead, debug_args
from weighted_mtp.training.config import VerifiableParams
from weighted_mtp.training.module import MTPTrainingModule, build_method

B, T, V, N_HEADS, DIM = 3, 12, 40, 4, 32
KNOBS = {"value_coef": 0.7, "beta": 0.5, "w_min": 0.2, "w_max": 3.0, "gamma": 1.0}


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = MTPTransformer(debug_args(vocab_size=V, dim=DIM, n_heads=4, n_kv_heads=2)).double()
    head = ValueHead(DIM).double()
    # A loud critic: TD errors of order 1, so that verifiable's weights are far from 1.
    with torch.no_grad():
        head.weight.mul_(20.0)
    tokens = torch.randint(0, V, (B, T))
    labels = tokens.clone()
    labels[:, :3] = IGNORE_INDEX  # prompt
    labels[1, :5] = IGNORE_INDEX  # a longer prompt
    labels[2, 9:] = IGNORE_INDEX  # padding
    return model, head, tokens, shift_labels(labels), torch.tensor([True, False, True])


def _run(model, head, method, tokens, targets, is_correct):
    module = MTPTrainingModule(model, head, method)
    denoms = head_valid_counts(targets, N_HEADS).double()
    loss, metrics = module(tokens, targets, is_correct, ctx=LossContext(denominators=denoms))
    module.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return float(loss.detach()), metrics.finalize(), grads


def _reference(model, head, tokens, targets, is_correct, coef):
    """Uniform MTP CE (head k at position t predicts targets[t+k], each head averaged over its
    valid tokens) + coef x mean over output positions of (V(s_t) - R)^2, by loops."""
    logits, hidden = model(tokens, return_hidden=True)
    values = head(hidden, targets != IGNORE_INDEX)
    total = 0.0
    for k in range(N_HEADS):
        acc, n = 0.0, 0
        for b in range(B):
            for t in range(T - k):
                if targets[b, t + k] == IGNORE_INDEX:
                    continue
                acc = acc + F.cross_entropy(logits[b, t, k][None], targets[b, t + k][None])
                n += 1
        total = total + acc / n
    sq, n = 0.0, 0
    for b in range(B):
        for t in range(T):
            if targets[b, t] != IGNORE_INDEX:
                sq = sq + (values[b, t] - float(is_correct[b])) ** 2
                n += 1
    return total + coef * sq / n


def test_control_is_the_uniform_mtp_loss_plus_the_value_loss(setup):
    model, head, tokens, targets, is_correct = setup
    method = build_method("verifiable_uniform", VerifiableParams(**KNOBS))
    assert type(method) is VerifiableUniformMethod and method.name == "verifiable_uniform"
    loss, metrics, grads = _run(model, head, method, tokens, targets, is_correct)

    ref = _reference(model, head, tokens, targets, is_correct, KNOBS["value_coef"])
    ref.backward()
    assert loss == pytest.approx(float(ref.detach()), abs=1e-10)
    assert metrics["train/loss"] == pytest.approx(float(ref.detach()), abs=1e-10)
    # The same parameters under the module's names (policy and value head alike).
    named = MTPTrainingModule(model, head, method).named_parameters()
    ref_grads = {n: p.grad for n, p in named if p.grad is not None}
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-9, atol=1e-11, msg=name)

    # verifiable with its weights clamped to [1, 1] is the same loss and gradient.
    clamped = VerifiableMethod(**{**KNOBS, "w_min": 1.0, "w_max": 1.0})
    loss_1, _, grads_1 = _run(model, head, clamped, tokens, targets, is_correct)
    assert loss == pytest.approx(loss_1, abs=1e-12)
    for name, g in grads.items():
        torch.testing.assert_close(g, grads_1[name], rtol=1e-10, atol=1e-12, msg=name)

    # Its MTP part is exactly the baseline's loss on the same rows.
    _, baseline, _ = _run(model, None, BaselineMethod(), tokens, targets, is_correct)
    assert metrics["train/mtp_loss"] == pytest.approx(baseline["train/loss"], abs=1e-12)


def test_control_logs_the_weights_it_leaves_out_and_verifiable_applies_them(setup):
    model, head, tokens, targets, is_correct = setup
    uniform = _run(
        model,
        head,
        build_method("verifiable_uniform", VerifiableParams(**KNOBS)),
        tokens,
        targets,
        is_correct,
    )
    weighted = _run(model, head, VerifiableMethod(**KNOBS), tokens, targets, is_correct)
    _, m_uniform, _ = uniform
    _, m_weighted, _ = weighted
    # The critic's weights are far from uniform here...
    assert m_weighted["weights/std"] > 0.1
    # ...and the control reports them as verifiable does (same names, same values),
    for name in m_weighted:
        if name.startswith(("td/", "weights/", "critic/")) or name == "train/value_loss":
            assert m_uniform[name] == pytest.approx(m_weighted[name], rel=1e-12, abs=1e-12), name
    assert set(m_uniform) == set(m_weighted)
    # ...but trains on the unweighted loss.
    assert abs(m_uniform["train/mtp_loss"] - m_weighted["train/mtp_loss"]) > 1e-3
    assert abs(uniform[0] - weighted[0]) > 1e-3
