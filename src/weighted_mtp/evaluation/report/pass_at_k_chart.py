"""The pass@k chart: pass@k per model with its interval, one panel per dataset and k, and under
each k the pre-registered contrasts drawn as differences with their intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from weighted_mtp.evaluation.comparison import CONFIDENCE
from weighted_mtp.evaluation.report.figures import colours
from weighted_mtp.evaluation.report.tables import REFERENCE_MODEL, is_missing
from weighted_mtp.seeds import split_seed


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

    ``rows``: :func:`.tables.tidy_table` rows; only whole-dataset rows (difficulty None) are drawn.
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
