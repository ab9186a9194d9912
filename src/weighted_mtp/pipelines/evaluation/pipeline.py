"""The evaluation pipeline: one namespaced generate/execute/summarise chain per model.

Which models are evaluated is structure, not a run-time knob: each model is a catalog entry
(a model directory) that its own sub-pipeline reads, and Kedro builds pipelines before it
loads parameters. So ``create_pipeline`` takes the model names from ``evaluation.models`` in
the project's parameters when the pipeline is created (base, overlaid by the environment the
session was started with: ``--env``, recorded by ``weighted_mtp.hooks.SessionEnvironmentHook``,
or ``KEDRO_ENV`` outside a session), or from ``create_pipeline(models=[...])``;
``compare_models`` then checks at run time that the loaded ``params:evaluation`` agrees.
Adding ``verifiable_model`` to that list adds a sub-pipeline ``verifiable_model.*``, a point to
the report and the critic's and verifiable's training curves (:data:`TRAINING_HISTORIES`),
with no code change. Those histories are inputs of the report: ``kedro run --pipeline
evaluation`` alone needs the trainings of the evaluated models done (the prerequisites hook
stops the run at once otherwise, naming the pipeline to run first).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from kedro.pipeline import Node, Pipeline

from weighted_mtp.pipelines.evaluation.nodes import (
    compare_models,
    execute_completions,
    generate_completions,
    render_report,
    score_canonical_solutions,
    select_problems,
    summarise_model,
)

DEFAULT_MODELS = ("base_model",)
#: The training histories the report draws beside an evaluated model: the jobs that made it
#: (verifiable starts from the critic, so the critic's value loss belongs to it). Each is a
#: required input (``<method>_training_history``): the default run writes them before the
#: evaluation, and ``kedro run --pipeline evaluation`` alone needs those trainings done. A
#: model not named here (base_model, a model from elsewhere) brings no history.
TRAINING_HISTORIES = {
    "baseline_model": ("baseline",),
    "verifiable_model": ("critic", "verifiable"),
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

    The environment is the one of the Kedro session that is building the pipelines (its
    ``after_context_created`` hook runs before ``register_pipelines``): ``--env a100`` gives
    conf/a100's list. Without a session of ``project_path`` (the package imported alone,
    ``create_pipeline()`` in a test) it is ``KEDRO_ENV``.
    """
    from kedro.framework.project import settings

    from weighted_mtp.hooks import session_config

    session = session_config()
    env = os.environ.get("KEDRO_ENV")
    conf: Path | None = None
    if session is not None and (
        project_path is None or Path(project_path).resolve() == session.project_path
    ):
        conf, env = Path(session.conf_source), session.env
    else:
        start = (project_path or Path.cwd()).resolve()
        for root in (start, *start.parents):
            if (root / "pyproject.toml").is_file() and (root / settings.CONF_SOURCE).is_dir():
                conf = root / settings.CONF_SOURCE
                break
    if conf is None or not conf.is_dir():
        return list(DEFAULT_MODELS)
    with warnings.catch_warnings():
        # A second loader re-registers Kedro's resolvers; OmegaConf's deprecation notice about
        # that was already shown by the session's own loader.
        warnings.filterwarnings("ignore", message="register_new_resolver", category=UserWarning)
        loader = settings.CONFIG_LOADER_CLASS(
            conf_source=str(conf), env=env, **settings.CONFIG_LOADER_ARGS
        )
        models = loader["parameters"].get("evaluation", {}).get("models")
    return list(models) if models else list(DEFAULT_MODELS)


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


def create_pipeline(models: Sequence[str] | None = None, **kwargs: object) -> Pipeline:
    """Problems -> canonical check; per model: generate -> execute -> summarise; then the
    comparison (per-model table, the pre-registered contrasts of ``evaluation.comparison``,
    the verdict), metrics and report (with the training histories of
    :data:`TRAINING_HISTORIES`).
    ``models``: catalog names (default :func:`configured_models`)."""
    models = list(models) if models is not None else configured_models()
    histories = list(
        dict.fromkeys(method for name in models for method in TRAINING_HISTORIES.get(name, ()))
    )
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
    report = Pipeline(
        [
            Node(
                compare_models,
                inputs={
                    "canonical": "canonical_evaluation_result",
                    "params": "params:evaluation",
                    **{name: f"{name}_evaluation_result" for name in models},
                },
                outputs=[
                    "evaluation_results",
                    "evaluation_table",
                    "evaluation_contrasts",
                    "evaluation_metrics",
                ],
                name="compare_models",
            ),
            Node(
                render_report,
                inputs={
                    "results": "evaluation_results",
                    **{method: f"{method}_training_history" for method in histories},
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
