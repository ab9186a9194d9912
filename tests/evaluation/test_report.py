"""The comparison report: tidy table, PNG chart and HTML page."""

from __future__ import annotations

import struct

from weighted_mtp.evaluation.report import (
    figure_png,
    overview_table,
    plot_pass_at_k,
    render_html,
    tidy_table,
)
from weighted_mtp.evaluation.scoring import summarise

PROBLEMS = {
    f"{ds}/{i}": {"task_id": f"{ds}/{i}", "dataset": ds, "difficulty": i % 2}
    for ds in ("humaneval", "mbpp")
    for i in range(4)
}


def verdicts(pass_pattern: dict[str, list[bool]], n_tokens: int = 7) -> list[dict]:
    return [
        {
            "task_id": t,
            "passed": p,
            "status": "passed" if p else "failed",
            "n_generated_tokens": n_tokens,
        }
        for t, passes in pass_pattern.items()
        for p in passes
    ]


def results() -> dict:
    model_a = {t: [i % 2 == 0, False] for i, t in enumerate(PROBLEMS)}  # half the problems
    model_b = {t: [True, True] if t.startswith("mbpp") else [False, False] for t in PROBLEMS}
    canonical = {t: [True] for t in PROBLEMS}
    generation = {
        "per_dataset": {"humaneval": {"mean_generated_tokens": 7.0, "acceptance_rate": 0.625}}
    }
    return {
        "model_a": {
            "summary": summarise(PROBLEMS, verdicts(model_a), ks=(1, 2)),
            "generation": generation,
        },
        "model_b": {"summary": summarise(PROBLEMS, verdicts(model_b), ks=(1, 2)), "generation": {}},
        "canonical": {
            "summary": summarise(PROBLEMS, verdicts(canonical), ks=(1,)),
            "generation": {},
        },
    }


def test_tidy_table_rows():
    rows = tidy_table(results())
    whole = {
        (r["model"], r["dataset"], r["k"]): r["pass_at_k"] for r in rows if r["difficulty"] is None
    }
    # model_a passes one sample of 2 on humaneval/0 and /2: pass@1 = mean(0.5, 0, 0.5, 0) = 0.25
    assert whole[("model_a", "humaneval", 1)] == 0.25
    assert whole[("model_a", "humaneval", 2)] == 0.5
    assert whole[("model_b", "mbpp", 1)] == 1.0 and whole[("model_b", "humaneval", 1)] == 0.0
    assert whole[("canonical", "mbpp", 1)] == 1.0
    assert ("canonical", "mbpp", 2) not in whole  # n = 1 < k
    assert any(r["difficulty"] == 1 for r in rows)  # per-difficulty rows too
    overview = {(r["model"], r["dataset"]): r for r in overview_table(results())}
    assert overview[("model_a", "humaneval")]["acceptance_rate"] == 0.625
    assert overview[("model_b", "mbpp")]["acceptance_rate"] is None


def test_png_is_a_valid_non_trivial_image(tmp_path):
    fig = plot_pass_at_k(tidy_table(results()))
    png = figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert width > 300 and height > 200
    assert len(png) > 10_000
    assert len(fig.axes) == 2  # one panel per k (1 and 2)
    # The canonical reference is the last, hatched bar group with a dashed line per dataset.
    first = fig.axes[0]
    labels = [c.get_label() for c in first.containers]
    assert labels == ["model_a", "model_b", "canonical"]
    assert first.containers[-1].patches[0].get_hatch() == "//"
    assert len(first.collections) == 2  # two dashed reference lines (two datasets)


def test_html_contains_the_tables_and_the_embedded_chart():
    res = results()
    page = render_html(res, figure_png(plot_pass_at_k(tidy_table(res))), notes=["note <1>"])
    assert page.startswith("<!DOCTYPE html>")
    assert "data:image/png;base64,iVBORw0KGgo" in page  # base64 of the PNG signature
    assert "note &lt;1&gt;" in page  # escaped
    for text in ("model_a", "model_b", "canonical", "humaneval", "mbpp", "pass@2"):
        assert text in page
    assert "<td>0.250</td>" in page and "<td>0.625</td>" in page and "<td>1.000</td>" in page
