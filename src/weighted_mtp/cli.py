"""Project commands: Kedro's ``kedro run`` with the errors a user makes reported in one line.

Kedro loads ``<package>.cli`` and lets its ``cli`` group override its own commands. ``run``
here is Kedro's command (same options, same behaviour) with two differences:

- an unknown pipeline name (``kedro run --pipelines foo``) is refused before anything starts
  with one line that lists the valid names, instead of Kedro's traceback ending in
  ``ImportError: An error occurred while importing the 'weighted_mtp.pipelines.foo' module``
  (a pipeline that exists but fails to import still shows its real error);
- parameters that fail validation are reported as ``Error: Invalid parameters: ...`` naming
  each parameter, its value and what is allowed, without a traceback, and so are the checks
  of :mod:`weighted_mtp.hooks` that stop a run before any node (a missing prerequisite, S3
  without credentials, a protected output).

``estimate`` is the project's own command: the peak GPU memory of each training method as
configured (``kedro estimate --env a100 --pipelines verifiable``), from the configuration
``kedro run`` would read, without credentials, downloads or a GPU
(:mod:`weighted_mtp.training.estimate`).

``cli_hooks`` is registered under the ``kedro.cli_hooks`` entry point (``pyproject.toml``):
Kedro imports it before it loads the plugins' commands, so the package's warning filters
(:func:`weighted_mtp.quiet_known_warnings`) are in place before kedro-mlflow is imported, which
is what printed mlflow's warning on every command, ``kedro --help`` included.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from kedro.framework.cli.hooks import cli_hook_impl
from kedro.framework.cli.project import run as kedro_run
from kedro.framework.cli.utils import _split_params, env_option, split_string

import weighted_mtp

PIPELINES_PACKAGE = "weighted_mtp.pipelines"


def available_pipelines() -> list[str]:
    """The pipeline names Kedro's ``find_pipelines`` looks for: the folders of
    ``weighted_mtp/pipelines`` (read without importing them, which takes seconds)."""
    root = importlib.resources.files(PIPELINES_PACKAGE)
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and entry.name != "__pycache__" and not entry.name.startswith(".")
    )


def unknown_pipelines_message(requested: Iterable[str], available: Iterable[str]) -> str | None:
    """One line naming the unknown pipelines among ``requested`` and the valid ones, or None."""
    valid = list(available)
    unknown = [name for name in requested if name not in (*valid, "__default__")]
    if not unknown:
        return None
    names = ", ".join(repr(name) for name in unknown)
    noun = "pipeline" if len(unknown) == 1 else "pipelines"
    return (
        f"Unknown {noun} {names}: valid names are {', '.join(valid)} "
        "(without --pipelines: the whole experiment)"
    )


# One pydantic error as Kedro's ParameterValidationError renders it (no location line for an
# error of the whole model):
#   "<loc>\n  <msg> [type=<t>, input_value=<v>, input_type=<t>]\n    For further ... <url>"
_PYDANTIC_ERROR = re.compile(
    r"^(?:(?!\d+ validation errors? for )(?P<loc>\S[^\n]*)\n)?  (?P<msg>[^\n]*?) \[type=[^,\]]+"
    r"(?:, input_value=(?P<value>[^\n]*?), input_type=\w+)?\]",
    re.MULTILINE,
)
_KEDRO_HEADER = re.compile(
    r"^Failed to instantiate \w+ for parameter '[^']+': \d+ validation errors? for \w+\n"
)
_KEDRO_PARAMETER = re.compile(
    r"^- Parameter '(?P<key>[^']+)': (?P<body>.*?)(?=^- Parameter '|\Z)", re.MULTILINE | re.DOTALL
)


def describe_parameter_errors(message: str) -> str:
    """Kedro's ``ParameterValidationError`` text -> ``"<param>.<field>=<value>: <what is
    allowed>; ..."`` (a parameter's text is kept whole where it is not pydantic's)."""
    problems = []
    for parameter in _KEDRO_PARAMETER.finditer(message):
        key, body = parameter.group("key"), parameter.group("body").strip()
        body = _KEDRO_HEADER.sub("", body)
        errors = list(_PYDANTIC_ERROR.finditer(body))
        if not errors:
            problems.append(f"{key}: {body}")
            continue
        for error in errors:
            loc, value = error.group("loc"), error.group("value")
            where = f"{key}.{loc.strip()}" if loc else key
            # A whole mapping as the value says nothing the message does not.
            shown = f"={value}" if loc and value is not None and not value.startswith("{") else ""
            problems.append(f"{where}{shown}: {error.group('msg').removeprefix('Value error, ')}")
    return "; ".join(problems) if problems else message


def _requested(pipeline: str | None, pipelines: Iterable[str] | None) -> list[str]:
    return [pipeline] if pipeline else [p for p in (pipelines or []) if p]


@functools.wraps(kedro_run.callback)
def _run(**kwargs: Any) -> Any:
    from kedro.validation.exceptions import ParameterValidationError

    from weighted_mtp.hooks import (
        MissingPrerequisiteError,
        MissingS3CredentialsError,
        ParameterError,
        ProtectedOutputError,
    )

    message = unknown_pipelines_message(
        _requested(kwargs.get("pipeline"), kwargs.get("pipelines")), available_pipelines()
    )
    if message:
        raise click.ClickException(message)
    try:
        return kedro_run.callback(**kwargs)
    except ParameterValidationError as exc:
        raise click.ClickException(
            "Invalid parameters (conf/*/parameters*.yml or --params): "
            + describe_parameter_errors(str(exc))
        ) from None
    except ParameterError as exc:  # runtime.*, checked by UntypedParamsHook
        raise click.ClickException(str(exc)) from None
    except (MissingPrerequisiteError, MissingS3CredentialsError, ProtectedOutputError) as exc:
        # The project's own checks before any node runs: the message says what to do, and the
        # traceback through Kedro's hook machinery would only bury it.
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


@click.group(name="weighted-mtp")
def cli() -> None:
    """Commands of the weighted-mtp project."""


run = copy.copy(kedro_run)
run.callback = _run
run.help = (kedro_run.help or "Run the pipeline.") + (
    "\n\nUnknown pipeline names and invalid parameters are reported in one line."
)
run.short_help = "Run the pipeline (names and parameters checked first)."
cli.add_command(run, "run")


# --------------------------------------------------------------------------- kedro estimate
def _project_config(project_path: Path, env: str | None, params: dict[str, Any]) -> Any:
    """Kedro's config loader as ``kedro run --env <env> --params ...`` builds it (settings'
    loader class and arguments, runtime parameters merged over the parameter files), without
    a session: no hooks run, no catalog is built, no credentials are read."""
    from kedro.framework.project import settings

    return settings.CONFIG_LOADER_CLASS(
        conf_source=str(project_path / settings.CONF_SOURCE),
        env=env,
        runtime_params=params,
        **settings.CONFIG_LOADER_ARGS,
    )


def _validated(group: str, model: Any, raw: Any) -> Any:
    from pydantic import ValidationError

    from weighted_mtp.hooks import describe_validation_error

    try:
        return model.model_validate(dict(raw or {}))
    except ValidationError as exc:
        raise click.ClickException(
            "Invalid parameters (conf/*/parameters*.yml or --params): "
            + describe_validation_error(group, exc)
        ) from None


def _entry_location(
    loader: Any, project_path: Path, name: str
) -> tuple[str, dict[str, Any]] | None:
    """The directory of catalog entry ``name`` (relative local paths resolved against the
    project, as Kedro does) and its storage options (credentials resolved only for a remote
    directory); None when the entry has no ``path``."""
    entry = loader["catalog"].get(name) or {}
    path = entry.get("path")
    if not path:
        return None
    if "://" not in str(path) and not Path(path).is_absolute():
        path = str(project_path / path)
    options: dict[str, Any] = {}
    if _is_remote(str(path)):
        credentials = entry.get("credentials")
        if isinstance(credentials, str):
            credentials = loader["credentials"].get(credentials)
        options = {**(credentials or {}), **(entry.get("fs_args") or {})}
    return str(path), options


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _read_json(path: str, options: dict[str, Any], name: str) -> dict[str, Any] | None:
    """``path`` as JSON, or None when it does not exist."""
    import json

    import fsspec

    fs, root = fsspec.core.url_to_fs(path, **options)
    if not fs.exists(root):
        return None
    try:
        return json.loads(fs.cat_file(root))
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{path} ({name}): not valid JSON ({exc})") from None


def _shapes(
    loader: Any, project_path: Path, estimate_params: Any, need_reference: bool, check: bool
) -> tuple[Any, dict[str, Any] | None, list[str]]:
    """The policy's ``ModelArgs`` and the reference's ``config.json`` fields: from
    ``estimate.*``, checked against the model directories where they can be read (local
    ones always, remote ones with ``--check-model``); from the directories when
    ``estimate.*`` does not give them. Also the notes to print (what was not checked)."""
    from weighted_mtp.models.args import ModelArgs, ModelArgsError
    from weighted_mtp.training.estimate import (
        EstimateError,
        check_model_args,
        check_reference_config,
        model_args,
    )

    notes: list[str] = []

    def read(entry: str, file: str) -> tuple[dict[str, Any] | None, str]:
        location = _entry_location(loader, project_path, entry)
        if location is None:
            return None, f"catalog entry {entry!r} has no path"
        path, options = location
        url = f"{path.rstrip('/')}/{file}"
        if _is_remote(path) and not check:
            return None, f"{url} not read (remote; --check-model reads it)"
        try:
            raw = _read_json(url, options, entry)
        except click.ClickException:
            raise
        except Exception as exc:  # an unreachable store, refused credentials: say so, go on
            return None, f"{url} not readable ({type(exc).__name__}: {exc})"
        return raw, (f"{url} does not exist" if raw is None else url)

    try:
        raw_args, where = read("base_model", "params.json")
        if estimate_params.model is not None:
            args = model_args(estimate_params.model, source="estimate.model")
            if raw_args is not None:
                check_model_args(args, ModelArgs.from_dict(raw_args, source=where), source=where)
                notes.append(f"model shape: estimate.model, the same as {where}")
            else:
                notes.append(f"model shape: estimate.model ({where})")
        elif raw_args is not None:
            args = ModelArgs.from_dict(raw_args, source=where)
            notes.append(f"model shape: {where}")
        else:
            raise click.ClickException(
                f"no model shape: estimate.model is not set and {where}; add estimate.model "
                "(the fields of params.json) to conf/<env>/parameters_estimate.yml"
            )
        reference = None
        if need_reference:
            raw_ref, where = read("reference_model", "config.json")
            if estimate_params.reference is not None:
                reference = dict(estimate_params.reference)
                if raw_ref is not None:
                    check_reference_config(reference, raw_ref, source=where)
                    notes.append(f"reference shape: estimate.reference, the same as {where}")
                else:
                    notes.append(f"reference shape: estimate.reference ({where})")
            elif raw_ref is not None:
                reference = raw_ref
                notes.append(f"reference shape: {where}")
            else:
                raise click.ClickException(
                    f"no reference shape for rho1: estimate.reference is not set and {where}; "
                    "add estimate.reference (config.json's fields, model_type included)"
                )
    except (EstimateError, ModelArgsError) as exc:
        raise click.ClickException(str(exc)) from None
    return args, reference, notes


@cli.command("estimate")
@env_option
@click.option(
    "--pipelines",
    type=str,
    default="",
    callback=split_string,
    help="Training pipelines to estimate, comma-separated (baseline, critic, verifiable, "
    "rho1, verifiable_uniform); default: all but verifiable_uniform, verifiable's job with "
    "uniform weights.",
)
@click.option(
    "--params",
    type=click.UNPROCESSED,
    default="",
    callback=_split_params,
    help="Parameter overrides as for kedro run, e.g. "
    '"verifiable.batch_size=8,runtime.activation_checkpointing=none".',
)
@click.option(
    "--check-model",
    is_flag=True,
    help="Also read params.json / config.json of remote (S3) model directories, with the "
    "catalog's credentials, to check the configured shapes (local ones are always checked).",
)
@click.pass_obj
def estimate(
    metadata: Any, env: str | None, pipelines: list[str], params: dict[str, Any], check_model: bool
) -> None:
    """Peak GPU memory per rank of each training method as configured, on fake tensors.

    Builds the real training module at the configured shape (estimate.model, or base_model's
    params.json) with no memory, over a fake process group of runtime.nproc_per_node x
    runtime.nnodes ranks, runs one training step under PyTorch's FSDP memory tracker and prints
    the split (parameters, gradients, optimizer, activations, loss); the last line of each
    method reads "peak per GPU: X GiB of <estimate.gpu_memory_gib> GiB (<method>, N ranks)".
    Exit status 1 when a method leaves less than estimate.headroom of the GPU free."""
    from weighted_mtp.training.config import (
        METHODS,
        PARAMS_BY_METHOD,
        TRAINING_PIPELINES,
        RuntimeParams,
        params_group,
    )
    from weighted_mtp.training.estimate import GIB, EstimateError, EstimateParams, estimate_memory

    requested = [p for p in pipelines if p] or list(METHODS)
    unknown = [p for p in requested if p not in TRAINING_PIPELINES]
    if unknown:
        raise click.ClickException(
            f"cannot estimate {', '.join(repr(p) for p in unknown)}: the training pipelines "
            f"are {', '.join(TRAINING_PIPELINES)}"
        )
    project_path = Path(metadata.project_path) if metadata else Path.cwd()
    loader = _project_config(project_path, env, params)
    parameters = loader["parameters"]
    runtime = _validated("runtime", RuntimeParams, parameters.get("runtime"))
    estimate_params = _validated("estimate", EstimateParams, parameters.get("estimate"))
    args, reference, notes = _shapes(
        loader, project_path, estimate_params, "rho1" in requested, check_model
    )
    for note in notes:
        click.echo(note)
    over = []
    for method in dict.fromkeys(requested):
        group = params_group(method)
        method_params = _validated(group, PARAMS_BY_METHOD[method], parameters.get(group))
        try:
            result = estimate_memory(method, method_params, runtime, args, reference=reference)
        except EstimateError as exc:
            raise click.ClickException(str(exc)) from None
        lines = result.report(estimate_params.gpu_memory_gib)
        if method == "rho1" and method_params.reference_tuning.enabled:
            lines.insert(
                1,
                "  (rho1.reference_tuning is enabled: the reference's own fine-tuning job is "
                "not part of this estimate)",
            )
        click.echo("\n".join(lines))
        if result.peak / GIB > estimate_params.limit_gib:
            over.append(method)
            click.echo(
                f"{method} needs more than {estimate_params.limit_gib:g} GiB ("
                f"{estimate_params.gpu_memory_gib:g} GiB less {estimate_params.headroom:.0%} headroom): "
                f"lower {group}.batch_size (raising grad_accum_steps to keep the global "
                "batch) or set runtime.activation_checkpointing=blocks",
                err=True,
            )
    if over:
        raise SystemExit(1)


class _CLIHooks:
    """Registered under ``kedro.cli_hooks``: importing this module installed the warning
    filters; before each command, the logging handlers are adapted again (idempotent), in
    case a plugin re-configured logging while the commands were loaded."""

    @cli_hook_impl
    def before_command_run(self, project_metadata: Any, command_args: list[str]) -> None:
        weighted_mtp.quiet_known_warnings()
        weighted_mtp.plain_logs_off_terminal()


cli_hooks = _CLIHooks()
