"""The comparison report: tidy table, PNG chart and HTML page."""

from __future__ import annotations

import json
import struct

import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.container import ErrorbarContainer

from weighted_mtp.evaluation.comparison import (
    compare,
    compare_contrasts,
    per_metric_values,
    per_problem_values,
    wilson_interval,
)
from weighted_mtp.evaluation.report import (
    colours,
    figure_png,
    overview_table,
    plot_pass_at_k,
    plot_training_curves,
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


def _points(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_png_is_a_valid_non_trivial_image(tmp_path):
    fig = plot_pass_at_k(tidy_table(results()))
    png = figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert width > 300 and height > 200
    assert len(png) > 10_000
    # One panel per k (rows: 1 and 2) and dataset (columns), no contrast rows without contrasts.
    assert len(fig.axes) == 4
    first = fig.axes[0]
    # Models are points with intervals; the canonical solutions are not drawn as a series.
    assert [c.get_label() for c in _points(first)] == ["model_a", "model_b"]
    assert not first.patches  # no bars


def test_canonical_is_a_note_where_measured():
    # canonical has one solution per problem: pass@1 only, written in the title of each pass@1
    # panel (the harness check), never in the pass@2 panels.
    fig = plot_pass_at_k(tidy_table(results()))
    he1, mbpp1, he2, mbpp2 = fig.axes
    assert (
        he1.get_title()
        == "humaneval pass@1\n4 problems, 8 samples\ncanonical (harness check): 1.00"
    )
    assert mbpp1.get_title().startswith("mbpp pass@1\n")
    assert he2.get_title() == "humaneval pass@2\n4 problems, 8 samples"
    assert [c.get_label() for c in _points(he2)] == ["model_a", "model_b"]


def test_each_panel_is_scaled_to_its_models_not_to_the_canonical_solutions():
    # Models near 0 (as at micro scale) with canonical at 1.0, and a 10-problem dataset with
    # wide intervals beside a 100-problem one: each panel follows its own models' intervals.
    def row(model, dataset, value, low, high, n):
        return {
            "model": model,
            "dataset": dataset,
            "difficulty": None,
            "k": 1,
            "pass_at_k": value,
            "ci_low": low,
            "ci_high": high,
            "n_problems": n,
            "n_samples": n,
        }

    rows = [
        row("base_model", "codecontests", 0.04, 0.016, 0.098, 100),
        row("baseline_model", "codecontests", 0.09, 0.048, 0.162, 100),
        row("canonical", "codecontests", 1.0, 0.963, 1.0, 100),
        row("base_model", "mbpp", 0.0, 0.0, 0.278, 10),
        row("baseline_model", "mbpp", 0.0, 0.0, 0.278, 10),
    ]
    codecontests, mbpp = plot_pass_at_k(rows).axes
    low, high = codecontests.get_ylim()
    assert high == pytest.approx(0.162 * 1.15) and low < 0.016
    assert mbpp.get_ylim()[1] == pytest.approx(0.278 * 1.15)


def test_points_carry_the_wilson_interval_and_the_counts_behind_them():
    rows = tidy_table(results())
    fig = plot_pass_at_k(rows)
    humaneval = fig.axes[0]
    # model_a's humaneval pass@1 interval is the Wilson interval of its per-problem values.
    row = next(
        r
        for r in rows
        if (r["model"], r["dataset"], r["k"], r["difficulty"]) == ("model_a", "humaneval", 1, None)
    )
    assert (row["ci_low"], row["ci_high"]) == wilson_interval([0.5, 0.0, 0.5, 0.0])
    assert row["ci_low"] < row["pass_at_k"] < row["ci_high"]
    assert row["n_samples"] == 8 and row["n_problems"] == 4
    errorbars = _points(humaneval)
    assert len(errorbars) == 2  # the two models, none for canonical
    segments = errorbars[0].lines[2][0].get_segments()
    assert segments[0][:, 1].tolist() == pytest.approx([row["ci_low"], row["ci_high"]])
    assert "4 problems, 8 samples" in humaneval.get_title()


def test_contrasts_are_drawn_as_differences_with_their_intervals():
    res = results()
    per_metric = per_metric_values({m: res[m]["summary"] for m in ("model_a", "model_b")})
    contrasts = [c.row() for c in compare_contrasts(per_metric, [("model_a", "model_b")])]
    fig = plot_pass_at_k(tidy_table(res), contrasts=contrasts)
    # Rows: pass@1 models, pass@1 contrasts, pass@2 models, pass@2 contrasts; two datasets.
    assert len(fig.axes) == 8
    below = fig.axes[2]  # humaneval pass@1 contrasts
    [points] = _points(below)
    assert points.get_label() == "model_a-model_b (diff a - b)"
    humaneval = next(c for c in contrasts if (c["dataset"], c["k"]) == ("humaneval", 1))
    assert humaneval["diff"] == pytest.approx(0.25)
    segment = points.lines[2][0].get_segments()[0]
    assert segment[:, 1].tolist() == pytest.approx([humaneval["diff_low"], humaneval["diff_high"]])
    assert any(line.get_ydata()[0] == 0.0 for line in below.lines)  # the zero line
    assert any("p_holm" in t.get_text() and "mde" in t.get_text() for t in below.texts)
    assert below.get_title() == "humaneval pass@1: pre-registered contrasts a - b"
    assert "paired t" in below.get_ylabel()  # two samples per problem: non-binary pass@1


def test_tidy_table_survives_a_json_round_trip():
    # Results are read back from JSON, where per_difficulty keys are strings.
    round_tripped = json.loads(json.dumps(results()))
    before = {
        (r["model"], r["dataset"], str(r["difficulty"]), r["k"]) for r in tidy_table(results())
    }
    rows = tidy_table(round_tripped)
    assert {(r["model"], r["dataset"], str(r["difficulty"]), r["k"]) for r in rows} == before
    level = next(r for r in rows if r["model"] == "model_a" and r["difficulty"] == "0")
    assert level["n_problems"] == 2 and level["ci_low"] <= level["pass_at_k"] <= level["ci_high"]


def _history(losses: list[float], **columns: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"step": list(range(1, len(losses) + 1)), "train/loss": losses, **columns})


def test_training_curves_keep_the_critic_value_loss_apart():
    nan = float("nan")
    histories = {
        "baseline": _history([4.0, 3.0, 2.5, 2.0], **{"val/loss": [nan, 3.1, nan, 2.2]}),
        "critic": _history([0.3, 0.2, 0.2, 0.1]),
        "verifiable": _history(
            [5.0, 4.0, 3.0, 2.8],
            **{"val/loss": [nan, 3.0, nan, 2.1], "train/value_loss": [0.2, 0.2, 0.1, 0.1]},
        ),
    }
    fig = plot_training_curves(histories)
    held_out, objective, value = fig.axes
    assert [line.get_label() for line in held_out.lines] == ["baseline", "verifiable"]
    # NaN rows (steps without validation) are dropped, not drawn as gaps.
    assert held_out.lines[0].get_xdata().tolist() == [2.0, 4.0]
    assert [line.get_label() for line in objective.lines] == ["baseline", "verifiable"]
    assert [line.get_label() for line in value.lines] == [
        "critic (train/loss)",
        "verifiable (train/value_loss)",
    ]
    assert value.lines[0].get_ydata().tolist() == [0.3, 0.2, 0.2, 0.1]
    assert "val/loss" in held_out.get_title() and "not comparable" in objective.get_title()
    # One colour per method across charts: baseline's curve is baseline_model's colour.
    rows = [
        {
            "model": m,
            "dataset": "codecontests",
            "difficulty": None,
            "k": 1,
            "pass_at_k": 0.5,
            "n_problems": 2,
            "n_samples": 4,
        }
        for m in ("base_model", "verifiable_model", "baseline_model")
    ]
    points = {
        c.get_label(): to_rgba(c.lines[0].get_color())
        for c in _points(plot_pass_at_k(rows).axes[0])
    }
    curves = {line.get_label(): line.get_color() for line in objective.lines}
    assert to_rgba(curves["baseline"]) == points["baseline_model"]
    assert to_rgba(curves["verifiable"]) == points["verifiable_model"]
    assert points["base_model"] != points["baseline_model"]
    # A history without the columns (a job that logged nothing) leaves a labelled empty panel.
    empty = plot_training_curves({"rho1": pd.DataFrame()})
    assert all(not ax.lines for ax in empty.axes)
    assert "not logged" in empty.axes[0].texts[0].get_text()


def test_html_contains_the_tables_and_the_embedded_chart():
    res = results()
    per_metric = per_metric_values({m: res[m]["summary"] for m in ("model_a", "model_b")})
    contrasts = [c.row() for c in compare_contrasts(per_metric, [("model_a", "model_b")])]
    page = render_html(
        res,
        figure_png(plot_pass_at_k(tidy_table(res))),
        notes=["note <1>"],
        verdict="model_b did <best>",
        training_png=figure_png(plot_training_curves({"baseline": _history([2.0, 1.0])})),
        contrasts=contrasts,
    )
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("data:image/png;base64,iVBORw0KGgo") == 2  # both charts embedded
    assert "note &lt;1&gt;" in page  # escaped
    assert "<p class='verdict'>model_b did &lt;best&gt;</p>" in page
    for text in ("model_a", "model_b", "canonical", "humaneval", "mbpp", "pass@2", "ci_low"):
        assert text in page
    assert "<td>0.250</td>" in page and "<td>0.625</td>" in page and "<td>1.000</td>" in page
    assert "Wilson score interval over problems" in page
    assert "Pre-registered contrasts" in page and "<th>p_holm</th>" in page
    assert "<td>model_a-model_b</td>" in page


def test_table_interval_is_the_verdicts_whatever_the_problem_order():
    """The CSV's interval and the verdict's are one computation (Wilson), whatever order the
    scorer gave the problems in."""
    problems = {
        f"cc/{i}": {"task_id": f"cc/{i}", "dataset": "cc", "difficulty": 1} for i in range(30)
    }
    shuffled = dict(sorted(problems.items(), key=lambda item: (int(item[0][3:]) * 7) % 30))
    # Uneven pass fractions (1/3, 2/7, ...): several samples, non-binary per-problem pass@1.
    passes = {t: [j < int(t[3:]) % 4 for j in range(3 + int(t[3:]) % 5)] for t in shuffled}
    summary = summarise(shuffled, verdicts(passes), ks=(1,))
    results = {"m": {"summary": summary, "generation": {}}}
    [row] = [r for r in tidy_table(results) if r["difficulty"] is None]
    verdict = compare({"m": per_problem_values(summary, "cc", 1)}, [], dataset="cc", k=1)
    assert (row["ci_low"], row["ci_high"]) == (
        verdict.estimates["m"].low,
        verdict.estimates["m"].high,
    )
    assert row["ci_low"] < row["pass_at_k"] < row["ci_high"]


def test_seeds_of_a_method_share_its_column_and_colour() -> None:
    def row(model: str, value: float) -> dict:
        return {
            "model": model,
            "dataset": "codecontests",
            "difficulty": None,
            "k": 1,
            "pass_at_k": value,
            "ci_low": 0.0,
            "ci_high": min(1.0, value + 0.1),
            "n_problems": 100,
            "n_samples": 100,
        }

    rows = [
        row("base_model", 0.0),
        row("baseline_model", 0.10),
        row("seed_2.baseline_model", 0.06),
        row("seed_3.baseline_model", 0.08),
    ]
    fig = plot_pass_at_k(rows)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base", "baseline\n3 seeds"]
    # Three seed points around x = 1, in baseline's colour, and a bar at their mean.
    points = [line for line in ax.lines if line.get_marker() == "o"]
    xs = sorted(float(p.get_xdata()[0]) for p in points)
    assert xs[0] == 0.0 and all(0.5 < x < 1.5 for x in xs[1:]) and len(xs) == 4
    assert {p.get_color() for p in points[1:]} == {colours(["baseline_model"])["baseline_model"]}
    # The seeds' mean: one horizontal segment at 0.08 (hlines is a LineCollection).
    means = [
        segment[0][1]
        for collection in ax.collections
        if hasattr(collection, "get_segments")
        for segment in collection.get_segments()
        if len(segment) == 2 and segment[0][1] == segment[1][1]
    ]
    assert means == [pytest.approx(0.08)]
    assert colours(["seed_2.verifiable_model"]) == {"seed_2.verifiable_model": "C2"}
