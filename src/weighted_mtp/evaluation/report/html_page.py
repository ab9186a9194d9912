"""The report as one self-contained HTML page: the verdict, the diagnostics, the charts as data
URIs and the tables (contrasts, spread over seeds, per dataset, tidy pass@k)."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

from weighted_mtp.evaluation.comparison import (
    CONFIDENCE,
    CONTRAST_COLUMNS,
    INTERVAL_METHOD,
    SEED_SPREAD_COLUMNS,
)
from weighted_mtp.evaluation.report.tables import OVERVIEW_COLUMNS, overview_table, tidy_table

#: The report's contrast table: ``contrasts.csv``'s columns, then these.
CONTRAST_EXTRA_SHOWN = ("only_a", "only_b", "diff_low", "diff_high", "test", "status")


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
