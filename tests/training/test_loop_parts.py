"""The loop's small pure parts: schedule, parameter groups, metric reduction, the NaN guard."""

from __future__ import annotations

import math

import pytest
import torch

from weighted_mtp.losses.metric_values import MetricValues
from weighted_mtp.models import MTPTransformer, ValueHead, debug_args
from weighted_mtp.training.config import BaselineParams, RuntimeParams, VerifiableParams
from weighted_mtp.training.optim import lr_factor, param_groups
from weighted_mtp.training.step_metrics import NonFiniteLossError, _check_finite


def test_warmup_then_cosine():
    f = [lr_factor(s, warmup_steps=4, max_steps=14, min_ratio=0.1) for s in range(15)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == pytest.approx(1.0)
    assert f[9] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert f[14] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[4:], f[5:], strict=False))


def test_no_decay_on_norms_and_vectors():
    model = MTPTransformer(debug_args(dim=32, n_heads=4, n_kv_heads=2))
    module = torch.nn.ModuleDict({"model": model, "value_head": ValueHead(32)})
    decay, no_decay = param_groups(module, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.named_parameters()}
    head_vectors = {"value_head.bias", "value_head.features.bias"}
    assert all("norm" in names[id(p)] or names[id(p)] in head_vectors for p in no_decay["params"])
    assert any(names[id(p)] == "value_head.weight" for p in decay["params"])
    model.requires_grad_(False)
    only, bias = param_groups(module, 0.1)
    assert [names[id(p)] for p in only["params"]] == [
        "value_head.weight",
        "value_head.features.weight",
    ]
    assert [names[id(p)] for p in bias["params"]] == [
        "value_head.bias",
        "value_head.norm.weight",
        "value_head.features.bias",
    ]
    assert bias["weight_decay"] == 0.0


def test_metric_reduction_is_exact_across_splits():
    x = torch.tensor([1.0, 2.0, 4.0, 8.0, 3.0])
    y = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0])
    whole = MetricValues()
    whole.add_moments("td", x)
    whole.add_pearson("corr", x, y)
    parts = MetricValues()
    for sl in (slice(0, 2), slice(2, 5)):
        piece = MetricValues()
        piece.add_moments("td", x[sl])
        piece.add_pearson("corr", x[sl], y[sl])
        parts.merge(MetricValues.from_plain(piece.to_plain()))
    a, b = whole.finalize(), parts.finalize()
    assert a == pytest.approx(b)
    assert a["td/std"] == pytest.approx(float(x.std(unbiased=False)))
    expected = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
    assert a["corr"] == pytest.approx(expected)


def test_nan_loss_names_step_and_part():
    metrics = MetricValues()
    metrics.add_sum("train/head_0_loss", 2.0)
    metrics.add_sum("train/head_2_loss", math.nan)
    with pytest.raises(NonFiniteLossError, match=r"step 7: train/head_2_loss"):
        _check_finite(metrics, torch.tensor(math.nan), 6, "baseline")
    _check_finite(metrics, torch.tensor(1.0), 6, "baseline")  # a finite total passes


@pytest.mark.parametrize(
    ("model", "raw", "field"),
    [
        (BaselineParams, {"lr": -1}, "lr"),
        (BaselineParams, {"max_steps": "abc"}, "max_steps"),
        (BaselineParams, {"learning_rate": 0.1}, "learning_rate"),
        (VerifiableParams, {"w_min": 6.0, "w_max": 5.0}, "w_min"),
        (RuntimeParams, {"strategy": "zero3"}, "strategy"),
        (RuntimeParams, {"nnodes": 2, "node_rank": 2}, "node_rank"),
    ],
)
def test_bad_parameters_name_the_field(model, raw, field):
    with pytest.raises(ValueError, match=field):
        model.model_validate(raw)
