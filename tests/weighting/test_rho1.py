"""Rho-1 selection against a sort-based reference."""

from __future__ import annotations

import math

import pytest
import torch

from weighted_mtp.weighting import (
    exact_top_k,
    n_selected,
    n_selected_counts,
    rho1_mask,
    selection_threshold,
)


def test_keeps_top_fraction_of_valid_tokens_only():
    g = torch.Generator().manual_seed(0)
    excess = torch.randn(3, 10, generator=g)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[0, :4] = False
    mask[2, 7:] = False
    excess[~mask] = 100.0  # invalid tokens must never be selected, however large
    kept = rho1_mask(excess, mask, k=0.6)
    valid = excess[mask]
    n_keep = math.ceil(0.6 * valid.numel())
    expected_threshold = torch.sort(valid, descending=True).values[n_keep - 1]
    assert kept.sum().item() == n_keep
    assert not torch.any(kept & ~mask)
    assert torch.all(excess[kept] >= expected_threshold)
    assert torch.all(excess[mask & ~kept] < expected_threshold)


def test_global_threshold_selects_across_shards():
    g = torch.Generator().manual_seed(1)
    full = torch.randn(4, 6, generator=g)
    mask = torch.ones(4, 6, dtype=torch.bool)
    threshold = selection_threshold(full[mask], 0.25)
    shard_a = rho1_mask(full[:2], mask[:2], 0.25, threshold=threshold)
    shard_b = rho1_mask(full[2:], mask[2:], 0.25, threshold=threshold)
    assert torch.equal(torch.cat([shard_a, shard_b]), rho1_mask(full, mask, 0.25))


def test_empty_and_invalid_inputs():
    assert not rho1_mask(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool)).any()
    with pytest.raises(ValueError, match="k must be"):
        rho1_mask(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), k=0.0)


def test_exact_top_k_keeps_exactly_n_selected_with_ties_in_order():
    values = torch.tensor([0.5, 2.0, 1.0, 1.0, 1.0, -3.0, 1.0])
    kept = exact_top_k(values, 0.5)  # ceil(3.5) = 4: the 2.0 and the first three 1.0s
    assert kept.tolist() == [False, True, True, True, True, False, False]
    g = torch.Generator().manual_seed(2)
    for n in (1, 7, 50):
        x = torch.randn(n, generator=g, dtype=torch.float64)
        for k in (0.1, 0.6, 1.0):
            kept = exact_top_k(x, k)
            assert int(kept.sum()) == n_selected(n, k)
            if not kept.all():
                assert x[kept].min() > x[~kept].max()
    assert exact_top_k(torch.zeros(0), 0.6).numel() == 0


def test_n_selected_counts_matches_n_selected():
    counts = torch.tensor([[0.0, 1.0, 2.0], [3.0, 10.0, 17.0]], dtype=torch.float64)
    for k in (0.05, 0.3, 0.6, 1.0):
        expected = [[n_selected(int(n), k) for n in row] for row in counts.tolist()]
        assert n_selected_counts(counts, k).tolist() == expected
    with pytest.raises(ValueError, match="k must be"):
        n_selected_counts(counts, 1.5)
