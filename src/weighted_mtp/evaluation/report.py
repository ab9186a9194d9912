"""The comparison report across models: tidy tables with intervals, a pass@k bar chart, the
methods' training curves and an HTML page with the verdict.

Input is ``{model_name: result}`` where a result is what the evaluation pipeline records for
one model: ``{"summary": scoring.summarise(...), "generation": {...}}`` (``generation`` may
hold ``mean_generated_tokens``, ``acceptance_rate``, ``tokens_per_forward``). The canonical
solutions are scored like a model (named ``canonical`` by default) and drawn as the upper
reference where they are measured (pass@1: one solution per problem): a hatched bar and a
dashed line over each dataset. Intervals and the verdict come from
:mod:`weighted_mtp.evaluation.comparison`.

Plots use matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so
the module is safe in worker threads and leaves no figures registered.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from weighted_mtp.evaluation.comparison import (
    CONFIDENCE,
    INTERVAL_METHOD,
    bootstrap_interval,
    per_problem_values,
)
from weighted_mtp.evaluation.scoring import pass_at_k_table

REFERENCE_MODEL = "canonical"
OVERVIEW_COLUMNS = (
    "model",
    "dataset",
    "n_problems",
    "n_samples",
    "n_correct",
    "mean_generated_tokens",
    "acceptance_rate",
    "tokens_per_forward",
)


def tidy_table(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, dataset, difficulty, k): ``model, dataset, difficulty, k,
    pass_at_k, ci_low, ci_high, n_problems, n_samples``; ``difficulty`` is None for a whole
    dataset. ``ci_low``/``ci_high``: the bootstrap interval over the group's problems
    (:mod:`weighted_mtp.evaluation.comparison`)."""
    rows: list[dict[str, Any]] = []
    for model, result in results.items():
        summary = result["summary"]
        for row in pass_at_k_table(summary, model=model):
            dataset, difficulty, k = row["dataset"], row["difficulty"], int(row["k"])
            group = (
                summary["per_dataset"][dataset]
                if difficulty is None
                else summary["per_difficulty"][dataset][difficulty]
            )
            values = per_problem_values(summary, dataset, k, difficulty)
            # In task-id order, as comparison.compare resamples them: the table's interval and
            # the verdict's are then the same numbers for the same problems.
            low, high = bootstrap_interval([values[t] for t in sorted(values)])
            rows.append({**row, "ci_low": low, "ci_high": high, "n_samples": group["n_samples"]})
    return rows


def overview_table(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, dataset) with counts, pass@k, generated length and, for
    speculative decoding, the acceptance rate and tokens per forward (None when absent)."""
    rows = []
    for model, result in results.items():
        summary = result["summary"]
        per_dataset_generation = result.get("generation", {}).get("per_dataset", {})
        for dataset, group in summary["per_dataset"].items():
            generation = per_dataset_generation.get(dataset, {})
            row: dict[str, Any] = {
                "model": model,
                "dataset": dataset,
                "n_problems": group["n_problems"],
                "n_samples": group["n_samples"],
                "n_correct": group["n_correct"],
                "mean_generated_tokens": generation.get("mean_generated_tokens"),
                "acceptance_rate": generation.get("acceptance_rate"),
                "tokens_per_forward": generation.get("tokens_per_forward"),
            }
            row.update(
                {f"pass@{k}": group[f"pass@{k}"] for k in summary["ks"] if f"pass@{k}" in group}
            )
            rows.append(row)
    return rows


def plot_pass_at_k(
    rows: Sequence[Mapping[str, Any]], *, reference: str = REFERENCE_MODEL
) -> Figure:
    """Grouped bars of pass@k per dataset (x) and model (colour), one panel per k.

    ``rows``: :func:`tidy_table` rows; only whole-dataset rows (difficulty None) are drawn.
    Each bar carries its interval (``ci_low``/``ci_high``) as an error bar; the x labels give
    the problems and samples behind each dataset. The ``reference`` model (the canonical
    solutions, one per problem) is drawn only where it was measured, i.e. in the pass@1
    panel: a hatched bar at the right of each group and a dashed line across the group.
    """
    whole = [r for r in rows if r.get("difficulty") is None or is_missing(r.get("difficulty"))]
    ks = sorted({int(r["k"]) for r in whole}) or [1]
    datasets = sorted({r["dataset"] for r in whole})
    models = list(dict.fromkeys(r["model"] for r in whole))
    by_key = {(r["model"], r["dataset"], int(r["k"])): r for r in whole}
    counts: dict[str, tuple[int, int]] = {}
    for r in whole:
        if r["model"] != reference and int(r["k"]) == ks[0]:
            n_problems, n_samples = counts.get(r["dataset"], (0, 0))
            counts[r["dataset"]] = (
                max(n_problems, int(r["n_problems"])),
                max(n_samples, int(r.get("n_samples") or 0)),
            )
    width = 0.8 / max(1, len(models))
    palette = colours(models)
    fig = Figure(figsize=(1.5 + 2.4 * len(datasets) * len(ks), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(ks), squeeze=False)[0]
    for ax, k in zip(axes, ks, strict=True):
        for m_index, model in enumerate(models):
            is_reference = model == reference
            drawn = [
                (d_index, by_key[(model, dataset, k)])
                for d_index, dataset in enumerate(datasets)
                if (model, dataset, k) in by_key
            ]
            if not drawn:
                continue
            xs = [d - 0.4 + width * (m_index + 0.5) for d, _ in drawn]
            heights = [float(r["pass_at_k"]) for _, r in drawn]
            errors = None
            if all("ci_low" in r and not is_missing(r["ci_low"]) for _, r in drawn):
                errors = [
                    [h - float(r["ci_low"]) for h, (_, r) in zip(heights, drawn, strict=True)],
                    [float(r["ci_high"]) - h for h, (_, r) in zip(heights, drawn, strict=True)],
                ]
            ax.bar(
                xs,
                heights,
                width=width,
                label=model,
                color="white" if is_reference else palette[model],
                edgecolor="0.3" if is_reference else None,
                hatch="//" if is_reference else None,
                yerr=None if is_reference else errors,
                error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.2"},
            )
            if is_reference:
                for (d_index, _), h in zip(drawn, heights, strict=True):
                    ax.hlines(h, d_index - 0.45, d_index + 0.45, colors="0.3", linestyles="dashed")
            for x, h in zip(xs, heights, strict=True):
                ax.annotate(f"{h:.2f}", (x, h), ha="center", va="bottom", fontsize=7)
        labels = [
            f"{d}\n{counts[d][0]} problems, {counts[d][1]} samples" if d in counts else d
            for d in datasets
        ]
        ax.set_xticks(range(len(datasets)), labels, fontsize=8)
        ax.set_ylim(0, 1.12)
        ax.set_title(f"pass@{k}" + ("" if k == 1 else f" ({reference}: pass@1 only, not drawn)"))
        ax.set_ylabel(f"pass@{k} (bars: {int(CONFIDENCE * 100)}% bootstrap interval)")
        ax.grid(axis="y", alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    return fig


def is_missing(value: Any) -> bool:
    """True for None and NaN (a missing difficulty or interval)."""
    # CSV and JSON round trips turn None into NaN or leave it None.
    return value is None or (isinstance(value, float) and math.isnan(value))


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
#: One colour per method in every chart (``<method>_model`` in the pass@k chart).
METHOD_COLOURS = {"base": "C0", "baseline": "C1", "verifiable": "C2", "rho1": "C3", "critic": "C4"}


def colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per name: :data:`METHOD_COLOURS` for known methods (``x`` or ``x_model``),
    the next unused colour of the cycle for the others."""
    fixed = {n: METHOD_COLOURS.get(n.removesuffix("_model")) for n in names}
    free = (f"C{i}" for i in range(10) if f"C{i}" not in set(fixed.values()))
    return {n: c if c is not None else next(free, "0.5") for n, c in fixed.items()}


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
    (``<method>_training_history``). Policy methods (all but ``critic``) are drawn in the
    held-out and objective panels; the critic's ``train/loss`` is a value loss and is drawn
    only in the value panel, beside the verifiable method's ``train/value_loss``.
    """
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(CURVE_PANELS), squeeze=False)[0]
    palette = colours(list(histories))
    for ax, (panel, title) in zip(axes, CURVE_PANELS, strict=True):
        for method, history in histories.items():
            if panel == "value":
                column = "train/loss" if method == "critic" else "train/value_loss"
            elif method == "critic":
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


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure rendered as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An HTML ``<table>`` of ``rows`` (columns: ``columns`` or the keys in first-seen order)."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(
    results: Mapping[str, Mapping[str, Any]],
    png: bytes,
    *,
    title: str = "weighted-mtp evaluation",
    notes: Sequence[str] = (),
    verdict: str | None = None,
    training_png: bytes | None = None,
    interval_method: str = INTERVAL_METHOD,
) -> str:
    """A self-contained HTML page: the verdict, the charts (embedded as data URIs, so the page
    works as a lone MLflow artifact), the per-dataset overview and the tidy pass@k table with
    its intervals."""
    overview = overview_table(results)
    ks = sorted({k for r in results.values() for k in r["summary"]["ks"]})
    overview_columns = [*OVERVIEW_COLUMNS[:5], *[f"pass@{k}" for k in ks], *OVERVIEW_COLUMNS[5:]]
    overview_columns = [c for c in overview_columns if any(c in row for row in overview)]
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)

    def image(data: bytes, alt: str) -> str:
        encoded = base64.b64encode(data).decode("ascii")
        return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>"

    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
        ".verdict{font-size:1.1em;border-left:4px solid #369;padding:.5em 1em;background:#f4f7fb}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        + (f"<p class='verdict'>{html.escape(verdict)}</p>" if verdict else "")
        + (f"<ul>{notes_html}</ul>" if notes_html else "")
        + image(png, "pass@k per dataset and model")
        + (
            "<h2>Training curves</h2>" + image(training_png, "training curves per method")
            if training_png
            else ""
        )
        + "<h2>Per dataset</h2>"
        + html_table(overview, overview_columns)
        + "<h2>pass@k (tidy; difficulty empty = whole dataset)</h2>"
        + f"<p>ci_low, ci_high: {int(CONFIDENCE * 100)}% {html.escape(interval_method)}.</p>"
        + html_table(tidy_table(results))
        + "</body></html>\n"
    )
