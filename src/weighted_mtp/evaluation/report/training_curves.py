"""The methods' training curves: held-out loss, the objective as optimised and the value loss,
one panel each, from the ``<method>_training_history`` tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from weighted_mtp.evaluation.report.figures import colours
from weighted_mtp.seeds import split_seed

#: What each training curve is, by history column, for the panels of
#: :func:`plot_training_curves`.
CURVE_PANELS = (
    (
        "val/loss",
        "held-out loss (val/loss): uniform MTP CE on valid\n"
        "correct solutions, the same for every policy method",
    ),
    (
        "train/loss",
        "objective as optimised (train/loss), not comparable:\n"
        "verifiable adds TD weights and a value term, rho1 drops tokens",
    ),
    (
        "value",
        "value loss: MSE of V(s_t) against the reward\n"
        "(critic's train/loss, verifiable's train/value_loss)",
    ),
)


def _curve(history: Any, column: str) -> tuple[list[float], list[float]]:
    if (
        history is None
        or column not in getattr(history, "columns", ())
        or "step" not in (history.columns)
    ):
        return [], []
    frame = history[["step", column]].dropna()
    return frame["step"].astype(float).tolist(), frame[column].astype(float).tolist()


def plot_training_curves(histories: Mapping[str, Any]) -> Figure:
    """The training histories of the methods on one figure, three panels (:data:`CURVE_PANELS`).

    ``histories``: ``{method: DataFrame}`` with a ``step`` column and the logged metrics
    (``<method>_training_history``; a seed's job ``seed_<s>.<method>`` takes its method's
    colour). Policy methods (all but ``critic``) are drawn in the
    held-out and objective panels; the critic's ``train/loss`` is a value loss and is drawn
    only in the value panel, beside the verifiable method's ``train/value_loss``.
    """
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(CURVE_PANELS), squeeze=False)[0]
    palette = colours(list(histories))
    for ax, (panel, title) in zip(axes, CURVE_PANELS, strict=True):
        for method, history in histories.items():
            job = split_seed(method)[0]  # seed_2.critic is a critic
            if panel == "value":
                column = "train/loss" if job == "critic" else "train/value_loss"
            elif job == "critic":
                continue
            else:
                column = panel
            steps, values = _curve(history, column)
            if steps:
                ax.plot(
                    steps,
                    values,
                    marker="o" if len(steps) < 12 else None,
                    markersize=3,
                    color=palette[method],
                    label=f"{method} ({column})" if panel == "value" else method,
                )
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=8.5)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    if not histories:
        fig.suptitle("no training history: no trained model was evaluated", fontsize=10)
    return fig
