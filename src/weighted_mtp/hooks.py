"""Project hooks: the session's environment for pipeline creation, typed parameters in MLflow,
the runner's name in the run's tags, and checks that stop a run before any node starts
(parameters Kedro does not type-check, protected outputs, S3 credentials, missing inputs)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.io import CatalogProtocol
from kedro.pipeline import Node, Pipeline
from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)

_MLFLOW_PARAM_MAX = 6000  # MLflow's limit on a parameter value's length


def flatten_params(value: Any, prefix: str) -> dict[str, str]:
    """Nested dataclasses, pydantic models and mappings -> ``{"a.b.c": "value"}`` (lists are
    kept whole)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif isinstance(value, BaseModel):
        value = {name: getattr(value, name) for name in type(value).model_fields}
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(flatten_params(item, f"{prefix}.{key}"))
        return flat
    return {prefix: str(value)[:_MLFLOW_PARAM_MAX]}


def _is_typed(value: Any) -> bool:
    return isinstance(value, BaseModel) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    )


class TypedParamsMlflowHook:
    """Logs typed (dataclass or pydantic) node parameters to MLflow one field at a time.

    Kedro builds a dataclass or pydantic model from a ``params:`` input whose node argument is
    annotated with one; kedro-mlflow flattens only dicts, so it would log such an input as a
    single truncated ``repr``. Flattening here keeps every knob searchable in MLflow
    (``data_engineering.synthetic.n_train_tasks``, ``rho1.reference_tuning.enabled``), like
    the untyped parameters.
    """

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        if mlflow.active_run() is None:
            return
        flat: dict[str, str] = {}
        for name, value in inputs.items():
            if name.startswith("params:") and _is_typed(value):
                flat.update(flatten_params(value, name.removeprefix("params:")))
        if flat:
            mlflow.log_params(flat)


# --------------------------------------------------------------------------- runner name
_OBJECT_REPR = re.compile(r"^<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-fA-F]+>$")


def runner_name(runner: Any) -> Any:
    """``"SequentialRunner"`` for ``"<kedro.runner.sequential_runner.SequentialRunner object
    at 0x7f...>"`` and for ``"None"`` (``session.run()`` without a runner records
    ``str(None)``, then uses its default, a ``SequentialRunner``); any other value unchanged."""
    if runner is None or runner == "None":
        return "SequentialRunner"
    if isinstance(runner, str):
        match = _OBJECT_REPR.match(runner)
        if match:
            return match.group(1)
    return runner


class RunnerNameHook:
    """Sets the MLflow ``runner`` tag to the runner's class name.

    Kedro records ``str(runner)`` in the run parameters when it is handed a runner instance
    (which ``kedro run`` always does), and kedro-mlflow turns every run parameter into a tag:
    the ``runner`` tag read ``<kedro.runner.sequential_runner.SequentialRunner object at
    0x7f...>``, a value that differs from run to run and cannot be filtered on. The run
    parameters themselves are left alone (kedro-viz recognises the sequential runner by that
    very text). ``trylast``: after kedro-mlflow has opened the run and set its tags.
    """

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        if mlflow.active_run() is not None:
            mlflow.set_tag("runner", runner_name(run_params.get("runner")))


# --------------------------------------------------------------------------- untyped parameters
class ParameterError(ValueError):
    """A parameter group the nodes receive untyped does not fit its model."""


def _untyped_groups() -> dict[str, type[BaseModel]]:
    # Imported here: settings imports this module, and the training package is not needed
    # by every command.
    from weighted_mtp.training.config import RuntimeParams

    return {"runtime": RuntimeParams}


def describe_validation_error(group: str, exc: ValidationError) -> str:
    """``"<group>.<field>=<value>: <what is allowed>"`` per problem, joined by ``"; "``."""
    problems = []
    for error in exc.errors():
        where = ".".join([group, *(str(part) for part in error["loc"])])
        value = error.get("input")
        shown = f"={value!r}" if error["loc"] and not isinstance(value, Mapping) else ""
        problems.append(f"{where}{shown}: {error['msg']}")
    return "; ".join(problems)


class UntypedParamsHook:
    """Validates, when the run starts, the parameter groups that nodes receive as plain
    mappings (so that notebooks and ``params:runtime.device`` keep indexing them).

    Kedro builds and validates a ``params:`` input itself only when a node's argument is
    annotated with a model (every other group of this project is: ``training/config.py`` and
    ``pipelines/*/params.py``). ``runtime`` is read untyped by several nodes; without this, a
    bad ``runtime.*`` value would surface when the first training node starts, possibly after
    data engineering. ``tryfirst``: before the other checks and before kedro-mlflow opens a run.

    Raises:
        ParameterError: naming ``<group>.<field>``, the value and what is allowed.
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, pipeline: Pipeline, catalog: CatalogProtocol) -> None:
        used = {
            name.removeprefix("params:") for name in pipeline.inputs() if name.startswith("params:")
        }
        for group, model in _untyped_groups().items():
            if not any(name == group or name.startswith(f"{group}.") for name in used):
                continue
            value = catalog.load(f"params:{group}")
            if isinstance(value, model):
                continue
            try:
                model.model_validate(dict(value))
            except ValidationError as exc:
                raise ParameterError(
                    f"Invalid parameters (conf/*/parameters*.yml or --params): "
                    f"{describe_validation_error(group, exc)}"
                ) from None


# --------------------------------------------------------------------------- session environment
@dataclass(frozen=True)
class SessionConfig:
    """Where the latest Kedro session of this process reads its configuration, and the
    ``--params`` it was given (``runtime_params``), which overlay the files."""

    project_path: Path
    conf_source: str
    env: str | None
    runtime_params: Mapping[str, Any] | None = None


_SESSION: SessionConfig | None = None


def record_session(config: SessionConfig | None) -> SessionConfig | None:
    """Set (None: forget) the session configuration; returns the previous one."""
    global _SESSION
    previous, _SESSION = _SESSION, config
    return previous


def session_config() -> SessionConfig | None:
    """The configuration of the latest session created in this process, if any."""
    return _SESSION


class SessionEnvironmentHook:
    """Records the environment (``--env``, or ``KEDRO_ENV``), configuration folder and runtime
    parameters (``--params``) of the session, for code that shapes pipelines from
    configuration (:func:`configured_parameters`).

    Kedro creates pipelines after the context (``session.run`` loads the context, fires
    ``after_context_created``, then reads ``pipelines[...]``, which calls
    ``register_pipelines``), but ``register_pipelines`` is given no context. The evaluation
    pipeline is shaped by ``evaluation.models`` and every method pipeline by
    ``experiment.seeds``; without this, they could only guess the environment from
    ``KEDRO_ENV`` (``kedro run --env a100`` would build base's list) and would never see
    ``kedro run --params experiment.seeds=3``. The runtime parameters are the config loader's
    public ``runtime_params`` (Kedro hands the session's ``--params`` to the loader it builds
    the context with). ``tryfirst``: before plugin hooks that may read parameters, which loads
    the pipelines.
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        loader = getattr(context, "config_loader", None)
        conf_source = getattr(loader, "conf_source", None)
        project = Path(context.project_path)
        if conf_source is None:
            from kedro.framework.project import settings

            conf_source = str(project / settings.CONF_SOURCE)
        runtime = getattr(loader, "runtime_params", None)
        record_session(
            SessionConfig(
                project.resolve(),
                str(conf_source),
                context.env,
                dict(runtime) if isinstance(runtime, Mapping) else None,
            )
        )


def configured_parameters(project_path: Path | None = None) -> dict[str, Any]:
    """The project's parameters as the session that is building the pipelines sees them:
    conf/base overlaid by its environment and its ``--params`` (recorded by
    :class:`SessionEnvironmentHook`, whose ``after_context_created`` runs before
    ``register_pipelines``). Without a session of ``project_path`` (the package imported
    alone, ``create_pipeline()`` in a test), the environment is ``KEDRO_ENV`` and there are
    no runtime parameters; ``{}`` when no configuration is found (the package used outside
    its project).

    Raw values, not validated: callers that shape pipelines check the few keys they read.
    """
    import warnings

    from kedro.framework.project import settings

    session = session_config()
    env = os.environ.get("KEDRO_ENV")
    runtime: Mapping[str, Any] | None = None
    conf: Path | None = None
    if session is not None and (
        project_path is None or Path(project_path).resolve() == session.project_path
    ):
        conf, env, runtime = Path(session.conf_source), session.env, session.runtime_params
    else:
        start = (project_path or Path.cwd()).resolve()
        for root in (start, *start.parents):
            if (root / "pyproject.toml").is_file() and (root / settings.CONF_SOURCE).is_dir():
                conf = root / settings.CONF_SOURCE
                break
    if conf is None or not conf.is_dir():
        return {}
    with warnings.catch_warnings():
        # A second loader re-registers Kedro's resolvers; OmegaConf's deprecation notice about
        # that was already shown by the session's own loader.
        warnings.filterwarnings("ignore", message="register_new_resolver", category=UserWarning)
        loader = settings.CONFIG_LOADER_CLASS(
            conf_source=str(conf),
            env=env,
            runtime_params=dict(runtime or {}),
            **settings.CONFIG_LOADER_ARGS,
        )
        return dict(loader["parameters"])


# --------------------------------------------------------------------------- prerequisites
class MissingPrerequisiteError(RuntimeError):
    """Inputs of the pipeline about to run do not exist; the message says what to run first."""


def _base_name(dataset: str) -> str:
    # Transcoded entries (``x@location``) are the same data as ``x`` for lineage.
    return dataset.split("@", 1)[0]


def _location(catalog: CatalogProtocol, name: str, project_path: str | None) -> str:
    dataset = catalog.get(name)
    where = _dataset_url(dataset) if dataset is not None else None
    if where is None:
        return str(dataset)
    if project_path and os.path.isabs(where):
        # Project-relative, as the user wrote it in catalog.yml.
        relative = os.path.relpath(where, project_path)
        if not relative.startswith(".."):
            return relative
    return where


def _can_tell_existence(catalog: CatalogProtocol, name: str) -> bool:
    from kedro.io import AbstractDataset, MemoryDataset

    dataset = catalog.get(name)
    if dataset is None or isinstance(dataset, MemoryDataset):
        return False
    # Datasets without ``_exists`` report False with a warning (e.g. one that reads a file
    # shipped inside a package): never a reason to stop a run.
    return type(dataset)._exists is not AbstractDataset._exists


def registered_pipelines(requested: list[str] | None) -> dict[str, Pipeline]:
    """Every registered pipeline, although the session loaded only ``requested`` ones.

    Kedro 1.7 imports only the pipelines named on the command line; the producers of a
    missing input are usually others, so the registry is read again unfiltered, and the
    session's filter is put back afterwards.
    """
    from kedro.framework.project import pipelines

    pipelines.set_requested(None)
    try:
        return dict(pipelines.items())
    finally:
        pipelines.set_requested(requested)


def missing_prerequisites(
    pipeline: Pipeline,
    catalog: CatalogProtocol,
    registered: Mapping[str, Pipeline] | Callable[[], Mapping[str, Pipeline]],
    *,
    project_path: str | None = None,
) -> list[str]:
    """One line per free input of ``pipeline`` that another pipeline produces but that does
    not exist yet: ``"<name> does not exist yet (<location>): run `kedro run --pipeline P`
    first"``.

    Inputs that no registered pipeline produces (raw files), parameters, memory datasets and
    datasets that cannot tell whether they exist are left to Kedro's own load errors.
    ``registered`` may be a callable, called only when something is missing.
    """
    missing = [
        name
        for name in sorted(pipeline.inputs())
        if not name.startswith("params:")
        and name != "parameters"
        and name in catalog
        and _can_tell_existence(catalog, name)
        and not catalog.exists(name)
    ]
    if not missing:
        return []
    pipelines = registered() if callable(registered) else registered
    producers: dict[str, list[str]] = {}
    for pipeline_name, candidate in pipelines.items():
        if pipeline_name == "__default__":
            continue
        for output in candidate.all_outputs():
            producers.setdefault(_base_name(output), []).append(pipeline_name)
    lines = []
    for name in missing:
        where = _location(catalog, name, project_path)
        if _is_protected(catalog.get(name)):
            # Source data here (conf/a100's raw files, released models): no pipeline of this
            # environment may produce it, whatever the registry says.
            lines.append(
                f"{name} does not exist ({where}): it is source data in this environment, "
                "upload it there (docs/vessl.md)"
            )
            continue
        producing = sorted(set(producers.get(_base_name(name), [])))
        if not producing:
            continue
        commands = " or ".join(f"`kedro run --pipeline {p}`" for p in producing)
        lines.append(f"{name} does not exist yet ({where}): run {commands} first")
    return lines


# --------------------------------------------------------------------------- protected outputs
class ProtectedOutputError(RuntimeError):
    """The pipeline about to run would write a catalog entry marked ``protected: true``."""


def _is_protected(dataset: Any) -> bool:
    metadata = getattr(dataset, "metadata", None)
    return isinstance(metadata, Mapping) and metadata.get("protected") is True


def protected_outputs(pipeline: Pipeline, catalog: CatalogProtocol) -> list[str]:
    """Outputs of ``pipeline`` whose catalog entry carries ``metadata: {protected: true}``
    (source data such as conf/a100's raw CodeContests shards, which a pipeline of this project
    can also generate)."""
    return sorted(
        name
        for name in pipeline.all_outputs()
        if name in catalog and _is_protected(catalog.get(name))
    )


def _nodes_after(pipeline: Pipeline, inputs: list[str]) -> Pipeline:
    """What ``--from-inputs`` keeps of ``pipeline`` (nothing when Kedro refuses the names)."""
    try:
        return pipeline.from_inputs(*inputs)
    except ValueError:
        return Pipeline([])


# --------------------------------------------------------------------------- S3 credentials
class MissingS3CredentialsError(RuntimeError):
    """The pipeline about to run reads or writes ``s3://`` and no credentials are resolvable."""


_S3_PROTOCOLS = ("s3", "s3a", "s3n")


@dataclass(frozen=True)
class S3Location:
    """An ``s3://`` URL a pipeline uses: a catalog entry (``options`` its fsspec options, with
    credentials) or a parameter (no options: the environment and boto's chain)."""

    name: str
    url: str
    options: Mapping[str, Any]


def _dataset_url(dataset: Any) -> str | None:
    try:
        described = dataset._describe()
    except Exception:  # a dataset that cannot describe itself is none of ours
        return None
    where = described.get("filepath") or described.get("path")
    if where is None:
        return None
    where = str(where)
    protocol = described.get("protocol")
    if "://" not in where and protocol and protocol != "file":
        where = f"{protocol}://{where}"
    return where


def _dataset_options(dataset: Any) -> Mapping[str, Any]:
    # Our datasets and kedro-datasets keep the merged credentials + fs_args there; no public
    # accessor exists, and the catalog's raw credentials are not handed to this hook.
    for attribute in ("_storage_options", "_options"):
        value = getattr(dataset, attribute, None)
        if isinstance(value, Mapping):
            return value
    return {}


def _is_s3(url: str) -> bool:
    return url.split("://", 1)[0].lower() in _S3_PROTOCOLS if "://" in url else False


def _param_urls(value: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        if _is_s3(value):
            yield prefix, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _param_urls(getattr(value, f.name), f"{prefix}.{f.name}")
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _param_urls(getattr(value, name), f"{prefix}.{name}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _param_urls(item, f"{prefix}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _param_urls(item, f"{prefix}[{index}]")


def s3_locations(pipeline: Pipeline, catalog: CatalogProtocol) -> list[S3Location]:
    """Every ``s3://`` location ``pipeline`` reads or writes: catalog entries (inputs and
    outputs) and URLs in its ``params:`` inputs (e.g. the pretrained tokenizer's path)."""
    found: list[S3Location] = []
    for name in sorted(pipeline.datasets()):
        if name == "parameters" or name not in catalog:
            continue
        if name.startswith("params:"):
            try:
                value = catalog.load(name)
            except Exception:  # Kedro reports bad parameters itself
                continue
            found.extend(
                S3Location(key, url, {}) for key, url in _param_urls(value, name[len("params:") :])
            )
            continue
        dataset = catalog.get(name)
        url = _dataset_url(dataset) if dataset is not None else None
        if url is not None and _is_s3(url):
            found.append(S3Location(name, url, _dataset_options(dataset)))
    return found


def _static_credentials(options: Mapping[str, Any]) -> bool:
    """Options that authenticate without boto's chain: keys, a named profile or anonymous."""
    return (
        bool(options.get("key") and options.get("secret"))
        or bool(options.get("profile"))
        or options.get("anon") is True
    )


def boto_credentials_problem() -> str | None:
    """None when boto's default chain finds credentials (environment, AWS_PROFILE, shared
    files, SSO, web identity, container or instance role), else why not.

    The instance-metadata lookup, the one step that may wait on the network, is bounded to one
    attempt of one second, and skipped when ``AWS_EC2_METADATA_DISABLED=true``.
    """
    import botocore.session
    from botocore.exceptions import BotoCoreError

    session = botocore.session.get_session()
    session.set_config_variable("metadata_service_timeout", 1)
    session.set_config_variable("metadata_service_num_attempts", 1)
    try:
        credentials = session.get_credentials()
    except BotoCoreError as exc:
        return f"boto's credential chain fails: {exc}"
    if credentials is not None:
        return None
    metadata = (
        "instance metadata disabled by AWS_EC2_METADATA_DISABLED"
        if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true"
        else "no instance role"
    )
    return (
        "boto's credential chain finds none (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY unset, no "
        f"AWS_PROFILE or ~/.aws/credentials, {metadata})"
    )


def missing_s3_credentials(locations: list[S3Location], *, env: str | None) -> str | None:
    """The message for :class:`MissingS3CredentialsError`, or None when every location has
    credentials (its catalog entry's, or boto's chain).

    Args:
        locations: from :func:`s3_locations`.
        env: the Kedro environment, named in the advice (``conf/<env>/credentials.yml``).
    """
    bare = [loc for loc in locations if not _static_credentials(loc.options)]
    if not bare:
        return None
    problem = boto_credentials_problem()
    if problem is None:
        return None
    shown = ", ".join(loc.name for loc in bare)
    buckets = sorted({loc.url.split("://", 1)[1].split("/", 1)[0] for loc in bare})
    endpoint = next(
        (
            str(loc.options["client_kwargs"]["endpoint_url"])
            for loc in bare
            if isinstance(loc.options.get("client_kwargs"), Mapping)
            and loc.options["client_kwargs"].get("endpoint_url")
        ),
        os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS",
    )
    conf = f"conf/{env}/credentials.yml" if env else "conf/local/credentials.yml"
    env_flag = f" --env {env}" if env else ""
    return (
        f"it uses S3 (bucket {', '.join(buckets)}: {shown}) and no S3 credentials are "
        f"resolvable: the catalog's s3_credentials are empty and {problem}. "
        "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary "
        f"keys) or AWS_PROFILE, or put s3_credentials (key, secret) in {conf} (git-ignored"
        f"{'; conf/local is not read when --env is given' if env else ''}); for an "
        f"S3-compatible store set AWS_ENDPOINT_URL_S3 (endpoint now: {endpoint}); choose the "
        f"bucket with `kedro run{env_flag} --params s3_bucket=<bucket>`."
    )


class PrerequisitesHook:
    """Stops a run before any node starts, with a message saying what to do, instead of failing
    deep into the run (or in a torchrun worker):

    - an output is a ``protected: true`` catalog entry (:class:`ProtectedOutputError`);
    - the pipeline uses ``s3://`` and no credentials are resolvable
      (:class:`MissingS3CredentialsError`), checked before anything contacts S3, so that a
      machine without credentials stops at once instead of retrying AWS;
    - an input that another pipeline produces does not exist yet (``kedro run --pipeline
      verifiable`` before ``--pipeline critic``): :class:`MissingPrerequisiteError` names the
      pipeline to run first.

    Args:
        registered: the pipelines that may produce inputs; default: the project's registry
            (:func:`registered_pipelines`).
    """

    def __init__(self, registered: Mapping[str, Pipeline] | None = None) -> None:
        self._registered = registered

    # tryfirst: before kedro-mlflow opens a run that would then stay empty.
    @hook_impl(tryfirst=True)
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol
    ) -> None:
        names = run_params.get("pipeline_names")
        shown = ", ".join(names or ["__default__"])
        env = run_params.get("env")
        # Checks that need no network first: the existence checks below would wait on S3.
        protected = protected_outputs(pipeline, catalog)
        if protected:
            entries = ", ".join(
                f"{name} ({_location(catalog, name, run_params.get('project_path'))})"
                for name in protected
            )
            env_flag = f" --env {env}" if env else ""
            free = sorted(
                {*protected, *(n for n in pipeline.inputs() if not n.startswith("params:"))}
                - {"parameters"}
            )
            after = _nodes_after(pipeline, free) if names else Pipeline([])
            if after.nodes and not protected_outputs(after, catalog):
                advice = (
                    f"run the nodes after it: `kedro run{env_flag} --pipeline {shown} "
                    f"--from-inputs {','.join(free)}`"
                )
            elif names:
                advice = "that is what this pipeline does, so it is not run in this environment"
            else:
                # The default pipeline chains generators and consumers: only by name.
                advice = f"run the pipelines by name: `kedro run{env_flag} --pipeline <name>`"
            raise ProtectedOutputError(
                f"Cannot run pipeline {shown}: it would overwrite {entries}, marked "
                f"`protected: true` in the catalog of this environment; {advice}"
            )
        problem = missing_s3_credentials(s3_locations(pipeline, catalog), env=env)
        if problem is not None:
            raise MissingS3CredentialsError(f"Cannot run pipeline {shown}: {problem}")
        registered = (
            self._registered
            if self._registered is not None
            else functools.partial(registered_pipelines, names)
        )
        lines = missing_prerequisites(
            pipeline, catalog, registered, project_path=run_params.get("project_path")
        )
        if not lines:
            return
        raise MissingPrerequisiteError(
            f"Cannot run pipeline {shown}: "
            + ("; ".join(lines) if len(lines) == 1 else "\n  - " + "\n  - ".join(lines))
        )


class ModelDirectoryMlflowHook:
    """Tags the MLflow run with the location of each model directory the run writes
    (``model_dir.<catalog entry>``: an absolute local path or an ``s3://`` URL), so that a run
    leads to its models as each model's ``metadata.json`` (``mlflow_run_id``) leads to its run."""

    def __init__(self) -> None:
        self._catalog: CatalogProtocol | None = None

    @hook_impl
    def after_catalog_created(self, catalog: CatalogProtocol) -> None:
        self._catalog = catalog

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Node) -> None:
        from weighted_mtp.datasets.model_directory import _DirectoryDataset

        if mlflow.active_run() is None or self._catalog is None:
            return
        dataset = self._catalog.get(dataset_name)
        if isinstance(dataset, _DirectoryDataset):
            location = str(dataset._describe()["path"])
            if "://" not in location:
                location = str(Path(location).resolve())
            mlflow.set_tag(f"model_dir.{dataset_name}", location)
