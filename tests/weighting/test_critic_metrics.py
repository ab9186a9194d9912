"""The critic's diagnostics against textbook values and slow references: DeLong's AUC interval,
the Brier skill score, V at fractions of each program, and the bug-token classes and their
bug-localisation AUC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from weighted_mtp.metrics import auc_delong, brier_skill, roc_auc
from weighted_mtp.weighting.metrics import (
    bug_token_classes,
    value_panel_parts,
    value_panel_summary,
    values_at_fractions,
)


def _delong_slow(pos: list[float], neg: list[float]) -> tuple[float, float]:
    """AUC and its DeLong variance from the placement values, by double loops."""

    def psi(x: float, y: float) -> float:
        return 1.0 if x > y else 0.5 if x == y else 0.0

    v10 = [sum(psi(x, y) for y in neg) / len(neg) for x in pos]
    v01 = [sum(psi(x, y) for x in pos) / len(pos) for y in neg]
    auc = sum(v10) / len(v10)
    s10 = sum((v - auc) ** 2 for v in v10) / (len(pos) - 1)
    s01 = sum((v - auc) ** 2 for v in v01) / (len(neg) - 1)
    return auc, s10 / len(pos) + s01 / len(neg)


def test_auc_of_hanley_and_mcneil_ct_ratings() -> None:
    # Hanley & McNeil (1982), Table 1: five-point ratings of 58 normal and 51 abnormal CT
    # images; the area under the ROC curve is 0.893.
    normal = [1] * 33 + [2] * 6 + [3] * 6 + [4] * 11 + [5] * 2
    abnormal = [1] * 3 + [2] * 2 + [3] * 2 + [4] * 11 + [5] * 33
    scores = torch.tensor(normal + abnormal, dtype=torch.float64)
    labels = torch.tensor([0] * 58 + [1] * 51).bool()
    auc, low, high = auc_delong(scores, labels)
    assert auc == pytest.approx(0.893, abs=5e-4)
    ref_auc, var = _delong_slow(abnormal, normal)
    half = norm.ppf(0.975) * math.sqrt(var)
    assert auc == pytest.approx(ref_auc, abs=1e-12)
    assert (low, high) == pytest.approx((ref_auc - half, ref_auc + half), abs=1e-12)
    # Hanley-McNeil's approximate standard error of this table is 0.0325; DeLong's is close.
    assert (high - low) / 2 / norm.ppf(0.975) == pytest.approx(0.0325, abs=0.003)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_interval_matches_slow_placements_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = torch.from_numpy(rng.integers(0, 6, size=40).astype(np.float64))
    labels = torch.from_numpy(rng.random(40) < 0.4)
    auc, low, high = auc_delong(scores, labels, level=0.9)
    ref_auc, var = _delong_slow(scores[labels].tolist(), scores[~labels].tolist())
    half = norm.ppf(0.95) * math.sqrt(var)
    assert auc == pytest.approx(ref_auc, abs=1e-12) == pytest.approx(roc_auc(scores, labels))
    assert low == pytest.approx(max(0.0, ref_auc - half), abs=1e-12)
    assert high == pytest.approx(min(1.0, ref_auc + half), abs=1e-12)


def test_auc_edge_cases() -> None:
    perfect = auc_delong(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1]).bool())
    assert perfect == (1.0, 1.0, 1.0)  # no placement varies
    assert all(math.isnan(x) for x in auc_delong(torch.ones(3), torch.ones(3).bool()))
    auc, low, high = auc_delong(torch.tensor([0.3, 0.5, 0.9]), torch.tensor([1, 0, 0]).bool())
    assert auc == 0.0 and math.isnan(low) and math.isnan(high)  # one positive: no variance


def test_brier_skill_against_hand_values() -> None:
    labels = torch.tensor([1, 1, 0, 0]).bool()
    # Base rate 0.5: reference Brier 0.25. Predictions (0.9, 0.6, 0.2, 0.5): Brier
    # (0.01 + 0.16 + 0.04 + 0.25) / 4 = 0.115, skill 1 - 0.115 / 0.25 = 0.54.
    assert brier_skill(torch.tensor([0.9, 0.6, 0.2, 0.5]), labels) == pytest.approx(0.54)
    assert brier_skill(torch.full((4,), 0.5), labels) == pytest.approx(0.0)
    assert brier_skill(labels.double(), labels) == pytest.approx(1.0)
    assert brier_skill(1 - labels.double(), labels) == pytest.approx(-3.0)
    assert math.isnan(brier_skill(torch.ones(3), torch.ones(3).bool()))


def test_values_at_fractions_against_a_loop() -> None:
    values = torch.arange(24, dtype=torch.float64).reshape(3, 8)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[0, 2:7] = True  # 5 positions
    mask[1, 0:8] = True  # 8 positions
    fractions = (0.0, 0.25, 0.5, 0.75, 1.0)
    got = values_at_fractions(values, mask, fractions)
    for b in range(2):
        where = mask[b].nonzero().flatten().tolist()
        for i, q in enumerate(fractions):
            assert got[b, i] == values[b, where[math.floor(q * (len(where) - 1))]]
    assert torch.isnan(got[2]).all()


def test_bug_token_classes_against_a_loop() -> None:
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]])
    bug = torch.tensor([[0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0]])
    onset, span, outside = bug_token_classes(mask.bool(), bug.bool())
    assert onset.tolist()[0] == [False, False, True, False, False, False, False]
    assert span.tolist()[0] == [False, False, True, True, False, False, False]
    # The last masked position (target: EOS) is left out: its TD error is the true reward's.
    assert outside.tolist()[0] == [False, True, False, False, True, False, False]
    # No bug token in the output (row 1: none; row 2: only past the mask): nothing counts.
    assert not (onset[1:].any() or span[1:].any() or outside[1:].any())


def test_value_panel_of_a_perfect_and_of_a_blind_critic() -> None:
    # Row 0 correct; rows 1 and 2 incorrect with a bug starting at target position 3 and 2.
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[:, 1:7] = True
    bug = torch.zeros(3, 8, dtype=torch.bool)
    bug[1, 3:5] = True
    bug[2, 2:3] = True
    rewards = torch.tensor([1.0, 0.0, 0.0])
    positions = torch.arange(8)[None, :]
    onsets = torch.tensor([8, 3, 2])[:, None]
    perfect = (positions <= onsets).double()  # 1 up to the state before the bug's token
    parts = value_panel_parts(perfect, mask, rewards, bug)
    out = value_panel_summary(parts)
    assert out["val/bug_auc"] == 1.0 and out["val/n_bug_rows"] == 2
    assert out["val/value_auc"] == 1.0 and out["val/value_brier_skill"] == pytest.approx(1.0)
    assert out["val/bug_onset_weight_mean"] == pytest.approx(math.exp(-1 / 0.9))
    assert out["val/nonbug_weight_mean"] == pytest.approx(1.0)
    # Row 1's span has a second token after the drop: a tie with the rest of the program.
    assert out["val/bug_weight_mean"] == pytest.approx((2 * math.exp(-1 / 0.9) + 1) / 3)
    assert 0.5 < out["val/bug_span_auc"] < 1.0
    assert "val/value_auc_low" not in out  # one correct row: no interval

    blind = value_panel_summary(value_panel_parts(torch.full((3, 8), 0.4), mask, rewards, bug))
    assert blind["val/bug_auc"] == 0.5 and blind["val/value_auc"] == 0.5
    # V constant: td 0 everywhere but at the EOS (the true reward), which is left out.
    assert blind["val/nonbug_weight_mean"] == pytest.approx(1.0)
