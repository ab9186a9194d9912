"""Rho-1 selection against a sort-based reference."""

from __future__ import annotations

import math

import pytest
import torch

from weighted_mtp.weighting import rho1_mask, selection_threshold


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
