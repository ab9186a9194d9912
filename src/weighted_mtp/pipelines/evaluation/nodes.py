"""Evaluation nodes: pick problems, generate, execute, score, compare, report.

Thin glue between catalog entries and ``weighted_mtp.evaluation``; the typed parameters
(:class:`~weighted_mtp.pipelines.evaluation.params.EvaluationParams`) are built and
validated by Kedro from ``params:evaluation`` before anything runs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.evaluation.comparison import (
    CONFIDENCE,
    CONTRAST_COLUMNS,
    EXTRA_COLUMNS,
    INTERVAL_METHOD,
    N_SEEDS,
    PRIMARY_DATASET,
    PRIMARY_K,
    ContrastResult,
    Verdict,
    compare,
    compare_contrasts,
    per_metric_values,
)
from weighted_mtp.evaluation.execution import check_completions
from weighted_mtp.evaluation.problems import validate_problem
from weighted_mtp.evaluation.prompts import complete_problems
from weighted_mtp.evaluation.report import (
    REFERENCE_MODEL,
    figure_png,
    is_missing,
    plot_pass_at_k,
    plot_training_curves,
    render_html,
    tidy_table,
)
from weighted_mtp.evaluation.scoring import summarise
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.tokenizer_check import check_model_tokenizer
from weighted_mtp.pipelines.evaluation.params import EvaluationParams

logger = logging.getLogger(__name__)


def select_problems(
    params: EvaluationParams, **problem_sets: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The first ``max_problems`` problems (file order) of each dataset named in the
    parameters, validated against the contract; ``dataset`` is set from the set's name."""
    unknown = sorted(set(params.datasets) - set(problem_sets))
    if unknown:
        raise KeyError(
            f"evaluation.datasets names {unknown}, but the pipeline only reads "
            f"{sorted(problem_sets)} (pipelines/evaluation/pipeline.py: PROBLEM_SETS)"
        )
    selected: list[dict[str, Any]] = []
    for name, dataset in params.datasets.items():
        records = list(problem_sets[name])
        if dataset.max_problems is not None:
            records = records[: dataset.max_problems]
        for index, record in enumerate(records):
            validate_problem(record, f"{name}[{index}]")
            selected.append({**record, "dataset": name})
        logger.info("%s: %d problems selected", name, len(records))
    return selected


def _by_task(problems: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["task_id"]: p for p in problems}


def score_canonical_solutions(
    problems: list[dict[str, Any]], params: EvaluationParams
) -> dict[str, Any]:
    """Run each problem's canonical solution through the same sandbox: the harness check.

    Anything short of pass@1 = 1 means the harness (prompt prefix, tests, executor) is wrong
    for that dataset, and is logged as an error naming the failing tasks.
    """
    samples = [
        {"task_id": p["task_id"], "completion": p["canonical_solution"]}
        for p in problems
        if p.get("canonical_solution") is not None
    ]
    verdicts = check_completions(
        _by_task(problems),
        samples,
        limits=params.execution.limits,
        workers=params.execution.workers,
    )
    failed = [v for v in verdicts if not v["passed"]]
    if failed:
        shown = ", ".join(f"{v['task_id']} ({v['status']}: {v['error']})" for v in failed[:5])
        logger.error(
            "harness check: %d/%d canonical solutions fail (expected all to pass): %s",
            len(failed),
            len(verdicts),
            shown,
        )
    else:
        logger.info("harness check: all %d canonical solutions pass", len(verdicts))
    summary = summarise(_by_task(problems), verdicts, ks=[1])
    return {"summary": summary, "generation": {}, "failed_tasks": [v["task_id"] for v in failed]}


def generate_completions(
    model_dir: ModelDirectory,
    tokenizer: Tokenizer,
    problems: list[dict[str, Any]],
    params: EvaluationParams,
    device: str,
    dtype: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Load the model and complete every problem; returns the samples and generation stats.

    Raises:
        TokenizerMismatchError: before the weights are read, when ``tokenizer`` (the catalog
            entry that encodes the prompts) has another size than the model's vocabulary or
            differs from the ``tokenizer.model`` the model directory ships.
    """
    check_model_tokenizer(
        model_dir,
        tokenizer,
        f"{tokenizer.source} (catalog entry `tokenizer`, which encodes the prompts)",
        vocab_size=model_dir.read_args().vocab_size,
        vocab_source=f"{model_dir.path} (its params.json or config.json)",
        hint=(
            "generation would decode the model's ids with another vocabulary; evaluate models "
            "trained with the data's tokenizer, or point `tokenizer` at the one they ship"
        ),
    )
    logger.info("loading %s on %s (%s)", model_dir.path, device, dtype)
    model = model_dir.load(device=device, dtype=dtype)
    samples, stats = complete_problems(
        model, tokenizer, problems, params.formats, params.generation
    )
    return samples, {"model_dir": model_dir.path, "per_dataset": stats}


def execute_completions(
    problems: list[dict[str, Any]], samples: list[dict[str, Any]], params: EvaluationParams
) -> list[dict[str, Any]]:
    """Each sample with its sandbox verdict (``status``, ``passed``, ``error``)."""
    step = max(1, len(samples) // 10)

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            logger.info("executed %d/%d samples", done, total)

    return check_completions(
        _by_task(problems),
        samples,
        limits=params.execution.limits,
        workers=params.execution.workers,
        progress=progress,
    )


def summarise_model(
    problems: list[dict[str, Any]],
    verdicts: list[dict[str, Any]],
    generation_stats: dict[str, Any],
    params: EvaluationParams,
) -> dict[str, Any]:
    """pass@k per problem, dataset and difficulty, with the generation stats beside it."""
    summary = summarise(_by_task(problems), verdicts, ks=params.ks)
    for dataset, group in summary["per_dataset"].items():
        shown = ", ".join(f"{k}={v:.3f}" for k, v in group.items() if k.startswith("pass@"))
        logger.info("%s: %s", dataset, shown)
    return {"summary": summary, "generation": generation_stats}


def _verdict(
    params: EvaluationParams,
    per_metric: Mapping[tuple[str, int], Mapping[str, Mapping[str, float]]],
    contrasts: list[ContrastResult],
) -> Verdict:
    primary = per_metric.get((PRIMARY_DATASET, PRIMARY_K), {})
    if not primary:
        return Verdict(
            PRIMARY_DATASET,
            PRIMARY_K,
            {},
            text=(
                f"No verdict: the primary metric, {PRIMARY_DATASET} pass@{PRIMARY_K}, was not "
                f"measured (add {PRIMARY_DATASET} to evaluation.datasets)."
            ),
        )
    return compare(
        {m: primary[m] for m in params.models if m in primary},
        contrasts,
        dataset=PRIMARY_DATASET,
        k=PRIMARY_K,
        alpha=params.comparison.alpha,
        power=params.comparison.power,
        n_seeds=N_SEEDS,
    )


def compare_models(
    canonical: dict[str, Any], params: EvaluationParams, **model_results: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, dict[str, dict[str, float]]]:
    """Collect every model's result and the canonical reference, test the pre-registered
    contrasts (``evaluation.comparison``) and write the verdict on the primary metric
    (:mod:`weighted_mtp.evaluation.comparison`).

    Returns the results document (JSON: ``models``, ``table``, ``contrasts`` with the task ids
    each side alone solved, ``verdict``), the tidy pass@k table (with the Wilson ``ci_low``,
    ``ci_high``, ``n_problems``, ``n_samples``), the contrasts table (``contrasts.csv``:
    :data:`~weighted_mtp.evaluation.comparison.CONTRAST_COLUMNS` then
    :data:`~weighted_mtp.evaluation.comparison.EXTRA_COLUMNS`, one row per contrast, dataset
    and k) and the MLflow metrics ``{"<model>.<dataset>.pass_at_<k>": {"value", "step"}}``,
    per difficulty ``<model>.<dataset>.difficulty_<d>.pass_at_<k>`` (plus mean generated
    tokens and, with speculative decoding, acceptance rate and tokens per forward), and per
    contrast ``contrast.<a>-<b>.<dataset>.pass_at_<k>.{diff,p_value,p_holm,mde}`` (a
    non-finite MDE is not logged).
    """
    if set(model_results) != set(params.models):
        raise ValueError(
            f"evaluation.models is {params.models} but the pipeline was built for "
            f"{list(model_results)}: the model list is read when the pipeline is created "
            "(pipelines/evaluation/pipeline.py); set it in parameters_evaluation.yml of the "
            "environment the run uses (--env), not with --params"
        )
    results = {**{m: model_results[m] for m in params.models}, REFERENCE_MODEL: canonical}
    rows = tidy_table(results)
    metrics: dict[str, dict[str, float]] = {}
    for row in rows:
        level = "" if is_missing(row["difficulty"]) else f".difficulty_{row['difficulty']}"
        key = f"{row['model']}.{row['dataset']}{level}.pass_at_{row['k']}"
        metrics[key] = {"value": float(row["pass_at_k"]), "step": 0}
    for model in params.models:
        for dataset, stats in model_results[model]["generation"].get("per_dataset", {}).items():
            for name in ("mean_generated_tokens", "acceptance_rate", "tokens_per_forward"):
                if name in stats:
                    metrics[f"{model}.{dataset}.{name}"] = {"value": float(stats[name]), "step": 0}
    comparison = params.comparison
    per_metric = per_metric_values({m: model_results[m]["summary"] for m in params.models})
    for a, b in params.untested_contrasts:
        logger.warning(
            "contrast %s-%s is not tested: evaluation.models %s does not include both",
            a,
            b,
            params.models,
        )
    contrasts = compare_contrasts(
        per_metric,
        params.tested_contrasts,
        alpha=comparison.alpha,
        power=comparison.power,
        n_permutations=comparison.n_permutations,
        seed=comparison.seed,
        n_seeds=N_SEEDS,
    )
    for c in contrasts:
        prefix = f"contrast.{c.contrast}.{c.dataset}.pass_at_{c.k}"
        for name in ("diff", "p_value", "p_holm", "mde"):
            value = float(getattr(c, name))
            if math.isfinite(value):
                metrics[f"{prefix}.{name}"] = {"value": value, "step": 0}
    verdict = _verdict(params, per_metric, contrasts)
    if params.untested_contrasts:
        untested = ", ".join(f"{a}-{b}" for a, b in params.untested_contrasts)
        verdict = dataclasses.replace(
            verdict,
            text=f"{verdict.text} Not tested (a model not evaluated in this run): {untested}.",
        )
    logger.info("verdict: %s", verdict.text)
    document = {
        "ks": list(params.ks),
        "models": results,
        "table": rows,
        "contrasts": [dataclasses.asdict(c) for c in contrasts],
        "verdict": verdict.to_dict(),
    }
    contrast_table = pd.DataFrame(
        [c.row() for c in contrasts], columns=[*CONTRAST_COLUMNS, *EXTRA_COLUMNS]
    )
    return document, pd.DataFrame(rows), contrast_table, metrics


#: Function-completion datasets a model trained only on stdin/stdout programs has never seen.
FUNCTION_COMPLETION_DATASETS = ("humaneval", "mbpp")
NEAR_ZERO = 0.05


def _notes(results: dict[str, Any], histories: Mapping[str, pd.DataFrame]) -> list[str]:
    models = results["models"]
    evaluated = [m for m in models if m != REFERENCE_MODEL]
    notes = [
        f"models: {', '.join(evaluated)}; '{REFERENCE_MODEL}' = the datasets' reference "
        "solutions through the same sandbox (one per problem: pass@1 only)",
        f"intervals: {int(CONFIDENCE * 100)}% {INTERVAL_METHOD}; counts of problems and "
        "samples are under each dataset in the chart and in the tables",
        f"{N_SEEDS} fine-tuning seed per method: training variance is in no interval or test "
        "here; they measure the sampling of problems only",
    ]
    near_zero = [
        d
        for d in FUNCTION_COMPLETION_DATASETS
        if all(
            models[m]["summary"]["per_dataset"].get(d, {}).get("pass@1", 1.0) <= NEAR_ZERO
            for m in evaluated
        )
        and any(d in models[m]["summary"]["per_dataset"] for m in evaluated)
    ]
    if near_zero and evaluated:
        notes.append(
            f"{' and '.join(near_zero)}: pass@1 <= {NEAR_ZERO} for every model. Expected for "
            "the embedded default: its micro models are trained only on CodeContests-style "
            "stdin/stdout programs and have never seen a function-completion prompt; "
            f"{PRIMARY_DATASET} pass@{PRIMARY_K} is the primary metric."
        )
    if "base_model" in evaluated and all(
        group.get("pass@1", 0.0) == 0.0
        for group in models["base_model"]["summary"]["per_dataset"].values()
    ):
        notes.append(
            "base_model solves nothing: it is the starting point of every method (in the "
            "embedded default the pretrained micro model, before any fine-tuning on "
            "solutions), so its zeros are not a harness error."
        )
    if "critic" in histories:
        notes.append(
            "training curves: critic trains only the value head (its loss is a value MSE, "
            "drawn in the value panel); the held-out MTP loss is the comparable curve"
        )
    failed = models[REFERENCE_MODEL].get("failed_tasks") or []
    if failed:
        notes.append(f"HARNESS ERROR: canonical solutions failing: {', '.join(failed[:10])}")
    return notes


def render_report(results: dict[str, Any], **histories: pd.DataFrame) -> tuple[Figure, Figure, str]:
    """The pass@k chart (Wilson intervals; the canonical solutions' pass@1 as a note) with the
    pre-registered contrasts as differences with their intervals, the training curves of
    ``histories`` (``{method: <method>_training_history}``) and the HTML page with the
    verdict."""
    contrasts = results.get("contrasts") or []
    pass_at_k = plot_pass_at_k(results["table"], contrasts=contrasts)
    training = plot_training_curves(histories)
    verdict = (results.get("verdict") or {}).get("text")
    page = render_html(
        results["models"],
        figure_png(pass_at_k),
        notes=_notes(results, histories),
        verdict=verdict,
        training_png=figure_png(training),
        contrasts=contrasts,
    )
    return pass_at_k, training, page
