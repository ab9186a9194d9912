"""The evaluation pipeline, drawn as two kedro-viz boxes: ``evaluation`` (the problems, the
canonical check and one box per model, ``evaluation.<model>``: generate/execute/summarise)
and ``report`` (training diagnostics, comparison, report). The namespaces group nodes only
(``prefix_datasets_with_namespace=False``): every catalog name stays as it is
(``baseline_model.completions``, ``baseline_model_evaluation_result``, data/08_reporting's
``evaluation_*``), and ``tokenizer`` and ``evaluation_problems`` are one edge per box.

Which models are evaluated is structure, not a run-time knob: each model is a catalog entry
(a model directory) that its own sub-pipeline reads, so that the lineage has the edge
``baseline_model -> evaluation`` and Kedro runs every training before the evaluation that
reads it. That is why ``evaluation.models`` cannot come from what Kedro gives a pipeline:
parameters, the catalog and dataset factories are resolved when nodes run, after the graph
is fixed, and Kedro calls ``register_pipelines`` (and so ``create_pipeline``) before it loads
parameters, with no context. ``create_pipeline`` therefore takes the models and the seeds as
arguments; ``weighted_mtp.pipeline_registry`` passes ``evaluation.models`` and
``experiment.seeds`` as the running session sees them (its ``--env`` and ``--params``; its
docstring says how), and ``compare_models`` checks at run time that the loaded
``params:evaluation`` agrees. With ``experiment.seeds = n`` every trained model is evaluated
in each seed (``baseline_model``, ``seed_2.baseline_model``, ...; ``base_model`` once), and
the comparison pools the seeds (:mod:`weighted_mtp.evaluation.comparison`).
Adding ``verifiable_model`` to that list adds a sub-pipeline ``evaluation.verifiable_model``,
a point to the report and the critic's and verifiable's training curves
(:data:`TRAINING_HISTORIES`), with no code change. Those histories are inputs of the report:
``kedro run --pipeline evaluation`` alone needs the trainings of the evaluated models done
(the prerequisites hook stops the run at once otherwise, naming the pipeline to run first).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from kedro.pipeline import Node, Pipeline

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
from weighted_mtp.seeds import seeded_name, split_seed

#: The models of ``create_pipeline()`` without arguments (``find_pipelines`` calls it so;
#: the registry passes ``evaluation.models``).
DEFAULT_MODELS = ("base_model",)
#: The two boxes of the pipeline in kedro-viz; each model's chain is ``evaluation.<model>``.
EVALUATION_NAMESPACE = "evaluation"
REPORT_NAMESPACE = "report"
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
                    "params:runtime",
                    "evaluation_runs",
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
    models: Sequence[str] | None = None, seeds: int = 1, **kwargs: object
) -> Pipeline:
    """Problems -> canonical check; per model: generate -> execute -> summarise (box
    ``evaluation``); the training diagnostics of the weighted methods, then the comparison
    (per-model table, the spread over seeds, the pre-registered contrasts of
    ``evaluation.comparison`` on the seeds' per-problem means, the verdict), metrics and
    report with the training histories of :data:`TRAINING_HISTORIES` (box ``report``).

    ``models``: catalog names (default :data:`DEFAULT_MODELS`; the registry passes
    ``evaluation.models``); ``seeds``: fine-tuning seeds (``experiment.seeds``): every trained
    model is evaluated in every seed (:func:`seeded_models`), ``base_model`` once."""
    models = seeded_models(list(models) if models is not None else list(DEFAULT_MODELS), seeds)
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
                "evaluation_runs": "evaluation_runs",
            },
            # The result leaves the namespace under a plain name: compare_models reads it.
            outputs={"evaluation_result": f"{name}_evaluation_result"},
            parameters={
                "params:evaluation": "params:evaluation",
                "params:runtime": "params:runtime",
            },
        )
        for name in models
    ]
    with warnings.catch_warnings():
        # seed_<s>.<model>_evaluation_result and seed_<s>.<job>_training_history are the
        # outputs of namespaced pipelines (the seeds' copies), and <model>.completions those
        # of each model's chain, read here in the boxes' namespaces by their full names: the
        # dots are Kedro's own namespacing, which its warning is about.
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
        evaluation = Pipeline(
            [shared, *per_model],
            namespace=EVALUATION_NAMESPACE,
            prefix_datasets_with_namespace=False,
        )
        return evaluation + Pipeline(
            report, namespace=REPORT_NAMESPACE, prefix_datasets_with_namespace=False
        )
