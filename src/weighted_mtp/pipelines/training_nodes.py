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

Where a job runs and what it may see (the run directory, the non-secret storage options and the
credentials' environment, checkpoint locations, its nested MLflow run) is set up by
:mod:`weighted_mtp.pipelines.job_environment`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

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
from weighted_mtp.pipelines.job_environment import (
    RUN_NAME_ENV,
    checkpoint_paths,
    credential_env,
    job_mlflow_run,
    new_run_dir,
    public_storage_options,
    runtime_params,
)
from weighted_mtp.training.config import ReferenceTuningParams, RuntimeParams, TrainingParams
from weighted_mtp.training.data_plan import build_data_plan
from weighted_mtp.training.run_identity import RunIdentity, run_identity
from weighted_mtp.training.spec import JobSpec

logger = logging.getLogger(__name__)

#: Method name of the Rho-1 reference's own fine-tuning job (a ``JobSpec.method``).
REFERENCE_METHOD = "reference"


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
