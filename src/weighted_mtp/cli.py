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
from typing import Any

import click
from kedro.framework.cli.hooks import cli_hook_impl
from kedro.framework.cli.project import run as kedro_run

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


class _CLIHooks:
    """Registered under ``kedro.cli_hooks``: importing this module installed the warning
    filters; before each command, the logging handlers are adapted again (idempotent), in
    case a plugin re-configured logging while the commands were loaded."""

    @cli_hook_impl
    def before_command_run(self, project_metadata: Any, command_args: list[str]) -> None:
        weighted_mtp.quiet_known_warnings()
        weighted_mtp.plain_logs_off_terminal()


cli_hooks = _CLIHooks()
