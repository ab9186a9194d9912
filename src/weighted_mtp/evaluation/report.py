"""The comparison report across models: tidy tables with intervals, the pass@k chart with the
pre-registered contrasts, the methods' training curves and an HTML page with the verdict.

Input is ``{model_name: result}`` where a result is what the evaluation pipeline records for
one model: ``{"summary": scoring.summarise(...), "generation": {...}}`` (``generation`` may
hold ``mean_generated_tokens``, ``acceptance_rate``, ``tokens_per_forward``). The canonical
solutions are scored like a model (named ``canonical`` by default): they are the harness
check, written in the title of each dataset's pass@1 panel, not drawn, so that each panel's
y axis is the models' own range and their differences are visible. Intervals, contrasts and
the verdict come from :mod:`weighted_mtp.evaluation.comparison`.

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
    CONTRAST_COLUMNS,
    INTERVAL_METHOD,
    SEED_SPREAD_COLUMNS,
    per_problem_values,
    split_seed,
    wilson_interval,
)
from weighted_mtp.evaluation.scoring import pass_at_k_table

REFERENCE_MODEL = "canonical"
#: The report's contrast table: ``contrasts.csv``'s columns, then these.
CONTRAST_EXTRA_SHOWN = ("only_a", "only_b", "diff_low", "diff_high", "test", "status")
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
    pass_at_k, ci_low, ci_high, n_problems, n_samples, method, seed``; ``difficulty`` is None
    for a whole dataset. ``ci_low``/``ci_high``: the Wilson interval over the group's problems
    (:func:`weighted_mtp.evaluation.comparison.wilson_interval`). ``model`` is the catalog
    name (``seed_2.baseline_model``), ``method`` and ``seed`` its parts
    (:func:`weighted_mtp.seeds.split_seed`: ``baseline_model``, 2)."""
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
            low, high = wilson_interval(list(values.values()))
            method, seed = split_seed(model)
            rows.append(
                {
                    **row,
                    "ci_low": low,
                    "ci_high": high,
                    "n_samples": group["n_samples"],
                    "method": method,
                    "seed": seed,
                }
            )
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


def _whole_dataset(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("difficulty") is None or is_missing(r.get("difficulty"))]


def plot_pass_at_k(
    rows: Sequence[Mapping[str, Any]],
    *,
    contrasts: Sequence[Mapping[str, Any]] = (),
    reference: str = REFERENCE_MODEL,
) -> Figure:
    """pass@k per model, one panel per dataset (column) and k (row); when ``contrasts`` are
    given, each k's row is followed by a row of the pre-registered differences.

    ``rows``: :func:`tidy_table` rows; only whole-dataset rows (difficulty None) are drawn.
    Each model is a point with its interval (``ci_low``/``ci_high``) as an error bar, and each
    panel has its own y axis spanning the models' intervals (not 0..1): at micro scale the
    models sit near 0 and differ by a few problems, and a dataset of 10 problems has far wider
    intervals than one of 100. The ``reference`` model (the canonical solutions, the harness
    check, measured at pass@1 only) is not drawn: its pass@1 is written in the panel's title,
    beside the problems and samples behind the dataset. A method with several seeds
    (``seed_<s>.<model>`` rows) is one column: a point per seed and a bar at their mean.

    ``contrasts``: ``contrasts.csv`` rows (``contrast, dataset, k, diff, diff_low,
    diff_high, interval, p_holm, mde``): a point per contrast at its difference, the interval
    as an error bar, a line at 0, and ``p_holm``/``mde`` written above it.
    """
    whole = _whole_dataset(rows)
    ks = sorted({int(r["k"]) for r in whole}) or [1]
    datasets = sorted({r["dataset"] for r in whole}) or [""]
    models = list(dict.fromkeys(r["model"] for r in whole if r["model"] != reference))
    by_key = {(r["model"], r["dataset"], int(r["k"])): r for r in whole}
    palette = colours(list(dict.fromkeys(split_seed(m)[0] for m in models)))
    blocks = 2 if contrasts else 1
    fig = Figure(figsize=(2.5 + 3.4 * len(datasets), 3.9 * blocks * len(ks)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(blocks * len(ks), len(datasets), squeeze=False)
    for k_index, k in enumerate(ks):
        for ax, dataset in zip(grid[blocks * k_index], datasets, strict=True):
            _plot_models(ax, [by_key.get((m, dataset, k)) for m in models], models, palette)
            drawn = [by_key[(m, dataset, k)] for m in models if (m, dataset, k) in by_key]
            title = f"{dataset} pass@{k}"
            if drawn:
                n_samples = max(int(r.get("n_samples") or 0) for r in drawn)
                n_problems = max(int(r["n_problems"]) for r in drawn)
                title += f"\n{n_problems} problems, {n_samples} samples"
            canonical = by_key.get((reference, dataset, k))
            if canonical is not None:
                title += f"\n{reference} (harness check): {float(canonical['pass_at_k']):.2f}"
            ax.set_title(title, fontsize=8.5)
            ax.set_ylabel(f"pass@{k} ({int(CONFIDENCE * 100)}% Wilson interval)", fontsize=8)
        if contrasts:
            for ax, dataset in zip(grid[blocks * k_index + 1], datasets, strict=True):
                _plot_contrasts(
                    ax, [c for c in contrasts if (c["dataset"], int(c["k"])) == (dataset, k)]
                )
                ax.set_title(f"{dataset} pass@{k}: pre-registered contrasts a - b", fontsize=8.5)
    handles: dict[str, Any] = {}
    for ax in grid.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    return fig


def _plot_models(
    ax: Any,
    rows: Sequence[Mapping[str, Any] | None],
    models: Sequence[str],
    palette: Mapping[str, str],
) -> None:
    """One column per method; a method with several seeds has one point per seed side by side
    (its seeds' spread) and a bar at their mean."""
    methods = list(dict.fromkeys(split_seed(m)[0] for m in models))
    seeds_of = {method: [m for m in models if split_seed(m)[0] == method] for method in methods}
    top = 0.0
    drawn: dict[str, list[tuple[float, float]]] = {}
    for model, row in zip(models, rows, strict=True):
        if row is None:
            continue
        method = split_seed(model)[0]
        siblings = seeds_of[method]
        step = min(0.5 / len(siblings), 0.15)
        x = methods.index(method) + (siblings.index(model) - (len(siblings) - 1) / 2) * step
        height = float(row["pass_at_k"])
        errors = None
        if "ci_low" in row and not is_missing(row["ci_low"]):
            errors = [[height - float(row["ci_low"])], [float(row["ci_high"]) - height]]
            top = max(top, float(row["ci_high"]))
        top = max(top, height)
        drawn.setdefault(method, []).append((x, height))
        ax.errorbar(
            [x],
            [height],
            yerr=errors,
            fmt="o",
            markersize=6 if len(siblings) == 1 else 4,
            color=palette[method],
            elinewidth=1.2 if len(siblings) == 1 else 0.8,
            capsize=3 if len(siblings) == 1 else 1.5,
            label=method,
        )
        if len(siblings) == 1:
            ax.annotate(
                f"{height:.2f}", (x, height), xytext=(5, 0), textcoords="offset points", fontsize=7
            )
    for method, points in drawn.items():
        if len(points) > 1:
            xs, heights = zip(*points, strict=True)
            mean = sum(heights) / len(heights)
            ax.hlines(mean, min(xs) - 0.08, max(xs) + 0.08, color=palette[method], linewidth=2)
            ax.annotate(
                f"{mean:.2f}",
                (max(xs) + 0.08, mean),
                xytext=(3, 0),
                textcoords="offset points",
                fontsize=7,
            )
    labels = [
        m.removesuffix("_model") + (f"\n{len(seeds_of[m])} seeds" if len(seeds_of[m]) > 1 else "")
        for m in methods
    ]
    ax.set_xticks(range(len(methods)), labels, fontsize=8)
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set_ylim(-0.01, max(0.05, top * 1.15))
    ax.grid(axis="y", alpha=0.3)


def _plot_contrasts(ax: Any, contrasts: Sequence[Mapping[str, Any]]) -> None:
    names = [str(c["contrast"]) for c in contrasts]
    # A contrast takes the colour of its first model (verifiable_model-baseline_model: green).
    palette = colours([name.split("-")[0] for name in names])
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    for index, c in enumerate(contrasts):
        diff = float(c["diff"])
        ax.errorbar(
            [index],
            [diff],
            yerr=[[diff - float(c["diff_low"])], [float(c["diff_high"]) - diff]],
            fmt="s",
            markersize=5,
            color=palette[names[index].split("-")[0]],
            elinewidth=1.2,
            capsize=3,
            label=f"{names[index]} (diff a - b)",
        )
        mde = float(c["mde"])
        ax.annotate(
            f"p_holm {float(c['p_holm']):.2g}\nmde {'inf' if math.isinf(mde) else f'{mde:.2f}'}",
            (index, float(c["diff_high"])),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
    ax.set_xticks(
        range(len(names)),
        [n.replace("_model", "").replace("-", " -\n") for n in names],
        fontsize=7.5,
    )
    ax.set_xlim(-0.6, max(1, len(names)) - 0.4)
    intervals = sorted({str(c["interval"]) for c in contrasts})
    ax.set_ylabel(f"difference ({' / '.join(intervals)} interval)", fontsize=7.5)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.3)
    if not contrasts:
        ax.text(0.5, 0.5, "no contrast here", ha="center", va="center", transform=ax.transAxes)


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
METHOD_COLOURS = {
    "base": "C0",
    "baseline": "C1",
    "verifiable": "C2",
    "rho1": "C3",
    "critic": "C4",
    "verifiable_uniform": "C5",
}


def colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per name: :data:`METHOD_COLOURS` for known methods (``x``, ``x_model`` or a
    seed's ``seed_<s>.x``), the next unused colour of the cycle for the others."""
    fixed = {n: METHOD_COLOURS.get(split_seed(n)[0].removesuffix("_model")) for n in names}
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
    contrasts: Sequence[Mapping[str, Any]] = (),
    seed_summary: Sequence[Mapping[str, Any]] = (),
    diagnostics: Sequence[str] = (),
) -> str:
    """A self-contained HTML page: the verdict, the training diagnostics (one sentence per
    weighted job), the charts (embedded as data URIs, so the page works as a lone MLflow
    artifact), the pre-registered contrasts (``contrasts.csv`` rows), the spread over seeds
    (``pass_at_k_seeds.csv`` rows, shown when some model has several seeds), the per-dataset
    overview and the tidy pass@k table with its intervals."""
    several_seeds = [r for r in seed_summary if int(r.get("n_seeds") or 1) > 1]
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
        + (
            "<h2>Training diagnostics</h2><ul>"
            + "".join(f"<li>{html.escape(d)}</li>" for d in diagnostics)
            + "</ul>"
            if diagnostics
            else ""
        )
        + image(png, "pass@k per dataset and model")
        + (
            "<h2>Training curves</h2>" + image(training_png, "training curves per method")
            if training_png
            else ""
        )
        + (
            "<h2>Pre-registered contrasts (diff = a - b; contrasts.csv)</h2>"
            + "<p>p_value: exact McNemar (one sample per problem) or paired sign-flip "
            "permutation test; p_holm: Holm over the contrasts of one dataset and k; mde: the "
            "smallest difference detected with 80% power at alpha/m; only_a, only_b: problems "
            "solved by one side alone; diff_low, diff_high: unadjusted interval of the "
            "difference.</p>" + html_table(contrasts, [*CONTRAST_COLUMNS, *CONTRAST_EXTRA_SHOWN])
            if contrasts
            else ""
        )
        + (
            "<h2>Spread over fine-tuning seeds (pass_at_k_seeds.csv)</h2>"
            + "<p>per_seed: each seed's pass@k (seed 1 first); mean, sd (ddof 1), min, max "
            "over seeds. Not in the intervals above, which measure the sampling of "
            "problems.</p>" + html_table(several_seeds, list(SEED_SPREAD_COLUMNS))
            if several_seeds
            else ""
        )
        + "<h2>Per dataset</h2>"
        + html_table(overview, overview_columns)
        + "<h2>pass@k (tidy; difficulty empty = whole dataset)</h2>"
        + f"<p>ci_low, ci_high: {int(CONFIDENCE * 100)}% {html.escape(interval_method)}.</p>"
        + html_table(tidy_table(results))
        + "</body></html>\n"
    )
