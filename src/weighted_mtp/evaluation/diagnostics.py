"""Per-method diagnostics the verdict names beside a result, read from the training histories.

A weighted method's pass@k means little without knowing whether its weighting did anything:

- **critic** (verifiable, verifiable_uniform): was the value head better than chance on
  held-out rows? The last validation row of the job's history: ``val/value_auc_low`` (the lower
  end of the held-out value AUC's interval) ``> 0.5``; ``val/value_auc`` and ``val/bug_auc``
  (the bug-localisation AUC) are reported beside it when logged.
- **weights** (verifiable, verifiable_uniform): were the TD weights non-uniform? The mean of
  ``weights/std`` over the last :data:`LAST_STEPS` training steps ``>`` :data:`NON_UNIFORM_STD`
  (0.05: the issue's run had std 0.12 with weights clipped 0% and called it "effectively
  uniform" by its effect; 0.05 is the level below which a weight moves a token's loss by less
  than 5% on average, i.e. the control's uniform weights and numerical noise). The control's
  weights are all 1, so its "no" is the expected state.
- **rho1_premise** (rho1): was the reference better than the policy where Rho-1 needs it?
  ``val/rho1_excess_head_<k>`` (policy loss minus reference loss on held-out correct rows) at
  the first validation ``> 0`` for every head.

A column absent from a history (a method logged by older code, or a run too short to
validate) gives "not logged", never an error. No Kedro, no MLflow: tables in, dicts out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from weighted_mtp.seeds import split_seed
from weighted_mtp.training.config import CONTROLS

VALUE_AUC_LOW = "val/value_auc_low"
VALUE_AUC = "val/value_auc"
BUG_AUC = "val/bug_auc"
WEIGHTS_STD = "weights/std"
RHO1_EXCESS = re.compile(r"^val/rho1_excess_head_(\d+)$")
#: Chance level of an AUC.
CHANCE_AUC = 0.5
#: Training steps at the end of a run whose ``weights/std`` is averaged.
LAST_STEPS = 100
#: ``weights/std`` above which the TD weights count as non-uniform.
NON_UNIFORM_STD = 0.05
#: The diagnostics of each training job (by job name; a seed's copy has its method's).
DIAGNOSTICS: dict[str, tuple[str, ...]] = {
    "verifiable": ("critic", "weights"),
    "verifiable_uniform": ("critic", "weights"),
    "rho1": ("rho1_premise",),
}
NOT_LOGGED = "not logged"


def _column(history: pd.DataFrame | None, column: str) -> pd.DataFrame:
    """``step`` and ``column`` on the rows where ``column`` is a finite number, by step
    (empty when either is absent)."""
    if history is None or column not in getattr(history, "columns", ()):
        return pd.DataFrame(columns=["step", column])
    frame = history[[c for c in ("step", column) if c in history.columns]].copy()
    frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame[np.isfinite(frame[column].to_numpy(dtype=np.float64))]
    if "step" not in frame.columns:
        frame["step"] = range(len(frame))
    return frame.sort_values("step", kind="stable")


def _last(history: pd.DataFrame | None, column: str) -> float | None:
    frame = _column(history, column)
    return None if frame.empty else float(frame[column].iloc[-1])


def critic_state(history: pd.DataFrame | None) -> dict[str, Any]:
    """``better_than_chance`` (None: not logged), ``value_auc_low``, ``value_auc``,
    ``bug_auc`` (each None when not logged) and the ``step`` of the last validation row."""
    frame = _column(history, VALUE_AUC_LOW)
    if frame.empty:
        low, step = None, None
    else:
        low, step = float(frame[VALUE_AUC_LOW].iloc[-1]), int(frame["step"].iloc[-1])
    return {
        "better_than_chance": None if low is None else low > CHANCE_AUC,
        "value_auc_low": low,
        "value_auc": _last(history, VALUE_AUC),
        "bug_auc": _last(history, BUG_AUC),
        "step": step,
        "threshold": CHANCE_AUC,
    }


def weight_state(
    history: pd.DataFrame | None,
    *,
    last_steps: int = LAST_STEPS,
    threshold: float = NON_UNIFORM_STD,
) -> dict[str, Any]:
    """``non_uniform`` (None: not logged): the mean of ``weights/std`` over the rows of the
    last ``last_steps`` steps (``step > last step - last_steps``) against ``threshold``."""
    if last_steps < 1:
        raise ValueError(f"last_steps must be >= 1, got {last_steps}")
    frame = _column(history, WEIGHTS_STD)
    if frame.empty:
        return {
            "non_uniform": None,
            "weights_std_mean": None,
            "n_rows": 0,
            "last_steps": last_steps,
            "threshold": threshold,
        }
    tail = frame[frame["step"] > frame["step"].iloc[-1] - last_steps]
    mean = float(tail[WEIGHTS_STD].mean())
    return {
        "non_uniform": mean > threshold,
        "weights_std_mean": mean,
        "n_rows": len(tail),
        "last_steps": last_steps,
        "threshold": threshold,
    }


def rho1_premise(history: pd.DataFrame | None) -> dict[str, Any]:
    """``holds`` (None: not logged): every head's ``val/rho1_excess_head_<k>`` > 0 at the
    first validation row that has them; ``excess_per_head`` ``{k: value}`` and its ``step``."""
    columns = sorted(
        (int(m.group(1)), c)
        for c in getattr(history, "columns", ())
        if (m := RHO1_EXCESS.match(str(c)))
    )
    logged = {k: (c, _column(history, c)) for k, c in columns}
    logged = {k: (c, f) for k, (c, f) in logged.items() if not f.empty}
    if not logged:
        return {"holds": None, "excess_per_head": {}, "step": None}
    step = min(int(f["step"].iloc[0]) for _, f in logged.values())
    excess = {
        k: float(f.loc[f["step"] == step, c].iloc[0])
        for k, (c, f) in logged.items()
        if (f["step"] == step).any()
    }
    return {"holds": all(v > 0 for v in excess.values()), "excess_per_head": excess, "step": step}


def _value(value: float | None, name: str) -> str:
    return f"{name} {NOT_LOGGED}" if value is None else f"{name} {value:.3f}"


def _yes_no(value: bool | None) -> str:
    return NOT_LOGGED if value is None else ("yes" if value else "no")


def sentence(job: str, entry: Mapping[str, Any]) -> str:
    """One sentence of the verdict for a job's diagnostics (:func:`diagnose`'s entry)."""
    parts = []
    critic = entry.get("critic")
    if critic is not None:
        detail = (
            f"{VALUE_AUC_LOW} {NOT_LOGGED}"
            if critic["value_auc_low"] is None
            else f"{VALUE_AUC_LOW} {critic['value_auc_low']:.3f} "
            f"{'>' if critic['better_than_chance'] else '<='} {CHANCE_AUC}"
        )
        parts.append(
            f"critic better than chance: {_yes_no(critic['better_than_chance'])} ({detail}; "
            f"{_value(critic['value_auc'], VALUE_AUC)}; {_value(critic['bug_auc'], BUG_AUC)})"
        )
    weights = entry.get("weights")
    if weights is not None:
        detail = (
            f"{WEIGHTS_STD} {NOT_LOGGED}"
            if weights["weights_std_mean"] is None
            else f"mean {WEIGHTS_STD} over the last {weights['last_steps']} steps "
            f"{weights['weights_std_mean']:.3f} "
            f"{'>' if weights['non_uniform'] else '<='} {weights['threshold']}"
        )
        if entry.get("method") in CONTROLS:
            # The control logs the weights verifiable would have applied, and applies none.
            parts.append(
                f"TD weights it would have applied non-uniform: {_yes_no(weights['non_uniform'])}"
                f" ({detail}; not applied: every weight is 1)"
            )
        else:
            parts.append(f"TD weights non-uniform: {_yes_no(weights['non_uniform'])} ({detail})")
    premise = entry.get("rho1_premise")
    if premise is not None:
        excess = premise["excess_per_head"]
        detail = (
            "val/rho1_excess_head_<k> " + NOT_LOGGED
            if not excess
            else "excess loss at the first validation: "
            + ", ".join(f"head {k} {v:+.3f}" for k, v in sorted(excess.items()))
        )
        state = {None: NOT_LOGGED, True: "holds", False: "fails"}[premise["holds"]]
        parts.append(
            f"Rho-1 premise (reference better than the policy on every head): {state} ({detail})"
        )
    return f"{job}: " + "; ".join(parts) + "."


def diagnose(histories: Mapping[str, pd.DataFrame | None]) -> dict[str, dict[str, Any]]:
    """``{job: {"method", "seed", <diagnostic>: {...}, "sentence"}}`` for each history whose
    job (``<method>`` or ``seed_<s>.<method>``) has :data:`DIAGNOSTICS`; the others are left
    out (baseline, the critic's own job)."""
    checks = {"critic": critic_state, "weights": weight_state, "rho1_premise": rho1_premise}
    out: dict[str, dict[str, Any]] = {}
    for job, history in histories.items():
        method, seed = split_seed(job)
        if method not in DIAGNOSTICS:
            continue
        entry: dict[str, Any] = {"method": method, "seed": seed}
        for name in DIAGNOSTICS[method]:
            entry[name] = checks[name](history)
        entry["sentence"] = sentence(job, entry)
        out[job] = entry
    return out
