"""Evaluation nodes: pick problems, generate, execute, score, compare, report.

Thin glue between catalog entries and ``weighted_mtp.evaluation``; the typed parameters
(:class:`EvaluationParams`) are built and validated by Kedro from ``params:evaluation``
before anything runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.evaluation.execution import SandboxLimits, check_completions
from weighted_mtp.evaluation.problems import validate_problem
from weighted_mtp.evaluation.prompts import (
    DEFAULT_FORMATS,
    PromptFormat,
    SamplingSettings,
    complete_problems,
)
from weighted_mtp.evaluation.report import (
    REFERENCE_MODEL,
    figure_png,
    plot_pass_at_k,
    render_html,
    tidy_table,
)
from weighted_mtp.evaluation.scoring import summarise
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.tokenizer_check import check_model_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class DatasetParams:
    """One evaluation dataset: how many problems (None: all) and its prompt format."""

    max_problems: int | None = None
    prompt: PromptFormat | None = None


@dataclass
class ExecutionParams:
    """Sandbox: programs run ``workers`` at a time under ``limits`` (SandboxLimits fields)."""

    workers: int = 2
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    def __post_init__(self) -> None:
        if isinstance(self.limits, Mapping):
            self.limits = SandboxLimits(**self.limits)


@dataclass
class EvaluationParams:
    """``params:evaluation`` (conf/base/parameters_evaluation.yml)."""

    models: list[str]
    datasets: dict[str, DatasetParams]
    generation: SamplingSettings = field(default_factory=SamplingSettings)
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    execution: ExecutionParams = field(default_factory=ExecutionParams)

    def __post_init__(self) -> None:
        if isinstance(self.generation, Mapping):
            self.generation = SamplingSettings(**self.generation)
        if isinstance(self.execution, Mapping):
            self.execution = ExecutionParams(**self.execution)
        datasets = {}
        for name, raw in (self.datasets or {}).items():
            if isinstance(raw, DatasetParams):
                datasets[name] = raw
                continue
            raw = dict(raw or {})
            prompt = raw.pop("prompt", None)
            fmt = (
                PromptFormat.from_params(prompt, where=f"evaluation.datasets.{name}.prompt")
                if prompt is not None
                else DEFAULT_FORMATS.get(name, PromptFormat("instruction"))
            )
            datasets[name] = DatasetParams(prompt=fmt, **raw)
        self.datasets = datasets
        if not self.datasets:
            raise ValueError("evaluation.datasets: name at least one dataset")
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise ValueError(f"evaluation.ks must be positive integers, got {self.ks!r}")
        if REFERENCE_MODEL in self.models:
            raise ValueError(f"evaluation.models: {REFERENCE_MODEL!r} is reserved")

    @property
    def formats(self) -> dict[str, PromptFormat]:
        return {name: d.prompt or PromptFormat() for name, d in self.datasets.items()}


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


def compare_models(
    canonical: dict[str, Any], params: EvaluationParams, **model_results: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, dict[str, float]]]:
    """Collect every model's result and the canonical reference.

    Returns the results document (JSON), the tidy pass@k table and the MLflow metrics
    ``{"<model>.<dataset>.pass_at_<k>": {"value", "step"}}`` (plus mean generated tokens and,
    with speculative decoding, acceptance rate and tokens per forward).
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
        if row["difficulty"] is None:
            key = f"{row['model']}.{row['dataset']}.pass_at_{row['k']}"
            metrics[key] = {"value": float(row["pass_at_k"]), "step": 0}
    for model in params.models:
        for dataset, stats in model_results[model]["generation"].get("per_dataset", {}).items():
            for name in ("mean_generated_tokens", "acceptance_rate", "tokens_per_forward"):
                if name in stats:
                    metrics[f"{model}.{dataset}.{name}"] = {"value": float(stats[name]), "step": 0}
    document = {"ks": list(params.ks), "models": results, "table": rows}
    return document, pd.DataFrame(rows), metrics


def render_report(results: dict[str, Any]) -> tuple[Figure, str]:
    """The pass@k bar chart (canonical solutions as the upper reference) and the HTML page."""
    models = results["models"]
    figure = plot_pass_at_k(results["table"])
    notes = [
        f"models: {', '.join(m for m in models if m != REFERENCE_MODEL)}; "
        f"'{REFERENCE_MODEL}' = the datasets' reference solutions through the same sandbox"
    ]
    failed = models[REFERENCE_MODEL].get("failed_tasks") or []
    if failed:
        notes.append(f"HARNESS ERROR: canonical solutions failing: {', '.join(failed[:10])}")
    return figure, render_html(models, figure_png(figure), notes=notes)
