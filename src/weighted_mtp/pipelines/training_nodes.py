"""The node body every training pipeline shares: one job, from catalog inputs to a model.

A training node does not train. It draws the data plan from the metadata tables, writes it into
a fresh run directory ``<training_runs>/<method>/<UTC timestamp>/``, describes the job in a
:class:`~weighted_mtp.training.spec.JobSpec` (locations, parameters, the MLflow run to log to)
and hands it to :func:`weighted_mtp.training.launcher.launch`, which runs the torchrun workers
and waits. The workers write the step history and the final model into the run directory; the
node returns them, and the catalog publishes the model (locally or to S3).

``baseline``, ``critic``, ``verifiable`` and ``rho1`` differ only in the method name, the model
they start from and their parameter model; their ``nodes.py`` hold typed one-line wrappers
(Kedro validates a ``params:`` input against the annotation of the argument it feeds). The
control ``verifiable_uniform`` is one more: verifiable's parameters and model, its own name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.datasets.checkpoint_location import CheckpointLocation
from weighted_mtp.datasets.jsonl import JsonlLocation
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.model_dir import TOKENIZER_FILE, read_metadata
from weighted_mtp.model_io.reference import HFModelDirectory
from weighted_mtp.model_io.tokenizer_check import (
    check_model_tokenizer,
    check_same_tokenizer,
    shipped_tokenizer,
)
from weighted_mtp.training.config import ReferenceTuningParams, RuntimeParams, TrainingParams
from weighted_mtp.training.data_plan import build_data_plan
from weighted_mtp.training.run_identity import RunIdentity, run_identity
from weighted_mtp.training.spec import JobSpec

logger = logging.getLogger(__name__)

#: Method name of the Rho-1 reference's own fine-tuning job (a ``JobSpec.method``).
REFERENCE_METHOD = "reference"

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


def tokenizer_source(tokenizer: Tokenizer) -> str:
    """How messages name the data's tokenizer: its file and its catalog entry."""
    return f"{tokenizer.source} (catalog entry `tokenizer`, which counted the data's tokens)"


_DATA_TOKENIZER_HINT = (
    "the metadata tables count tokens with the data's tokenizer and the workers encode with the "
    "model's, so both must be the same file: set data_engineering.tokenizer.pretrained_path to "
    "the model directory's tokenizer.model (conf/a100 does) and run `kedro run --pipeline "
    "data_engineering` again"
)
_REFERENCE_HINT = (
    "Rho-1 subtracts the reference's token loss from the policy's id by id, so the reference "
    "must use the policy's tokenizer: point reference_model at a model trained with it"
)


def check_job_tokenizers(
    tokenizer: Tokenizer,
    init_model: ModelDirectory | HFModelDirectory,
    reference_model: HFModelDirectory | None = None,
) -> None:
    """Refuse a job whose model directory ships another tokenizer than the data's, or whose
    Rho-1 reference ships another one than the policy's. A reference without
    ``tokenizer.model`` is left to the workers' vocabulary-size check.

    Raises:
        TokenizerMismatchError: naming both files and their sizes.
        FileNotFoundError: ``init_model`` ships no ``tokenizer.model`` (the workers need it).
    """
    check_model_tokenizer(
        init_model,
        tokenizer,
        tokenizer_source(tokenizer),
        require_shipped=True,
        # Tuning the reference (an HF directory) needs another reference, not other data.
        hint=_REFERENCE_HINT if isinstance(init_model, HFModelDirectory) else _DATA_TOKENIZER_HINT,
    )
    if reference_model is None:
        return
    reference = shipped_tokenizer(reference_model)
    if reference is not None:
        # The init model's file equals the data's (checked above); naming the policy's file
        # tells the user which two directories disagree.
        check_same_tokenizer(
            tokenizer,
            f"{init_model.path}/{TOKENIZER_FILE} (the policy's)",
            reference,
            f"{reference_model.path}/{TOKENIZER_FILE} (the Rho-1 reference's)",
            hint=_REFERENCE_HINT,
        )


def lineage_metadata(method: str, init_model: ModelDirectory | HFModelDirectory) -> dict[str, Any]:
    """``extra_metadata`` of the model a job writes: its method, what it started from and the
    SHA256 of the weights it started from.

    ``base_model_sha256`` is carried forward from a trained init model, so that the verifiable
    model (started from the critic) still names the release the chain began with.
    """
    meta: dict[str, Any] = {"method": method, "init_model": init_model.path}
    stored = read_metadata(init_model.path, init_model.storage_options) or {}
    files = stored.get("files") or {}
    weights = {
        name: digest for name, digest in sorted(files.items()) if name.endswith(".safetensors")
    }
    if weights:
        meta["init_model_sha256"] = weights
        meta["base_model_sha256"] = stored.get("base_model_sha256") or weights
    return meta


def job_identity(
    method: str,
    params: TrainingParams,
    runtime: RuntimeParams,
    plan_sha256: str,
    init_model: ModelDirectory | HFModelDirectory,
    reference_model: HFModelDirectory | None = None,
) -> RunIdentity:
    """The job's run identity (:func:`weighted_mtp.training.run_identity.run_identity`),
    computed here once, with the catalog entries' storage options (credentials included: the
    model fingerprints are read from the stores), and written into the spec."""
    return run_identity(
        method,
        params,
        runtime,
        plan_sha256=plan_sha256,
        init_model=init_model.path,
        reference_model=reference_model.path if reference_model is not None else None,
        init_storage_options=init_model.storage_options,
        reference_storage_options=(
            reference_model.storage_options if reference_model is not None else None
        ),
    )


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


def read_history(path: Path) -> pd.DataFrame:
    """The step history rank 0 wrote (one JSON object per logged step) as a table; nested
    objects become dotted columns (``val.loss``)."""
    if not path.is_file():
        logger.warning("%s: the workers wrote no step history", path)
        return pd.DataFrame()
    with path.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return pd.json_normalize(records) if records else pd.DataFrame()


def launch_training_job(
    method: str,
    *,
    init_model: ModelDirectory | HFModelDirectory,
    training_runs: str,
    train_jsonl: JsonlLocation,
    train_metadata: pd.DataFrame,
    valid_jsonl: JsonlLocation | None,
    valid_metadata: pd.DataFrame | None,
    params: TrainingParams,
    runtime: Mapping[str, Any] | RuntimeParams,
    reference_model: HFModelDirectory | None = None,
    checkpoints: CheckpointLocation | None = None,
    tokenizer: Tokenizer | None = None,
) -> JobSpec:
    """Plan, describe and run one training job; returns its spec (run directory, outputs).

    Args:
        method: a ``JobSpec.method`` (``baseline``, ``critic``, ``verifiable``,
            ``verifiable_uniform``, ``rho1``, ``reference``).
        init_model: the model directory the job starts from.
        training_runs: root of the run directories (``training_runs`` in the catalog).
        train_jsonl, valid_jsonl: where the corpora are; the workers read the planned rows.
        train_metadata, valid_metadata: the tables the data plan is drawn from.
        params: the method's parameters (``PARAMS_BY_METHOD[method]``; a control's are the
            parameters of the method it controls).
        runtime: ``params:runtime``.
        reference_model: the frozen Rho-1 reference (``rho1`` only).
        checkpoints: where resume checkpoints live (``<method>_checkpoints``); a remote
            location is mirrored from a local staging directory under ``training_runs``.
            None keeps them in the run directory (no resume across runs).
        tokenizer: the data's tokenizer (the ``tokenizer`` catalog entry, which counted the
            metadata's tokens); ``init_model`` must ship the same ``tokenizer.model``. None
            skips the check (callers outside the pipelines).

    The run directory is named by ``WMTP_RUN_NAME`` when set (the same on every node of a
    multi-node job), else by the UTC time.

    Raises:
        RuntimeParamsError, DataPlanError, TokenizerMismatchError, RunNameError: before
            anything is written or started.
        TrainingJobError: a worker failed (from the launcher).
    """
    started = time.monotonic()
    runtime = runtime_params(runtime)
    if tokenizer is not None:
        check_job_tokenizers(tokenizer, init_model, reference_model)
    world_size = runtime.nproc_per_node * runtime.nnodes
    plan = build_data_plan(method, params, train_metadata, valid_metadata, world_size=world_size)
    run_dir = new_run_dir(training_runs, method, name=os.environ.get(RUN_NAME_ENV) or None)
    logger.info("%s: run directory %s", method, run_dir)

    with job_mlflow_run(method) as (run_id, tracking_uri):
        models = [init_model, *([reference_model] if reference_model is not None else [])]
        data = [train_jsonl, *([valid_jsonl] if valid_jsonl is not None else [])]
        stores = [checkpoints] if checkpoints is not None else []
        checkpoint_dir, checkpoint_url = checkpoint_paths(checkpoints, training_runs, method)
        identity = job_identity(
            method, params, runtime, plan.fingerprint(), init_model, reference_model
        )
        logger.info(
            "%s: run identity %s (checkpoints in %s/%s)",
            method,
            identity.short,
            checkpoint_url or checkpoint_dir or run_dir / "checkpoints",
            identity.short,
        )
        spec = JobSpec(
            method=method,
            run_dir=str(run_dir),
            params=params.model_dump(mode="json"),
            runtime=runtime,
            init_model=init_model.path,
            reference_model=reference_model.path if reference_model is not None else None,
            train_jsonl=train_jsonl.url,
            valid_jsonl=valid_jsonl.url if valid_jsonl is not None else None,
            storage_options=public_storage_options(
                *(x.storage_options for x in [*models, *data, *stores])
            ),
            mlflow_tracking_uri=tracking_uri,
            mlflow_run_id=run_id,
            extra_metadata={
                **lineage_metadata(method, init_model),
                **({"reference_model": reference_model.path} if reference_model else {}),
                "run_identity": identity.digest,
            },
            checkpoint_dir=checkpoint_dir,
            checkpoint_url=checkpoint_url,
            identity=identity,
        )
        plan.save(spec.plan_path)

        # Imported here: the launcher is the one module that spawns processes; importing the
        # pipelines (kedro viz, kedro jupyter) must not need it.
        from weighted_mtp.training.launcher import launch

        extra_env = credential_env(*(x.storage_options for x in [*models, *data, *stores]))
        if run_id is not None and tracking_uri is not None:
            extra_env.update({"MLFLOW_RUN_ID": run_id, "MLFLOW_TRACKING_URI": tracking_uri})
        launched = time.monotonic()
        result = launch(spec, extra_env=extra_env)
        if result.first_step_seconds is None:
            logger.info("%s: the workers reported no training step", method)
        else:
            logger.info(
                "%s: first training step %.1f s after the node started (data plan %.1f s, "
                "worker start-up %.1f s)",
                method,
                launched - started + result.first_step_seconds,
                launched - started,
                result.first_step_seconds,
            )
        logger.info(
            "%s: finished in %.1f s; run directory %s", method, result.wall_seconds, run_dir
        )
        return spec


def train_policy(
    method: str, params: TrainingParams, **inputs: Any
) -> tuple[ModelDirectory, pd.DataFrame]:
    """Train an MTP policy: :func:`launch_training_job` with the node's ``inputs``; returns
    the final model directory in the run directory (the catalog copies it to
    ``<method>_model``) and the step history."""
    spec = launch_training_job(method, params=params, **inputs)
    return ModelDirectory(str(spec.final_model_dir)), read_history(spec.history_path)


def tune_reference_model(
    params: ReferenceTuningParams, *, init_model: HFModelDirectory, **inputs: Any
) -> HFModelDirectory:
    """Fine-tune the Rho-1 reference (``init_model``) on correct solutions, or pass it through
    untouched when ``params.enabled`` is false (a reference that is already tuned;
    ``train_rho1`` then checks its tokenizer against the policy's). Tuning encodes with the
    reference's own ``tokenizer.model``, which must be the data's ``tokenizer``."""
    if not params.enabled:
        logger.info("reference tuning disabled: %s is the reference as it is", init_model.path)
        return init_model
    spec = launch_training_job(REFERENCE_METHOD, init_model=init_model, params=params, **inputs)
    return HFModelDirectory(str(spec.final_model_dir))
