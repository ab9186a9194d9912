"""Where a training job runs and what it may see, set up by the training node before the
workers start: ``runtime.*`` validated, the run directory named, the storage options the job
spec may carry (no secrets) and the environment that carries the credentials instead, the
checkpoint locations, and the nested MLflow run the workers log into."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from weighted_mtp.datasets.checkpoint_location import CheckpointLocation
from weighted_mtp.training.config import RuntimeParams

# Substrings of fsspec option names that hold secrets. The spec is a file in the run directory
# and the workers take credentials from their environment, as fsspec and boto do.
_SECRET_OPTION_WORDS = ("key", "secret", "token", "password", "credential", "session")


class RuntimeParamsError(ValueError):
    """``runtime.*`` does not fit :class:`~weighted_mtp.training.config.RuntimeParams`."""


def runtime_params(runtime: Mapping[str, Any] | RuntimeParams) -> RuntimeParams:
    """``params:runtime`` as :class:`RuntimeParams`.

    ``runtime`` stays a plain mapping for Kedro (the evaluation pipeline reads
    ``params:runtime.device`` and notebooks index ``params["runtime"]``), so it is validated
    here, at the start of the node, before any worker starts.

    Raises:
        RuntimeParamsError: naming the ``runtime.<field>`` at fault.
    """
    if isinstance(runtime, RuntimeParams):
        return runtime
    try:
        return RuntimeParams.model_validate(dict(runtime))
    except ValidationError as exc:
        problems = "; ".join(
            f"runtime.{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise RuntimeParamsError(
            f"invalid runtime parameters (conf/*/parameters.yml or --params runtime.*): {problems}"
        ) from None


#: Environment variable naming the run directory instead of the timestamp (multi-node jobs).
RUN_NAME_ENV = "WMTP_RUN_NAME"
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RunNameError(ValueError):
    """``WMTP_RUN_NAME`` is not a usable directory name."""


def new_run_dir(
    root: str | os.PathLike,
    method: str,
    *,
    now: datetime | None = None,
    name: str | None = None,
) -> Path:
    """Create and return ``<root>/<method>/<UTC timestamp>`` (``20250101T120000Z``; a ``-N``
    suffix keeps runs started in the same second apart), or ``<root>/<method>/<name>``.

    The launcher derives the torchrun rendezvous id from the directory's name, so the nodes of a
    multi-node job must agree on it: timestamps taken on two machines rarely do, hence ``name``
    (from ``WMTP_RUN_NAME``), which every node sets alike. A named directory may exist already:
    the nodes may share ``root``, and a rerun of a preempted job reuses it.

    Raises:
        RunNameError: ``name`` is not a plain directory name.
    """
    if name is not None and not _RUN_NAME.match(name):
        raise RunNameError(
            f"{RUN_NAME_ENV}={name!r}: expected a directory name (letters, digits, '.', "
            "'_', '-'), the same on every node, e.g. verifiable-20250101"
        )
    parent = Path(root) / method
    parent.mkdir(parents=True, exist_ok=True)
    if name is not None:
        run_dir = parent / name
        run_dir.mkdir(exist_ok=True)
        return run_dir
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    attempt = 0
    while True:
        run_dir = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            attempt += 1


def public_storage_options(*options: Mapping[str, Any]) -> dict[str, Any]:
    """The non-secret part of fsspec options (endpoint, region...), merged left to right.

    Keys naming a secret (``key``, ``secret``, ``token``, ``aws_secret_access_key``...) and
    unset (None) values are dropped, recursively.
    """
    merged: dict[str, Any] = {}
    for source in options:
        for name, value in source.items():
            if value is None or any(word in name.lower() for word in _SECRET_OPTION_WORDS):
                continue
            if isinstance(value, Mapping):
                value = public_storage_options(merged.get(name, {}), value)
                if not value:
                    continue
            merged[name] = value
    return merged


def checkpoint_paths(
    checkpoints: CheckpointLocation | None, training_runs: str, method: str
) -> tuple[str | None, str | None]:
    """``(local checkpoint directory, remote mirror URL)`` for a job: a local catalog location
    is used as is; a remote one gets a stable local staging directory beside the runs (so a
    restarted node finds what it wrote before the crash). Both are the method's location: each
    run identity has its subdirectory in them (``<location>/<identity[:16]>/step_*``)."""
    if checkpoints is None:
        return None, None
    if checkpoints.is_local:
        return checkpoints.url, None
    return str(Path(training_runs) / method / "checkpoint_staging"), checkpoints.url


# fsspec/s3fs option -> the variable boto reads: how catalog credentials reach the workers
# without being written into the job spec.
_CREDENTIAL_ENV = {
    "key": "AWS_ACCESS_KEY_ID",
    "secret": "AWS_SECRET_ACCESS_KEY",
    "token": "AWS_SESSION_TOKEN",
}


def credential_env(*options: Mapping[str, Any]) -> dict[str, str]:
    """Environment variables carrying the S3 credentials of catalog entries (first wins)."""
    env: dict[str, str] = {}
    for source in options:
        for name, variable in _CREDENTIAL_ENV.items():
            value = source.get(name)
            if isinstance(value, str) and value and variable not in env:
                env[variable] = value
    return env


def absolute_tracking_uri(uri: str) -> str:
    """``uri`` with a relative local store (``sqlite:///mlflow.db``, ``mlruns``) made absolute:
    the workers may start in another directory, where it would be a new, empty store."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri.removeprefix("sqlite:///"))
    if "://" not in uri and not uri.startswith("file:"):
        return Path(uri).resolve().as_uri()
    return uri


@contextlib.contextmanager
def job_mlflow_run(method: str) -> Iterator[tuple[str | None, str | None]]:
    """``(run_id, tracking_uri)`` of a run nested in the one kedro-mlflow opened, named after
    the job, for the workers to log into: the jobs of one ``kedro run`` (the default run has
    six) keep their step histories apart. ``(None, None)`` without an active run."""
    import mlflow

    if mlflow.active_run() is None:
        yield None, None
        return
    with mlflow.start_run(run_name=method, nested=True) as run:
        yield run.info.run_id, absolute_tracking_uri(mlflow.get_tracking_uri())
