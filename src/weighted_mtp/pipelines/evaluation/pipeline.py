"""The evaluation pipeline: one namespaced generate/execute/summarise chain per model.

Which models are evaluated is structure, not a run-time knob: each model is a catalog entry
(a model directory) that its own sub-pipeline reads, and Kedro builds pipelines before it
loads parameters. So ``create_pipeline`` takes the model names from ``evaluation.models`` in
the project's parameters when the pipeline is created (base, overlaid by the environment the
session was started with and its ``--params``, recorded by
``weighted_mtp.hooks.SessionEnvironmentHook``, or ``KEDRO_ENV`` outside a session), or from
``create_pipeline(models=[...])``; ``compare_models`` then checks at run time that the loaded
``params:evaluation`` agrees. With ``experiment.seeds = n`` every trained model is evaluated in
each seed (``baseline_model``, ``seed_2.baseline_model``, ...; ``base_model`` once), and the
comparison pools the seeds (:mod:`weighted_mtp.evaluation.comparison`).
Adding ``verifiable_model`` to that list adds a sub-pipeline ``verifiable_model.*``, a point to
the report and the critic's and verifiable's training curves (:data:`TRAINING_HISTORIES`),
with no code change. Those histories are inputs of the report: ``kedro run --pipeline
evaluation`` alone needs the trainings of the evaluated models done (the prerequisites hook
stops the run at once otherwise, naming the pipeline to run first).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from kedro.pipeline import Node, Pipeline

from weighted_mtp.hooks import configured_parameters
from weighted_mtp.pipelines.evaluation.nodes import (
    compare_models,
    diagnose_training,
    execute_completions,
    generate_completions,
    render_report,
    score_canonical_solutions,
    select_problems,
    summarise_model,
)
from weighted_mtp.pipelines.training_pipeline import configured_seeds
from weighted_mtp.seeds import seeded_name, split_seed

DEFAULT_MODELS = ("base_model",)
#: The training histories the report draws beside an evaluated model: the jobs that made it
#: (verifiable starts from the critic, so the critic's value loss belongs to it). Each is a
#: required input (``<method>_training_history``): the default run writes them before the
#: evaluation, and ``kedro run --pipeline evaluation`` alone needs those trainings done. A
#: model not named here (base_model, a model from elsewhere) brings no history.
TRAINING_HISTORIES = {
    "baseline_model": ("baseline",),
    "verifiable_model": ("critic", "verifiable"),
    "verifiable_uniform_model": ("critic", "verifiable_uniform"),
    "rho1_model": ("rho1",),
}
# Evaluation-problem catalog entries, by the dataset name used in evaluation.datasets.
PROBLEM_SETS = {
    "humaneval": "eval_problems_humaneval",
    "mbpp": "eval_problems_mbpp",
    "codecontests": "eval_problems_codecontests",
}


def configured_models(project_path: Path | None = None) -> list[str]:
    """``evaluation.models`` from the project's parameters, or :data:`DEFAULT_MODELS` when no
    configuration is found (e.g. the package used outside its project).

    The environment and ``--params`` are those of the Kedro session that is building the
    pipelines (``weighted_mtp.hooks.configured_parameters``): ``--env a100`` gives
    conf/a100's list. Without a session of ``project_path`` (the package imported alone,
    ``create_pipeline()`` in a test) it is ``KEDRO_ENV``'s.
    """
    models = (configured_parameters(project_path).get("evaluation") or {}).get("models")
    return list(models) if models else list(DEFAULT_MODELS)


def seeded_models(models: Sequence[str], seeds: int) -> list[str]:
    """``models`` with every trained one (a key of :data:`TRAINING_HISTORIES`: made by this
    project's method pipelines, so fine-tuned under each seed) followed by its seeds'
    copies ``seed_<s>.<model>``, ``s = 2..seeds``; the others (``base_model``, a model from
    elsewhere) once."""
    out: list[str] = []
    for name in models:
        out.append(name)
        if name in TRAINING_HISTORIES:
            out.extend(seeded_name(name, s) for s in range(2, seeds + 1))
    return out


def model_histories(name: str) -> list[str]:
    """The training jobs whose histories belong to catalog model ``name``
    (:data:`TRAINING_HISTORIES`), in the model's seed: ``seed_2.verifiable_model`` ->
    ``["seed_2.critic", "seed_2.verifiable"]``."""
    model, seed = split_seed(name)
    return [seeded_name(job, seed) for job in TRAINING_HISTORIES.get(model, ())]


def model_pipeline() -> Pipeline:
    """The chain for one model; namespaced per model by :func:`create_pipeline`."""
    return Pipeline(
        [
            Node(
                generate_completions,
                inputs=[
                    "model_dir",
                    "tokenizer",
                    "evaluation_problems",
                    "params:evaluation",
                    "params:runtime.device",
                    "params:runtime.dtype",
                ],
                outputs=["completions", "generation_stats"],
                name="generate_completions",
            ),
            Node(
                execute_completions,
                inputs=["evaluation_problems", "completions", "params:evaluation"],
                outputs="evaluation_samples",
                name="execute_completions",
            ),
            Node(
                summarise_model,
                inputs=[
                    "evaluation_problems",
                    "evaluation_samples",
                    "generation_stats",
                    "params:evaluation",
                ],
                outputs="evaluation_result",
                name="summarise_model",
            ),
        ]
    )


def create_pipeline(
    models: Sequence[str] | None = None, seeds: int | None = None, **kwargs: object
) -> Pipeline:
    """Problems -> canonical check; per model: generate -> execute -> summarise; the training
    diagnostics of the weighted methods; then the comparison (per-model table, the spread
    over seeds, the pre-registered contrasts of ``evaluation.comparison`` on the seeds'
    per-problem means, the verdict), metrics and report (with the training histories of
    :data:`TRAINING_HISTORIES`).

    ``models``: catalog names (default :func:`configured_models`); ``seeds``: fine-tuning
    seeds (default ``experiment.seeds``, read like the models: see
    ``weighted_mtp.pipeline_registry``): every trained model is evaluated in every seed
    (:func:`seeded_models`), ``base_model`` once."""
    seeds = configured_seeds() if seeds is None else seeds
    models = seeded_models(list(models) if models is not None else configured_models(), int(seeds))
    histories = list(dict.fromkeys(job for name in models for job in model_histories(name)))
    shared = Pipeline(
        [
            Node(
                select_problems,
                inputs={"params": "params:evaluation", **PROBLEM_SETS},
                outputs="evaluation_problems",
                name="select_evaluation_problems",
            ),
            Node(
                score_canonical_solutions,
                inputs=["evaluation_problems", "params:evaluation"],
                outputs="canonical_evaluation_result",
                name="score_canonical_solutions",
            ),
        ]
    )
    per_model = [
        Pipeline(
            model_pipeline(),
            namespace=name,
            inputs={
                "model_dir": name,
                "tokenizer": "tokenizer",
                "evaluation_problems": "evaluation_problems",
            },
            # The result leaves the namespace under a plain name: compare_models reads it.
            outputs={"evaluation_result": f"{name}_evaluation_result"},
            parameters={
                "params:evaluation": "params:evaluation",
                "params:runtime.device": "params:runtime.device",
                "params:runtime.dtype": "params:runtime.dtype",
            },
        )
        for name in models
    ]
    with warnings.catch_warnings():
        # seed_<s>.<model>_evaluation_result and seed_<s>.<job>_training_history are the
        # outputs of namespaced pipelines (the seeds' copies), read here by their full
        # names: the dots are Kedro's own namespacing, which its warning is about.
        warnings.filterwarnings(
            "ignore", message="One or more dataset names contain", category=UserWarning
        )
        # Only with histories: a node without inputs would run even with nothing to read.
        diagnosed = (
            [
                Node(
                    diagnose_training,
                    inputs={job: f"{job}_training_history" for job in histories},
                    outputs="training_diagnostics",
                    name="diagnose_training",
                )
            ]
            if histories
            else []
        )
        report = Pipeline(
            [
                *diagnosed,
                Node(
                    compare_models,
                    inputs={
                        "canonical": "canonical_evaluation_result",
                        "params": "params:evaluation",
                        **({"diagnostics": "training_diagnostics"} if histories else {}),
                        **{name: f"{name}_evaluation_result" for name in models},
                    },
                    outputs=[
                        "evaluation_results",
                        "evaluation_table",
                        "evaluation_contrasts",
                        "evaluation_seed_summary",
                        "evaluation_metrics",
                    ],
                    name="compare_models",
                ),
                Node(
                    render_report,
                    inputs={
                        "results": "evaluation_results",
                        **{job: f"{job}_training_history" for job in histories},
                    },
                    outputs=[
                        "evaluation_report_png",
                        "evaluation_training_png",
                        "evaluation_report_html",
                    ],
                    name="render_evaluation_report",
                ),
            ]
        )
    return shared + sum(per_model, Pipeline([])) + report
