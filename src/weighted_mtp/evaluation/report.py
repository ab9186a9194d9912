"""The comparison report across models: tidy tables, a pass@k bar chart and an HTML page.

Input is ``{model_name: result}`` where a result is what the evaluation pipeline records for
one model: ``{"summary": scoring.summarise(...), "generation": {...}}`` (``generation`` may
hold ``mean_generated_tokens``, ``acceptance_rate``, ``tokens_per_forward``). The canonical
solutions are scored like a model (named ``canonical`` by default) and drawn as the upper
reference: a hatched bar and a dashed line over each dataset.

Plots use matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so
the module is safe in worker threads and leaves no figures registered.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
    pass_at_k, n_problems``; ``difficulty`` is None for a whole dataset."""
    rows: list[dict[str, Any]] = []
    for model, result in results.items():
        rows.extend(pass_at_k_table(result["summary"], model=model))
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
    The ``reference`` model (the canonical solutions) is the hatched bar at the right of each
    group, its value repeated as a dashed line across the group. It has one solution per
    problem, hence only pass@1; the panels for larger k show that value (an upper bound of
    any pass@k when it is 1).
    """
    whole = [r for r in rows if r.get("difficulty") is None]
    ks = sorted({int(r["k"]) for r in whole}) or [1]
    datasets = sorted({r["dataset"] for r in whole})
    models = [m for m in dict.fromkeys(r["model"] for r in whole) if m != reference]
    value = {(r["model"], r["dataset"], int(r["k"])): float(r["pass_at_k"]) for r in whole}

    def reference_value(dataset: str, k: int) -> float | None:
        best = [kk for kk in range(k, 0, -1) if (reference, dataset, kk) in value]
        return value[(reference, dataset, best[0])] if best else None

    has_reference = any(m == reference for m, _, _ in value)
    groups = len(models) + int(has_reference)
    width = 0.8 / max(1, groups)
    fig = Figure(figsize=(1.5 + 2.0 * len(datasets) * len(ks), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(ks), squeeze=False)[0]
    for ax, k in zip(axes, ks, strict=True):
        for m_index, model in enumerate([*models, *([reference] if has_reference else [])]):
            is_reference = model == reference
            centres, heights = [], []
            for d_index, dataset in enumerate(datasets):
                h = reference_value(dataset, k) if is_reference else value.get((model, dataset, k))
                if h is not None:
                    centres.append(d_index)
                    heights.append(h)
            xs = [c - 0.4 + width * (m_index + 0.5) for c in centres]
            ax.bar(
                xs,
                heights,
                width=width,
                label=model,
                color="white" if is_reference else f"C{m_index % 10}",
                edgecolor="0.3" if is_reference else None,
                hatch="//" if is_reference else None,
            )
            if is_reference:
                for centre, h in zip(centres, heights, strict=True):
                    ax.hlines(h, centre - 0.45, centre + 0.45, colors="0.3", linestyles="dashed")
            for x, h in zip(xs, heights, strict=True):
                ax.annotate(f"{h:.2f}", (x, h), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(datasets)), datasets)
        ax.set_ylim(0, 1.12)
        ax.set_title(f"pass@{k}")
        ax.set_ylabel("pass@k")
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
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
) -> str:
    """A self-contained HTML page: the chart (embedded as a data URI, so the page works as a
    lone MLflow artifact), the per-dataset overview and the tidy pass@k table."""
    overview = overview_table(results)
    ks = sorted({k for r in results.values() for k in r["summary"]["ks"]})
    overview_columns = [*OVERVIEW_COLUMNS[:5], *[f"pass@{k}" for k in ks], *OVERVIEW_COLUMNS[5:]]
    overview_columns = [c for c in overview_columns if any(c in row for row in overview)]
    image = base64.b64encode(png).decode("ascii")
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        + (f"<ul>{notes_html}</ul>" if notes_html else "")
        + f"<img alt='pass@k per dataset and model' src='data:image/png;base64,{image}'>"
        "<h2>Per dataset</h2>"
        + html_table(overview, overview_columns)
        + "<h2>pass@k (tidy; difficulty empty = whole dataset)</h2>"
        + html_table(tidy_table(results))
        + "</body></html>\n"
    )
