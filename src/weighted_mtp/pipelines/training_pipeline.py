"""The shape every training pipeline shares: a model, the run root, the CodeContests training
data (with the tokenizer that counted its tokens) and the method's parameters in;
``<method>_model`` and ``<method>_training_history`` out.

The JSONL corpora are read as their ``@location`` (transcoded catalog entries of the files
data_engineering writes): the workers read the planned rows by byte offset themselves.
``tokenizer`` is the data's tokenizer: the node refuses a model directory that ships another
one, since the data plan's token counts come from it.

Seeds (``experiment.seeds``, default 1): the fine-tuning of every method runs under each seed,
all from the same ``base_model`` (the micro pretraining and data_engineering run once). Seed
``s`` is a copy of the method pipelines (:func:`seed_copy`):

- **names**: seed 1 keeps the plain names (``baseline_model``, ``critic_model``,
  ``baseline_training_history``, node ``baseline.train_baseline``: the registry puts each
  pipeline's nodes in a namespace of its name, datasets unprefixed), so a one-seed run,
  conf/a100, the notebook and every name users know are unchanged, and a three-seed study's
  seed 1 is the one-seed run (same seeds, same run identity: its checkpoints are reused).
  Seed ``s >= 2`` is the Kedro namespace ``seed_<s>``: ``seed_2.baseline_model``,
  ``seed_2.baseline.train_baseline`` (kedro-viz draws each seed as a collapsible
  ``seed_<s>`` box around its methods' boxes). Everything the method pipelines
  produce is the seed's own (verifiable of seed 2 starts from ``seed_2.critic_model``, rho1 of
  seed 2 reads ``seed_2.tuned_reference_model``), and so is each job's state, the run root
  ``seed_<s>.training_runs`` and ``seed_<s>.<job>_checkpoints`` (catalog dataset factories:
  ``data/06_models/{training,checkpoints}/seed_<s>/...``); the rest (``base_model``,
  ``reference_model``, the data, the tokenizer, the parameters) is shared. A symmetric
  ``seed_1.`` prefix was rejected: it would rename every existing entry and history.
- **seeds**: seed ``s`` adds ``SEED_STRIDE * (s - 1)`` (1000) to ``runtime.seed`` and to every
  ``seed`` field of the job's parameters (the data plan's ``<method>.seed``, the reference
  tuning's ``rho1.reference_tuning.seed``): :class:`SeededJob` shifts them when the node runs,
  so the parameter files stay one set. Seed 1 adds 0. The stride keeps the seeds of different
  runs apart for any ``runtime.seed`` below 1000; the run identity hashes the shifted
  parameters, so seeds never share checkpoints even in one location.
- **MLflow**: with several seeds each seed is a run nested in the ``kedro run``'s, named
  ``seed_<s>`` (tag ``seed``, params ``seed.offset`` and the shifted seeds); every job of the
  seed logs into its own run nested in it (``baseline``, ``critic``...), as a one-seed run's
  jobs nest in the ``kedro run``'s directly.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from kedro.pipeline import Node, Pipeline
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from weighted_mtp.seeds import seed_namespace
from weighted_mtp.training.config import params_group

RUNTIME = "params:runtime"
#: Node argument -> catalog entry, for the inputs every training job reads.
TRAINING_DATA = {
    "training_runs": "training_runs",
    "train_jsonl": "codecontests_train_jsonl@location",
    "train_metadata": "codecontests_train_metadata",
    "valid_jsonl": "codecontests_valid_jsonl@location",
    "valid_metadata": "codecontests_valid_metadata",
    "tokenizer": "tokenizer",
}


def training_inputs(init_model: str, params: str, job: str, **extra: str) -> dict[str, str]:
    """Node argument -> catalog entry: ``init_model`` (the model a job starts from), the
    training data, ``<job>_checkpoints`` (where its resume checkpoints live), ``params``
    (``params:<group>``), ``runtime`` and ``extra`` ones."""
    return {
        "init_model": init_model,
        **TRAINING_DATA,
        "checkpoints": f"{job}_checkpoints",
        **extra,
        "params": params,
        "runtime": RUNTIME,
    }


def training_node(
    func: Callable[..., Any],
    method: str,
    *,
    init_model: str,
    extra_inputs: Mapping[str, str] | None = None,
) -> Node:
    """``train_<method>``: ``init_model`` + data + ``params:<method>`` ->
    ``<method>_model``, ``<method>_training_history``. A control reads the parameters of the
    method it controls (``verifiable_uniform``: ``params:verifiable``)."""
    params = f"params:{params_group(method)}"
    return Node(
        func,
        inputs=training_inputs(init_model, params, method, **(extra_inputs or {})),
        outputs=[f"{method}_model", f"{method}_training_history"],
        name=f"train_{method}",
    )


def training_pipeline(func: Callable[..., Any], method: str, *, init_model: str) -> Pipeline:
    """The pipeline of a method that is one training job."""
    return Pipeline([training_node(func, method, init_model=init_model)])


# --------------------------------------------------------------------------- seeds
#: What seed ``s`` adds to every training seed: ``SEED_STRIDE * (s - 1)``.
SEED_STRIDE = 1000
#: The catalog entry of the run directories' root; ``<job>_checkpoints`` are the other
#: per-job state a seed keeps to itself.
TRAINING_RUNS = "training_runs"
CHECKPOINTS_SUFFIX = "_checkpoints"
#: MLflow tag of a seed's run.
SEED_TAG = "seed"


class ExperimentParamsError(ValueError):
    """``experiment.*`` does not fit :class:`ExperimentParams`."""


class ExperimentParams(BaseModel):
    """``experiment`` (conf/base/parameters.yml): the study's shape.

    Attributes:
        seeds: fine-tuning seeds per method (``--params experiment.seeds=3``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: int = Field(1, ge=1, strict=True)


def experiment_params(raw: Mapping[str, Any] | None) -> ExperimentParams:
    """``experiment`` validated (``weighted_mtp.pipeline_registry`` reads it, with the
    session's ``--params``, when it builds the pipelines: its docstring says why there).

    Raises:
        ExperimentParamsError: naming ``experiment.<field>``, the value and what is allowed.
    """
    from weighted_mtp.hooks import describe_validation_error

    try:
        return ExperimentParams.model_validate(dict(raw or {}))
    except ValidationError as exc:
        raise ExperimentParamsError(
            "Invalid parameters (conf/*/parameters.yml or --params): "
            + describe_validation_error("experiment", exc)
        ) from None


def seed_offset(seed: int) -> int:
    """``SEED_STRIDE * (seed - 1)``: seed 1 trains with the configured seeds."""
    seed_namespace(seed)  # validates seed >= 1
    return SEED_STRIDE * (seed - 1)


def shift_seeds(value: Any, offset: int) -> Any:
    """``value`` (a pydantic model or a mapping, nested) with ``offset`` added to every integer
    field named ``seed``; other values, and ``value`` when nothing changes, as they are."""
    if offset == 0:
        return value

    def shifted(name: Any, item: Any) -> Any:
        if name == "seed" and isinstance(item, int) and not isinstance(item, bool):
            return item + offset
        if isinstance(item, BaseModel | Mapping):
            return shift_seeds(item, offset)
        return item

    if isinstance(value, BaseModel):
        update = {}
        for name in type(value).model_fields:
            item = getattr(value, name)
            new = shifted(name, item)
            if new is not item:
                update[name] = new
        return value.model_copy(update=update) if update else value
    if isinstance(value, Mapping):
        return {key: shifted(key, item) for key, item in value.items()}
    return value


def _seed_values(value: Any, prefix: str) -> dict[str, str]:
    from weighted_mtp.hooks import flatten_params

    return {k: v for k, v in flatten_params(value, prefix).items() if k.endswith(".seed")}


#: ``(parent run id, seed) -> the seed's run id``: the jobs of one seed share its run.
_SEED_RUNS: dict[tuple[str, int], str] = {}


@contextlib.contextmanager
def seed_mlflow_run(seed: int, params: Mapping[str, str]) -> Iterator[str | None]:
    """Inside the ``kedro run``'s MLflow run: the seed's nested run ``seed_<seed>`` (opened
    by its first job, reopened by the next ones), with ``params`` logged; the run id, or None
    without an active run (nothing is logged)."""
    import mlflow

    parent = mlflow.active_run()
    if parent is None:
        yield None
        return
    key = (parent.info.run_id, seed)
    existing = _SEED_RUNS.get(key)
    opened = (
        mlflow.start_run(run_id=existing, nested=True)
        if existing is not None
        else mlflow.start_run(
            run_name=seed_namespace(seed), nested=True, tags={SEED_TAG: str(seed)}
        )
    )
    with opened as run:
        _SEED_RUNS[key] = run.info.run_id
        mlflow.log_params(dict(params))
        yield run.info.run_id


class SeededJob:
    """A training node's function run under seed ``seed``: ``params`` and ``runtime`` get
    :func:`seed_offset` added to their seeds (:func:`shift_seeds`), inside the seed's MLflow
    run (:func:`seed_mlflow_run`).

    ``functools.update_wrapper`` keeps the wrapped function's annotations visible
    (``typing.get_type_hints`` follows ``__wrapped__``) and ``__signature__`` its signature
    (Kedro binds a node's dict inputs with ``inspect.signature(func, follow_wrapped=False)``
    to find which input feeds the typed ``params``), so Kedro still builds and validates the
    typed parameters. A class, not a closure: a node's function may be pickled
    (``ParallelRunner``).
    """

    def __init__(self, func: Callable[..., Any], seed: int, group: str) -> None:
        functools.update_wrapper(self, func)
        self.__signature__ = inspect.signature(func)
        self.func, self.seed, self.group = func, seed, group

    def __call__(self, *args: Any, **inputs: Any) -> Any:
        offset = seed_offset(self.seed)
        params = shift_seeds(inputs.pop("params"), offset)
        runtime = shift_seeds(inputs.pop("runtime"), offset)
        logged = {
            "seed.offset": str(offset),
            **_seed_values(runtime, "runtime"),
            **_seed_values(params, self.group),
        }
        with seed_mlflow_run(self.seed, logged):
            return self.func(*args, params=params, runtime=runtime, **inputs)

    def __repr__(self) -> str:
        return f"SeededJob({getattr(self.func, '__name__', self.func)!r}, seed={self.seed})"


def per_seed_entries(pipelines: Iterable[Pipeline]) -> set[str]:
    """The entries each seed has its own copy of: everything ``pipelines`` (the method
    pipelines, all of them: verifiable's ``critic_model`` is the critic pipeline's output)
    produce, plus each job's state (``training_runs``, ``<job>_checkpoints``)."""
    own: set[str] = set()
    for pipeline in pipelines:
        own |= set(pipeline.all_outputs())
        own |= {
            name
            for name in pipeline.inputs()
            if name == TRAINING_RUNS or name.endswith(CHECKPOINTS_SUFFIX)
        }
    return own


def _params_group(node: Node) -> str:
    groups = [n for n in node.inputs if n.startswith("params:") and n != RUNTIME]
    return groups[0].removeprefix("params:") if groups else "params"


def seed_copy(pipeline: Pipeline, seed: int, own: set[str], *, seeds: int) -> Pipeline:
    """Seed ``seed``'s copy of a method pipeline (of a run with ``seeds`` seeds).

    ``pipeline`` must be freshly created (its training nodes' functions are replaced). With
    one seed it is returned untouched. Otherwise every training node (one that reads
    ``params:runtime``) runs as a :class:`SeededJob`; seed 1 keeps the plain names and seed
    ``s >= 2`` is namespaced ``seed_<s>``, with the entries not in ``own``
    (:func:`per_seed_entries`) and every parameter shared.
    """
    if seeds == 1:
        return pipeline
    if not 1 <= seed <= seeds:
        raise ValueError(f"seed {seed} is not one of 1..{seeds}")
    for node in pipeline.nodes:
        if RUNTIME in node.inputs:
            node.func = SeededJob(node.func, seed, _params_group(node))
    if seed == 1:
        return pipeline
    free = pipeline.inputs()
    return Pipeline(
        pipeline,
        namespace=seed_namespace(seed),
        inputs={name: name for name in free if not name.startswith("params:") and name not in own},
        parameters={name: name for name in free if name.startswith("params:")},
    )
