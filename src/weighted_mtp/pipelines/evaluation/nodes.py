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
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.evaluation.comparison import (
    CONFIDENCE,
    CONTRAST_COLUMNS,
    EXTRA_COLUMNS,
    INTERVAL_METHOD,
    PRIMARY_DATASET,
    PRIMARY_K,
    SEED_SPREAD_COLUMNS,
    ContrastResult,
    SeedSpread,
    Verdict,
    compare,
    compare_contrasts,
    group_seeds,
    per_metric_values,
    pool_seeds,
    seed_spread,
)
from weighted_mtp.evaluation.diagnostics import diagnose
from weighted_mtp.evaluation.execution import check_completions
from weighted_mtp.evaluation.parallel_generation import generate_for_model
from weighted_mtp.evaluation.problems import validate_problem
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
from weighted_mtp.pipelines.job_environment import (
    credential_env,
    new_run_dir,
    public_storage_options,
    runtime_params,
)

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
    runtime: Mapping[str, Any],
    evaluation_runs: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Complete every problem with the model; returns the samples and generation stats.

    Logs the cost first. With ``runtime.nproc_per_node > 1``, that many torchrun workers on
    this node generate (:mod:`weighted_mtp.evaluation.parallel_generation`; run directory
    ``<evaluation_runs>/<model>/<UTC time>``), else this process: the samples are the same.

    Raises:
        TokenizerMismatchError: before the weights are read, when ``tokenizer`` (the catalog
            entry that encodes the prompts) has another size than the model's vocabulary or
            differs from the ``tokenizer.model`` the model directory ships.
    """
    runtime = runtime_params(runtime)
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
    return generate_for_model(
        model_dir,
        tokenizer,
        problems,
        params.formats,
        params.generation,
        runtime,
        lambda: new_run_dir(evaluation_runs, Path(model_dir.path.rstrip("/")).name or "model"),
        storage_options=public_storage_options(model_dir.storage_options),
        extra_env=credential_env(model_dir.storage_options),
    )


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
    n_seeds: int,
    spread: Sequence[SeedSpread],
) -> Verdict:
    primary = per_metric.get((PRIMARY_DATASET, PRIMARY_K), {})
    if not primary:
        return Verdict(
            PRIMARY_DATASET,
            PRIMARY_K,
            {},
            n_seeds=n_seeds,
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
        n_seeds=n_seeds,
        spread=spread,
    )


def compare_models(
    canonical: dict[str, Any],
    params: EvaluationParams,
    diagnostics: Mapping[str, Mapping[str, Any]] | None = None,
    **model_results: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, dict[str, float]]]:
    """Collect every model's result and the canonical reference, pool each trained method's
    seeds, test the pre-registered contrasts (``evaluation.comparison``) and write the verdict
    on the primary metric (:mod:`weighted_mtp.evaluation.comparison`), with the training
    diagnostics of the weighted methods (:mod:`weighted_mtp.evaluation.diagnostics`).

    ``model_results``: ``{catalog name: result}``, seed ``s >= 2`` of a model as
    ``seed_<s>.<model>`` (the pipeline's structure: ``experiment.seeds``); the run's
    ``n_seeds`` is the most seeds any model has. ``diagnostics``: ``diagnose``'s output
    (None: no weighted method's history was read).

    Returns the results document (JSON: ``models`` (every seed's), ``table``, ``contrasts``
    with the task ids each side alone solved, ``n_seeds``, ``seed_summary``, ``diagnostics``,
    ``verdict``), the tidy pass@k table (one row per catalog name with ``method`` and ``seed``,
    the Wilson ``ci_low``, ``ci_high``, ``n_problems``, ``n_samples``), the contrasts table
    (``contrasts.csv``: :data:`~weighted_mtp.evaluation.comparison.CONTRAST_COLUMNS` then
    :data:`~weighted_mtp.evaluation.comparison.EXTRA_COLUMNS`, one row per contrast, dataset
    and k, on the seed means), the spread over seeds (``pass_at_k_seeds.csv``:
    :data:`~weighted_mtp.evaluation.comparison.SEED_SPREAD_COLUMNS`, one row per model,
    dataset and k) and the MLflow metrics ``{"<model>.<dataset>.pass_at_<k>": {"value",
    "step"}}`` (``<model>`` the catalog name, so ``seed_2.baseline_model....``), per
    difficulty ``<model>.<dataset>.difficulty_<d>.pass_at_<k>`` (plus mean generated tokens
    and, with speculative decoding, acceptance rate and tokens per forward), per contrast
    ``contrast.<a>-<b>.<dataset>.pass_at_<k>.{diff,p_value,p_holm,mde}`` (a non-finite MDE is
    not logged) and, with several seeds, ``seeds.<model>.<dataset>.pass_at_<k>.{mean,sd,min,
    max}``.
    """
    groups = group_seeds(model_results)
    if set(groups) != set(params.models):
        raise ValueError(
            f"evaluation.models is {params.models} but the pipeline was built for "
            f"{list(groups)}: the model list is read when the pipeline is created "
            "(pipelines/evaluation/pipeline.py, with the seeds of experiment.seeds); set it "
            "in parameters_evaluation.yml of the environment the run uses (--env) or with "
            "--params, not in a pipeline built by hand for other models"
        )
    n_seeds = max(len(seeds) for seeds in groups.values())
    names = [name for model in params.models for name in groups[model].values()]
    results = {**{name: model_results[name] for name in names}, REFERENCE_MODEL: canonical}
    rows = tidy_table(results)
    metrics: dict[str, dict[str, float]] = {}
    for row in rows:
        level = "" if is_missing(row["difficulty"]) else f".difficulty_{row['difficulty']}"
        key = f"{row['model']}.{row['dataset']}{level}.pass_at_{row['k']}"
        metrics[key] = {"value": float(row["pass_at_k"]), "step": 0}
    for name in names:
        for dataset, stats in model_results[name]["generation"].get("per_dataset", {}).items():
            for stat in ("mean_generated_tokens", "acceptance_rate", "tokens_per_forward"):
                if stat in stats:
                    metrics[f"{name}.{dataset}.{stat}"] = {"value": float(stats[stat]), "step": 0}
    comparison = params.comparison
    per_seed = per_metric_values({name: model_results[name]["summary"] for name in names})
    spread = seed_spread(per_seed)
    for s in spread:
        if s.n_seeds > 1:
            for stat in ("mean", "sd", "min", "max"):
                metrics[f"seeds.{s.model}.{s.dataset}.pass_at_{s.k}.{stat}"] = {
                    "value": float(getattr(s, stat)),
                    "step": 0,
                }
    per_metric = {metric: pool_seeds(values)[0] for metric, values in per_seed.items()}
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
        n_seeds={model: len(seeds) for model, seeds in groups.items()},
    )
    for c in contrasts:
        prefix = f"contrast.{c.contrast}.{c.dataset}.pass_at_{c.k}"
        for name in ("diff", "p_value", "p_holm", "mde"):
            value = float(getattr(c, name))
            if math.isfinite(value):
                metrics[f"{prefix}.{name}"] = {"value": value, "step": 0}
    verdict = _verdict(params, per_metric, contrasts, n_seeds, spread)
    if params.untested_contrasts:
        untested = ", ".join(f"{a}-{b}" for a, b in params.untested_contrasts)
        verdict = dataclasses.replace(
            verdict,
            text=f"{verdict.text} Not tested (a model not evaluated in this run): {untested}.",
        )
    diagnostics = dict(diagnostics or {})
    if diagnostics:
        verdict = dataclasses.replace(
            verdict,
            text=f"{verdict.text} Training diagnostics: "
            + " ".join(entry["sentence"] for entry in diagnostics.values()),
        )
    logger.info("verdict: %s", verdict.text)
    document = {
        "ks": list(params.ks),
        "n_seeds": n_seeds,
        "models": results,
        "table": rows,
        "contrasts": [dataclasses.asdict(c) for c in contrasts],
        "seed_summary": [s.row() for s in spread],
        "diagnostics": diagnostics,
        "verdict": verdict.to_dict(),
    }
    contrast_table = pd.DataFrame(
        [c.row() for c in contrasts], columns=[*CONTRAST_COLUMNS, *EXTRA_COLUMNS]
    )
    seed_table = pd.DataFrame([s.row() for s in spread], columns=list(SEED_SPREAD_COLUMNS))
    return document, pd.DataFrame(rows), contrast_table, seed_table, metrics


def diagnose_training(**histories: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The training diagnostics of the weighted methods' jobs among ``histories``
    (``{job: <job>_training_history}``, seeds' jobs as ``seed_<s>.<method>``): whether the
    critic beat chance, whether the TD weights were non-uniform, whether Rho-1's premise held
    (:func:`weighted_mtp.evaluation.diagnostics.diagnose`; "not logged" for absent columns)."""
    found = diagnose(histories)
    for entry in found.values():
        logger.info("training diagnostics: %s", entry["sentence"])
    return found


#: Function-completion datasets a model trained only on stdin/stdout programs has never seen.
FUNCTION_COMPLETION_DATASETS = ("humaneval", "mbpp")
NEAR_ZERO = 0.05


def _notes(results: dict[str, Any], histories: Mapping[str, pd.DataFrame]) -> list[str]:
    models = results["models"]
    evaluated = [m for m in models if m != REFERENCE_MODEL]
    n_seeds = int(results.get("n_seeds", 1))
    notes = [
        f"models: {', '.join(evaluated)}; '{REFERENCE_MODEL}' = the datasets' reference "
        "solutions through the same sandbox (one per problem: pass@1 only)",
        f"intervals: {int(CONFIDENCE * 100)}% {INTERVAL_METHOD}; counts of problems and "
        "samples are under each dataset in the chart and in the tables",
        (
            "1 fine-tuning seed per method: training variance is in no interval or test here; "
            "they measure the sampling of problems only (experiment.seeds runs more)"
            if n_seeds == 1
            else f"{n_seeds} fine-tuning seeds per trained method (seed 1: <model>, seed s: "
            "seed_<s>.<model>): the verdict's estimates and contrasts use each problem's mean "
            "over seeds; the spread across seeds is in the seeds table, not in the intervals"
        ),
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
    ``histories`` (``{job: <job>_training_history}``) and the HTML page with the verdict,
    the spread over seeds and the training diagnostics of ``results``."""
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
        seed_summary=results.get("seed_summary") or [],
        diagnostics=[e["sentence"] for e in (results.get("diagnostics") or {}).values()],
    )
    return pass_at_k, training, page
