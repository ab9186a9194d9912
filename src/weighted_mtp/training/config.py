"""Typed training parameters, shared by the Kedro nodes (which validate them before any worker
starts) and the torchrun workers (which read them back from the job spec).

Pydantic models: Kedro >= 1.3 builds a model from a ``params:<group>`` node input annotated
with it and reports a bad value with the group name and the field (``baseline.lr``); the
workers call :meth:`model_validate` on the same dicts, so both sides agree by construction.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Method = Literal[
    "baseline", "critic", "verifiable", "verifiable_uniform", "rho1", "reference", "pretrain"
]
METHODS: tuple[str, ...] = ("baseline", "critic", "verifiable", "rho1")
#: Control pipelines -> the method they control. A control reads that method's parameter group
#: (``params:verifiable``) and draws its data plan: one group cannot drift from itself, so the
#: control differs from its method by the loss alone (``verifiable_uniform``: every TD weight 1).
CONTROLS: dict[str, str] = {"verifiable_uniform": "verifiable"}
#: Every training pipeline that ``kedro estimate --pipelines`` accepts.
TRAINING_PIPELINES: tuple[str, ...] = (*METHODS, *CONTROLS)


def params_group(method: str) -> str:
    """The parameter group (``params:<group>``) and sampler of training job ``method``: its
    own name, or for a control the method it controls."""
    return CONTROLS.get(method, method)


class _Strict(BaseModel):
    # Unknown keys are typos (``baseline.learning_rate``): refuse them instead of ignoring.
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeParams(_Strict):
    """``runtime.*``: how and where the workers run (shared by every training pipeline)."""

    device: Literal["cpu", "cuda", "mps", "auto"] = "cpu"
    nproc_per_node: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    rdzv_endpoint: str = "127.0.0.1:29500"
    strategy: Literal["ddp", "fsdp"] = "ddp"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    seed: int = Field(42, ge=0)
    omp_threads: int | None = Field(None, ge=1)
    activation_checkpointing: Literal["none", "blocks"] = Field(
        "none",
        description="blocks: recompute each transformer block's activations in the backward",
    )
    collective_timeout_s: float = Field(
        7200.0,
        gt=0,
        description="process-group timeout: the longest a rank may wait in a collective "
        "(rank 0's checkpoint and model I/O at 7B included)",
    )

    @model_validator(mode="after")
    def _node_rank_in_range(self) -> RuntimeParams:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank={self.node_rank} must be < nnodes={self.nnodes}")
        return self


class TrainingParams(_Strict):
    """Knobs every method shares (``<method>.*`` in ``parameters_<method>.yml``).

    ``batch_size`` is sequences per micro-batch *per rank*; one optimizer step sees
    ``batch_size * grad_accum_steps * world_size`` sequences (the global batch).
    """

    max_steps: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    lr: float = Field(3e-4, gt=0, le=1.0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1.0)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    eval_every: int = Field(50, ge=1)
    val_samples: int = Field(64, ge=0)
    log_every: int = Field(1, ge=1)
    max_seq_len: int = Field(512, ge=8)
    n_samples: int | None = Field(
        None, ge=1, description="rows sampled for training; None = one epoch of max_steps"
    )
    seed: int = Field(0, ge=0)
    chunk_size: int = Field(1024, ge=1, description="rows of logits alive at once in the loss")
    length_group_steps: int = Field(
        16,
        ge=1,
        description="steps whose rows are regrouped by token length (less padding); 1 = the "
        "sampled order as drawn (training/data_plan.py)",
    )
    save_every: int | None = Field(
        None, ge=1, description="resume checkpoint every N steps (and at the end); None = end"
    )
    keep_last: int = Field(2, ge=1, description="complete checkpoints kept")
    resume: str = Field(
        "auto", min_length=1, description="auto | never | a checkpoint directory to resume from"
    )

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainingParams:
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} exceeds max_steps={self.max_steps}")
        return self


class BaselineParams(TrainingParams):
    """``baseline``: uniform MTP loss on correct solutions."""


class PretrainParams(TrainingParams):
    """``micro_models.pretraining``: the micro base model's own pretraining (the embedded
    default's stand-in for the code pretraining a released 7B_1T_4 went through).

    Uniform MTP loss on every training row, correct or not, as they come
    (``correct_fraction: null``), the way a code LM sees unfiltered code; a number draws that
    share of correct rows instead. ``enabled: false`` keeps the random initialisation.
    """

    enabled: bool = True
    correct_fraction: float | None = Field(None, ge=0, le=1)


#: ``value_val_samples``: the value panel of the value-head methods (critic, verifiable).
_VALUE_PANEL = Field(
    256,
    ge=0,
    description="balanced held-out rows for the value AUC (with its interval), the Brier skill "
    "and the bug-span diagnostics; 0 = none",
)


class CriticParams(TrainingParams):
    """``critic``: value head only (trunk frozen), stage-1 balanced sample."""

    correct_fraction: float = Field(0.5, gt=0, lt=1)
    value_val_samples: int = _VALUE_PANEL


class CurriculumParams(_Strict):
    """Stage-2 curriculum (:class:`weighted_mtp.data.sampling.CurriculumConfig`)."""

    difficulty_bins: dict[str, list[int]] = Field(
        default_factory=lambda: {"low": [0, 8], "medium": [9, 11], "high": [12, 1_000_000]}
    )
    phase_ends: list[float] = Field(default_factory=lambda: [0.3, 0.7, 1.0])
    phase_mixes: list[dict[str, float]] = Field(
        default_factory=lambda: [
            {"low": 0.7, "medium": 0.3, "high": 0.0},
            {"low": 0.3, "medium": 0.6, "high": 0.1},
            {"low": 0.1, "medium": 0.5, "high": 0.4},
        ]
    )
    correct_fraction: float | None = Field(None, ge=0, le=1)


class VerifiableParams(TrainingParams):
    """``verifiable``: TD-weighted MTP + value loss, curriculum, starting from the critic."""

    value_coef: float = Field(0.5, ge=0)
    beta: float = Field(0.9, gt=0)
    w_min: float = Field(0.1, ge=0)
    w_max: float = Field(5.0, gt=0)
    gamma: float = Field(1.0, ge=0, le=1)
    curriculum: CurriculumParams = Field(default_factory=CurriculumParams)
    value_val_samples: int = _VALUE_PANEL

    @model_validator(mode="after")
    def _weight_range(self) -> VerifiableParams:
        if self.w_min > self.w_max:
            raise ValueError(f"w_min={self.w_min} must be <= w_max={self.w_max}")
        return self


class ReferenceTuningParams(TrainingParams):
    """``rho1.reference_tuning``: fine-tune the reference LM on correct solutions first.

    ``enabled: false`` when the reference is already tuned (``conf/a100``: Sheared-LLaMA)."""

    enabled: bool = True


class Rho1Params(TrainingParams):
    """``rho1``: Rho-1 selection of the top-k% excess-loss tokens per head."""

    top_k: float = Field(0.6, gt=0, le=1)
    head0_always: bool = True
    reference_tuning: ReferenceTuningParams = Field(default_factory=ReferenceTuningParams)


PARAMS_BY_METHOD: dict[str, type[TrainingParams]] = {
    "baseline": BaselineParams,
    "critic": CriticParams,
    "verifiable": VerifiableParams,
    "verifiable_uniform": VerifiableParams,
    "rho1": Rho1Params,
    "reference": ReferenceTuningParams,
    "pretrain": PretrainParams,
}
