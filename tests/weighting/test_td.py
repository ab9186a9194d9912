"""TD errors and weights against a slow per-sequence reference."""

from __future__ import annotations

import math

import pytest
import torch

from weighted_mtp.weighting import td_errors, td_weights


def _reference_td(values, rewards, mask, gamma):
    out = torch.zeros_like(values)
    for b in range(values.shape[0]):
        idx = [t for t in range(values.shape[1]) if mask[b, t]]
        for i, t in enumerate(idx):
            if i == len(idx) - 1:
                out[b, t] = rewards[b] - values[b, t]
            else:
                out[b, t] = gamma * values[b, t + 1] - values[b, t]
    return out


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(4, 9, generator=g, dtype=torch.float64)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    mask = torch.zeros(4, 9, dtype=torch.bool)
    mask[0, 2:9] = True  # span reaches the last column
    mask[1, 3:6] = True  # right padding after position 5
    mask[2, 0:1] = True  # a one-token output
    # row 3: no output at all (fully masked row)
    return values, rewards, mask


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_td_errors_match_reference(gamma):
    values, rewards, mask = _batch()
    got = td_errors(values, rewards, mask, gamma=gamma)
    torch.testing.assert_close(got, _reference_td(values, rewards, mask, gamma))


def test_terminal_is_each_rows_own_last_masked_position():
    values, rewards, mask = _batch()
    td = td_errors(values, rewards, mask)
    # row 1 ends at column 5, long before the batch's last column
    assert td[1, 5].item() == pytest.approx(rewards[1].item() - values[1, 5].item())
    assert td[1, 4].item() == pytest.approx(values[1, 5].item() - values[1, 4].item())
    assert torch.all(td[~mask] == 0)
    assert torch.all(td[3] == 0)


def test_td_errors_do_not_backpropagate():
    values, rewards, mask = _batch()
    values.requires_grad_(True)
    assert not td_errors(values, rewards, mask).requires_grad


def test_td_weights_formula_and_masking():
    values, rewards, mask = _batch(1)
    td = td_errors(values, rewards, mask)
    w = td_weights(td, mask, beta=0.9, w_min=0.1, w_max=5.0)
    for b, t in zip(*torch.nonzero(mask, as_tuple=True), strict=True):
        expect = min(5.0, max(0.1, math.exp(td[b, t].item() / 0.9)))
        assert w[b, t].item() == pytest.approx(expect)
    assert torch.all(w[~mask] == 0)


def test_td_weights_saturate_instead_of_overflowing():
    td = torch.tensor([[1e4, -1e4, 0.0]], dtype=torch.float16)
    w = td_weights(td, torch.ones(1, 3, dtype=torch.bool), beta=0.01)
    assert w.tolist() == [[5.0, pytest.approx(0.1, rel=1e-2), 1.0]]


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="mask shape"):
        td_errors(torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        td_weights(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="beta"):
        td_weights(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), beta=0.0)
