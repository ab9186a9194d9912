"""Project pipelines, with one copy of the method pipelines per fine-tuning seed.

``experiment.seeds = n`` (conf/base/parameters.yml, or ``kedro run --params
experiment.seeds=3``) shapes the pipelines: each method pipeline (every name of
:data:`DEFAULT_PIPELINES` that is not in :data:`SHARED_PIPELINES`: baseline, critic,
verifiable, verifiable_uniform, rho1 with its reference tuning, and any method added to the
list) holds seed 1 under its plain names and seeds ``2..n`` as namespaces ``seed_<s>``
(:func:`weighted_mtp.pipelines.training_pipeline.seed_copy`: names, seeds, MLflow runs).
data_engineering and micro_models run once; evaluation evaluates every seed's models
(``base_model`` once) and pools them.

How ``--params`` reaches pipeline creation: Kedro builds pipelines before it loads parameters,
and ``register_pipelines`` is given neither the context nor the session. In Kedro 1.x the
session hands its ``runtime_params`` (the parsed ``--params``) to the config loader of the
context it creates in ``session.run`` (``KedroSession.load_context``), then fires
``after_context_created``, and only afterwards reads ``pipelines[...]`` (which calls this
function). ``weighted_mtp.hooks.SessionEnvironmentHook`` records the loader's
``conf_source``, ``env`` and public ``runtime_params`` in that hook, and
:func:`~weighted_mtp.pipelines.training_pipeline.configured_seeds` reads ``experiment.seeds``
through a loader built from them (``weighted_mtp.hooks.configured_parameters``): the same
value the session's own parameters hold, ``--env`` and ``--params`` included (``kedro viz
run --include-hooks --params experiment.seeds=3`` too: kedro-viz fires the project's hooks
only with that flag). Rejected: an environment variable (a second way to say the same thing,
which neither ``--params`` nor the parameter files would show), and ``KEDRO_ENV``-only
guessing (what ``evaluation.models`` did before, which missed ``--params``). Kedro caches the registry per process, so one process builds its
pipelines for the first session's seeds (``bootstrap_project``/``configure_project``
resets the cache, as the tests do).
"""

from __future__ import annotations

import importlib

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from weighted_mtp.pipelines.training_pipeline import configured_seeds, per_seed_entries, seed_copy

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


def method_pipelines() -> tuple[str, ...]:
    """The pipelines fine-tuned under each seed, in :data:`DEFAULT_PIPELINES` order."""
    return tuple(name for name in DEFAULT_PIPELINES if name not in SHARED_PIPELINES)


def _create(name: str) -> Pipeline:
    # A fresh pipeline per call: seed_copy replaces its training nodes' functions.
    return importlib.import_module(f"weighted_mtp.pipelines.{name}").create_pipeline()


def seeded_methods(seeds: int) -> dict[str, list[Pipeline]]:
    """``{method pipeline: [seed 1's copy, ..., seed n's]}``.

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
        ``pipelines/`` (each method pipeline with all its seeds) and ``__default__``. A seed
        ``s >= 2`` alone is ``kedro run --namespaces seed_<s>`` (a pipeline per seed would
        be a name Kedro's selective import cannot find, ``find_pipelines`` fails on it).
    """
    pipelines = find_pipelines(raise_errors=True)
    seeds = configured_seeds()
    copies = seeded_methods(seeds)
    for name, per_seed in copies.items():
        # Kedro imports only the pipelines named on the command line; keep that selection.
        if name in pipelines:
            pipelines[name] = sum(per_seed, Pipeline([]))
    pipelines["__default__"] = sum(
        (pipelines[name] for name in DEFAULT_PIPELINES if name in pipelines), Pipeline([])
    )
    return pipelines
