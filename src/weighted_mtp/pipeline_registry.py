"""Project pipelines: one kedro-viz box per pipeline, and one copy of the method pipelines per
fine-tuning seed.

**Boxes.** Every registered pipeline's nodes carry the pipeline's name as their Kedro namespace
(:func:`grouped`: ``baseline.train_baseline``, ``data_engineering.train_tokenizer``), with
``prefix_datasets_with_namespace=False``, so that ``kedro viz`` opens on one collapsible box
per pipeline while every catalog name stays as it is (``base_model``, ``baseline_model``,
``critic_model``, ``*_training_history``, ``seed_<s>.*``): kedro-viz groups nodes by their
namespace alone, and a box's inputs and outputs are the datasets that cross it, so
``tokenizer`` is one edge per box. The evaluation pipeline lays out its own two boxes
(``evaluation``, with one box per evaluated model inside, and ``report``:
:mod:`weighted_mtp.pipelines.evaluation.pipeline`). ``kedro run --namespaces baseline`` runs a
box alone.

**Seeds.** ``experiment.seeds = n`` (conf/base/parameters.yml, or ``kedro run --params
experiment.seeds=3``) shapes the pipelines: each method pipeline (every name of
:data:`DEFAULT_PIPELINES` that is not in :data:`SHARED_PIPELINES`: baseline, critic,
verifiable, verifiable_uniform, rho1 with its reference tuning, and any method added to the
list) holds seed 1 under its plain names and seeds ``2..n`` as namespaces ``seed_<s>``
(:func:`weighted_mtp.pipelines.training_pipeline.seed_copy`: names, seeds, MLflow runs; seed 2's
box ``seed_2`` holds its methods' boxes, ``seed_2.baseline.train_baseline``). data_engineering
and micro_models run once; evaluation evaluates every seed's models (``base_model`` once) and
pools them.

**Why this module reads the session's configuration itself** (the one place that does:
:func:`configured_seeds`, :func:`configured_models`). Two values shape the pipelines, not
their data: ``experiment.seeds`` (how many copies) and ``evaluation.models`` (which model
directories the evaluation reads, one sub-pipeline and one lineage edge each). Kedro builds
pipelines before it loads parameters and gives ``register_pipelines`` neither the context,
the session nor the catalog (Kedro 1.x: ``_ProjectPipelines._load_data`` calls
``register_pipelines()`` without arguments; kedro-org/kedro#3093). Neither can come from what
Kedro gives nodes: a parameter or a dataset factory is resolved when a node runs, after the
graph is fixed; an evaluation that loaded the listed models itself, at run time, would lose
the ``baseline_model -> evaluation`` edges, the per-model boxes and Kedro's ordering of every
training before the evaluation that reads it. So the session's choice reaches this function
through the hook that sees it first: in Kedro 1.x the session hands its ``runtime_params``
(the parsed ``--params``) to the config loader of the context it creates in ``session.run``
(``KedroSession.load_context``), then fires ``after_context_created``, and only afterwards
reads ``pipelines[...]`` (which calls this function). ``weighted_mtp.hooks.
SessionEnvironmentHook`` records the loader's ``conf_source``, ``env`` and public
``runtime_params``, and ``weighted_mtp.hooks.configured_parameters`` builds a loader from
them: the same values the session's own parameters hold, ``--env`` and ``--params`` included
(``kedro viz run --include-hooks --params experiment.seeds=3`` too: kedro-viz fires the
project's hooks only with that flag). The pipeline modules read nothing of it: they take
``seeds`` and ``models`` as arguments. Rejected: an environment variable (a second way to say
the same thing, which neither ``--params`` nor the parameter files would show), and
``KEDRO_ENV``-only guessing (what ``evaluation.models`` did before, which missed
``--params``). Kedro caches the registry per process, so one process builds its pipelines
for the first session's configuration (``bootstrap_project``/``configure_project`` resets the
cache, as the tests do).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from weighted_mtp.hooks import configured_parameters
from weighted_mtp.pipelines.training_pipeline import (
    experiment_params,
    per_seed_entries,
    seed_copy,
)

#: What a bare `kedro run` runs: the whole experiment on the embedded default. Kedro orders the
#: nodes by their datasets (critic before verifiable, the reference tuning before rho1, every
#: trained model before its evaluation), so the order here is only for reading.
DEFAULT_PIPELINES = (
    "data_engineering",
    "micro_models",
    "baseline",
    "critic",
    "verifiable",
    "verifiable_uniform",
    "rho1",
    "evaluation",
)


#: Pipelines of :data:`DEFAULT_PIPELINES` that run once whatever ``experiment.seeds`` says:
#: the data, the pretrained base model and the evaluation (which evaluates every seed). Every
#: other default pipeline is a method pipeline, copied per seed.
SHARED_PIPELINES = ("data_engineering", "micro_models", "evaluation")
#: The pipeline shaped by ``evaluation.models``; it namespaces its own nodes.
EVALUATION = "evaluation"


def method_pipelines() -> tuple[str, ...]:
    """The pipelines fine-tuned under each seed, in :data:`DEFAULT_PIPELINES` order."""
    return tuple(name for name in DEFAULT_PIPELINES if name not in SHARED_PIPELINES)


def grouped(name: str, pipeline: Pipeline) -> Pipeline:
    """``pipeline`` with its nodes in namespace ``name`` (one kedro-viz box; node
    ``train_baseline`` becomes ``baseline.train_baseline``) and every dataset and parameter
    name unchanged."""
    return Pipeline(pipeline, namespace=name, prefix_datasets_with_namespace=False)


def session_parameters(project_path: Path | None = None) -> dict[str, Any]:
    """The parameters of the session building the pipelines (its ``--env`` and ``--params``;
    ``KEDRO_ENV``'s outside a session): the module docstring says why they are read here."""
    return configured_parameters(project_path)


def configured_seeds(
    project_path: Path | None = None, params: Mapping[str, Any] | None = None
) -> int:
    """``experiment.seeds`` of ``params`` (default: :func:`session_parameters`),
    validated; 1 without configuration."""
    params = session_parameters(project_path) if params is None else params
    return experiment_params(params.get("experiment")).seeds


def configured_models(
    project_path: Path | None = None, params: Mapping[str, Any] | None = None
) -> list[str]:
    """``evaluation.models`` of ``params`` (default: :func:`session_parameters`:
    ``--env a100`` gives conf/a100's list), or the evaluation pipeline's ``DEFAULT_MODELS``
    when no configuration is found (the package used outside its project)."""
    # Imported on use, like every pipeline module: Kedro imports only the pipelines a run names.
    from weighted_mtp.pipelines.evaluation.pipeline import DEFAULT_MODELS

    params = session_parameters(project_path) if params is None else params
    models = (params.get("evaluation") or {}).get("models")
    return list(models) if models else list(DEFAULT_MODELS)


def _create(name: str) -> Pipeline:
    # A fresh pipeline per call: seed_copy replaces its training nodes' functions.
    pipeline = importlib.import_module(f"weighted_mtp.pipelines.{name}").create_pipeline()
    return grouped(name, pipeline)


def seeded_methods(seeds: int) -> dict[str, list[Pipeline]]:
    """``{method pipeline: [seed 1's copy, ..., seed n's]}``, each in its box (:func:`grouped`).

    Every method pipeline is created here, whatever Kedro was asked to import: which entries
    a seed owns (:func:`~weighted_mtp.pipelines.training_pipeline.per_seed_entries`) depends
    on all of them (``kedro run --pipelines verifiable`` must read ``seed_2.critic_model``,
    which only the critic pipeline says is produced).
    """
    methods = method_pipelines()
    own = per_seed_entries(_create(name) for name in methods)
    return {
        name: [seed_copy(_create(name), s, own, seeds=seeds) for s in range(1, seeds + 1)]
        for name in methods
    }


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects: one per folder of
        ``pipelines/`` (each method pipeline with all its seeds, every one in its box) and
        ``__default__``. A seed ``s >= 2`` alone is ``kedro run --namespaces seed_<s>`` (a
        pipeline per seed would be a name Kedro's selective import cannot find,
        ``find_pipelines`` fails on it).
    """
    # Kedro imports only the pipelines named on the command line; keep that selection.
    found = find_pipelines(raise_errors=True)
    params = session_parameters()
    seeds = configured_seeds(params=params)
    copies = seeded_methods(seeds)
    pipelines: dict[str, Pipeline] = {}
    for name, pipeline in found.items():
        if name == "__default__":
            continue
        if name in copies:
            pipelines[name] = sum(copies[name], Pipeline([]))
        elif name == EVALUATION:
            module = importlib.import_module(f"weighted_mtp.pipelines.{EVALUATION}")
            pipelines[name] = module.create_pipeline(
                models=configured_models(params=params), seeds=seeds
            )
        else:
            pipelines[name] = grouped(name, pipeline)
    pipelines["__default__"] = sum(
        (pipelines[name] for name in DEFAULT_PIPELINES if name in pipelines), Pipeline([])
    )
    return pipelines
