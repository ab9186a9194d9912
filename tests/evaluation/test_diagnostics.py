"""The verdict's training diagnostics: read from step histories as the workers write them
(one row per logged step, validation metrics on their own rows), "not logged" when absent."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from weighted_mtp.evaluation.diagnostics import (
    LAST_STEPS,
    NON_UNIFORM_STD,
    critic_state,
    diagnose,
    rho1_premise,
    weight_state,
)


def _history(steps: int = 150, *, std_early: float = 0.3, std_late: float = 0.01) -> pd.DataFrame:
    """Training rows with ``weights/std`` (``std_early`` for the first 50 steps, then
    ``std_late``) and validation rows every 50 steps with the critic's AUCs (below chance
    first, above at the end) and Rho-1's per-head excess (head 1 negative at first)."""
    rows: list[dict[str, float]] = []
    for step in range(1, steps + 1):
        rows.append(
            {"step": step, "train/loss": 1.0, "weights/std": std_early if step <= 50 else std_late}
        )
        if step % 50 == 0:
            rows.append(
                {
                    "step": step,
                    "val/loss": 1.0,
                    "val/value_auc": 0.5 + step / 1000,
                    "val/value_auc_low": 0.4 + step / 1000,
                    "val/rho1_excess_head_0": 0.2,
                    "val/rho1_excess_head_1": -0.1 if step == 50 else 0.3,
                }
            )
    return pd.DataFrame(rows)


def test_critic_state_reads_the_last_validation_row() -> None:
    state = critic_state(_history())
    # Last validation at step 150: auc_low 0.55 > 0.5 (it was 0.45 at step 50).
    assert state["better_than_chance"] is True
    assert state["value_auc_low"] == pytest.approx(0.55)
    assert state["value_auc"] == pytest.approx(0.65)
    assert state["bug_auc"] is None and state["step"] == 150
    assert critic_state(_history(steps=50))["better_than_chance"] is False


def test_weight_state_averages_the_last_hundred_steps() -> None:
    history = _history()
    state = weight_state(history)
    # Steps 51..150: every std is 0.01, the early 0.3 is outside the window.
    assert state["weights_std_mean"] == pytest.approx(0.01)
    assert state["n_rows"] == LAST_STEPS and state["non_uniform"] is False
    assert state["threshold"] == NON_UNIFORM_STD
    # A slow reference: the mean of the rows whose step is among the last 100.
    tail = history.dropna(subset=["weights/std"])
    tail = tail[tail["step"] > tail["step"].max() - 100]
    assert state["weights_std_mean"] == pytest.approx(tail["weights/std"].mean())
    wide = weight_state(_history(std_late=0.2))
    assert wide["non_uniform"] is True and wide["weights_std_mean"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="last_steps"):
        weight_state(history, last_steps=0)


def test_rho1_premise_is_read_at_the_first_validation() -> None:
    premise = rho1_premise(_history())
    assert premise["step"] == 50 and premise["holds"] is False
    assert premise["excess_per_head"] == pytest.approx({0: 0.2, 1: -0.1})
    later = _history().query("step > 50")
    assert rho1_premise(later)["holds"] is True


@pytest.mark.parametrize(
    "history",
    [
        pd.DataFrame(),
        None,
        pd.DataFrame({"step": [1, 2], "train/loss": [1.0, 0.5]}),
        pd.DataFrame({"step": [1], "weights/std": [math.nan], "val/value_auc_low": [None]}),
    ],
)
def test_absent_columns_are_not_logged_and_never_fail(history) -> None:
    found = diagnose({"verifiable": history, "rho1": history, "seed_2.verifiable_uniform": history})
    assert set(found) == {"verifiable", "rho1", "seed_2.verifiable_uniform"}
    verifiable = found["verifiable"]
    assert verifiable["critic"]["better_than_chance"] is None
    assert verifiable["weights"]["non_uniform"] is None
    assert verifiable["sentence"] == (
        "verifiable: critic better than chance: not logged (val/value_auc_low not logged; "
        "val/value_auc not logged; val/bug_auc not logged); TD weights non-uniform: not "
        "logged (weights/std not logged)."
    )
    assert found["rho1"]["rho1_premise"]["holds"] is None
    assert (
        "Rho-1 premise" in found["rho1"]["sentence"] and "not logged" in found["rho1"]["sentence"]
    )
    assert found["seed_2.verifiable_uniform"]["seed"] == 2


def test_diagnose_names_each_weighted_job_and_skips_the_others() -> None:
    history = _history(std_late=0.12).assign(**{"val/bug_auc": np.nan})
    history.loc[history["step"] == 150, "val/bug_auc"] = 0.9
    found = diagnose(
        {"baseline": history, "critic": history, "verifiable": history, "rho1": history}
    )
    assert set(found) == {"verifiable", "rho1"}
    sentence = found["verifiable"]["sentence"]
    assert sentence.startswith("verifiable: critic better than chance: yes (")
    assert "val/value_auc_low 0.550 > 0.5" in sentence and "val/bug_auc 0.900" in sentence
    assert (
        "TD weights non-uniform: yes (mean weights/std over the last 100 steps 0.120 > 0.05)"
        in sentence
    )
    assert found["rho1"]["sentence"] == (
        "rho1: Rho-1 premise (reference better than the policy on every head): fails "
        "(excess loss at the first validation: head 0 +0.200, head 1 -0.100)."
    )


def test_the_controls_sentence_says_its_weights_were_not_applied() -> None:
    history = pd.DataFrame({"step": list(range(1, 101)), "weights/std": [0.4] * 100})
    found = diagnose({"verifiable": history, "verifiable_uniform": history})
    assert "TD weights non-uniform: yes" in found["verifiable"]["sentence"]
    control = found["verifiable_uniform"]["sentence"]
    assert "would have applied non-uniform: yes" in control
    assert "not applied: every weight is 1" in control
