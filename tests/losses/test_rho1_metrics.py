"""Rho-1's diagnostics: the held-out excess loss per head (against a token loop), the premise
flags derived from it, and the fraction of head-0 tokens dropped."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from weighted_mtp.alignment import IGNORE_INDEX, head_valid_counts
from weighted_mtp.losses.methods import LossContext, Rho1Method
from weighted_mtp.models import MTPTransformer, debug_args
from weighted_mtp.training.module import MTPTrainingModule

B, T, V, N_HEADS = 3, 12, 40, 4


@pytest.fixture
def data():
    torch.manual_seed(0)
    model = MTPTransformer(debug_args(vocab_size=V, dim=32, n_heads=4, n_kv_heads=2)).double()
    tokens = torch.randint(0, V, (B, T))
    targets = torch.roll(tokens, -1, 1)
    targets[:, :3] = IGNORE_INDEX
    targets[2, 8:] = IGNORE_INDEX
    targets[:, -1] = IGNORE_INDEX
    ref_ce = torch.rand(B, T, dtype=torch.float64) * 4
    return model, tokens, targets, ref_ce


def test_validation_excess_per_head_matches_a_token_loop(data):
    model, tokens, targets, ref_ce = data
    calls = []

    def reference(ids: torch.Tensor, tg: torch.Tensor) -> torch.Tensor:
        calls.append(ids)
        return ref_ce

    module = MTPTrainingModule(model, None, Rho1Method(reference=reference))
    is_correct = torch.tensor([True, False, True])  # row 1 is left out
    ctx = LossContext(denominators=head_valid_counts(targets, N_HEADS).double())
    with torch.no_grad():
        metrics, _ = module(tokens, targets, is_correct, None, ctx=ctx, mode="validate")
        logits = model(tokens)
    values = metrics.finalize()
    assert len(calls) == 1  # the reference CE was computed for the validation rows
    assert "val/loss" in values  # the shared validation metrics are still there
    for k in range(N_HEADS):
        excess = []
        for b in (0, 2):
            for t in range(T - k):
                j = t + k
                if targets[b, j] != IGNORE_INDEX:
                    ce = F.cross_entropy(logits[b, t, k][None], targets[b, j][None])
                    excess.append(float(ce) - float(ref_ce[b, j]))
        expected = sum(excess) / len(excess)
        assert values[f"val/rho1_excess_head_{k}"] == pytest.approx(expected, abs=1e-10), k


def test_premise_flags():
    method = Rho1Method()
    values = {"val/loss": 1.0, "val/rho1_excess_head_0": 0.2, "val/rho1_excess_head_1": 0.5}
    assert method.validation_summary(values) == {
        "val/rho1_premise_holds_head_0": 1.0,
        "val/rho1_premise_holds_head_1": 1.0,
        "val/rho1_premise_holds": 1.0,
    }
    values["val/rho1_excess_head_0"] = -0.8
    out = method.validation_summary(values)
    assert out["val/rho1_premise_holds_head_0"] == 0.0 and out["val/rho1_premise_holds"] == 0.0
    assert method.validation_summary({"val/loss": 1.0}) == {}


@pytest.mark.parametrize(("head0_always", "expected"), [(True, 0.0), (False, 1 - 0.6)])
def test_dropped_fraction_of_head_0(data, head0_always, expected):
    model, tokens, targets, ref_ce = data
    method = Rho1Method(reference=lambda i, t: ref_ce, top_k=0.6, head0_always=head0_always)
    module = MTPTrainingModule(model, None, method)
    ctx = LossContext(denominators=head_valid_counts(targets, N_HEADS).double())
    _, metrics = module(tokens, targets, None, ref_ce, ctx=ctx)
    values = metrics.finalize()
    n0 = int((targets != IGNORE_INDEX).sum())
    # The exact count: ceil(0.6 n) kept, so a little less than 0.4 dropped.
    dropped = 0.0 if head0_always else (n0 - -(-6 * n0 // 10)) / n0
    assert values["rho1/dropped_fraction_head_0"] == pytest.approx(dropped, abs=1e-12)
    assert dropped == pytest.approx(expected, abs=0.05)
    assert values["rho1/kept_ratio_head_0"] == pytest.approx(1 - dropped, abs=1e-12)
