"""The job spec: everything a torchrun worker needs, written by the Kedro node as JSON into the
run directory and read back by every worker (``python -m weighted_mtp.training.worker SPEC``).

It holds locations (URLs), never loaded data, and never credentials: workers read those from
their environment, as fsspec and MLflow do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from weighted_mtp.training.config import PARAMS_BY_METHOD, RuntimeParams, TrainingParams
from weighted_mtp.training.run_directory import RunDirectorySpec
from weighted_mtp.training.run_identity import RunIdentity, run_identity

PLAN_FILE = "data_plan.npz"
HISTORY_FILE = "history.jsonl"
FINAL_MODEL_DIR = "final_model"


class JobSpec(RunDirectorySpec, BaseModel):
    """One training job.

    Attributes:
        method: ``baseline`` | ``critic`` | ``verifiable`` | ``verifiable_uniform`` | ``rho1`` |
            ``reference`` | ``pretrain``.
        run_dir: local directory of this run (spec, data plan, logs, history, final model).
        params: the method's parameters (``PARAMS_BY_METHOD[method]`` as a dict).
        runtime: ``runtime.*``.
        init_model: model directory (path or fsspec URL) the policy starts from; for
            ``reference`` a Hugging Face directory.
        reference_model: Hugging Face directory of the frozen Rho-1 reference (rho1 only).
        train_jsonl, valid_jsonl: the training/validation JSONL (path or URL); the rows to
            read are in the data plan (``run_dir/data_plan.npz``).
        storage_options: non-secret fsspec options (e.g. an S3 endpoint URL).
        mlflow_tracking_uri, mlflow_run_id: where rank 0 logs step metrics (the run that
            kedro-mlflow opened), or None to log nothing to MLflow.
        extra_metadata: merged into the final model directory's ``metadata.json``.
        checkpoint_dir: the method's local checkpoint location (None: ``run_dir/checkpoints``);
            the run's checkpoints go into its run identity's subdirectory.
        checkpoint_url: remote mirror of the checkpoint location (``s3://...``) or None.
        identity: the run identity (:mod:`weighted_mtp.training.run_identity`), computed once
            by the Kedro node; None: rank 0 computes it (:meth:`resolve_identity`).
    """

    model_config = ConfigDict(extra="forbid")
    spec_kind: ClassVar[str] = "job spec"

    method: str
    run_dir: str
    params: dict[str, Any]
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)
    init_model: str
    reference_model: str | None = None
    train_jsonl: str
    valid_jsonl: str | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict)
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    extra_metadata: dict[str, Any] = Field(default_factory=dict)
    checkpoint_dir: str | None = None
    checkpoint_url: str | None = None
    identity: RunIdentity | None = None

    # ------------------------------------------------------------------ derived
    @property
    def plan_path(self) -> Path:
        return self.run_path / PLAN_FILE

    @property
    def history_path(self) -> Path:
        return self.run_path / HISTORY_FILE

    @property
    def final_model_dir(self) -> Path:
        return self.run_path / FINAL_MODEL_DIR

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else self.run_path / "checkpoints"

    def training_params(self) -> TrainingParams:
        """``params`` validated as the method's parameter model."""
        try:
            model = PARAMS_BY_METHOD[self.method]
        except KeyError:
            raise ValueError(
                f"unknown method {self.method!r}; expected one of {sorted(PARAMS_BY_METHOD)}"
            ) from None
        return model.model_validate(self.params)

    def resolve_identity(self, plan_sha256: str) -> RunIdentity:
        """``identity``, or the one computed from this spec (reading the model directories'
        fingerprints) when the spec was written without it.

        Raises:
            ValueError: the recorded identity names another data plan than ``plan_sha256``
                (the plan file was replaced after the spec was written).
        """
        if self.identity is not None:
            recorded = self.identity.components.get("data_plan")
            if recorded != plan_sha256:
                raise ValueError(
                    f"{self.spec_path}: the run identity records data plan {recorded}, but "
                    f"{self.plan_path} has {plan_sha256}"
                )
            return self.identity
        return run_identity(
            self.method,
            self.training_params(),
            self.runtime,
            plan_sha256=plan_sha256,
            init_model=self.init_model,
            reference_model=self.reference_model if self.method == "rho1" else None,
            init_storage_options=self.storage_options,
            reference_storage_options=self.storage_options,
        )

    # ------------------------------------------------------------------ IO
