"""Nodes of the rho1 pipeline (the jobs themselves: :mod:`weighted_mtp.pipelines.training_nodes`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.datasets.checkpoint_location import CheckpointLocation
from weighted_mtp.datasets.jsonl import JsonlLocation
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.reference import HFModelDirectory
from weighted_mtp.pipelines.training_nodes import train_policy, tune_reference_model
from weighted_mtp.training.config import Rho1Params


def tune_reference(
    init_model: HFModelDirectory,
    training_runs: str,
    train_jsonl: JsonlLocation,
    train_metadata: pd.DataFrame,
    valid_jsonl: JsonlLocation,
    valid_metadata: pd.DataFrame,
    params: Rho1Params,
    runtime: Mapping[str, Any],
    tokenizer: Tokenizer,
    checkpoints: CheckpointLocation | None = None,
) -> HFModelDirectory:
    """Fine-tune the reference LM (``init_model``) on correct solutions with
    ``params.reference_tuning``; with ``reference_tuning.enabled: false`` the reference is
    returned untouched (the catalog then points ``tuned_reference_model`` at it). Tuning encodes
    with the reference's ``tokenizer.model``, which must be the data's ``tokenizer``."""
    return tune_reference_model(
        init_model,
        training_runs,
        train_jsonl,
        train_metadata,
        valid_jsonl,
        valid_metadata,
        params.reference_tuning,
        runtime,
        checkpoints=checkpoints,
        tokenizer=tokenizer,
    )


def train_rho1(
    init_model: ModelDirectory,
    reference_model: HFModelDirectory,
    training_runs: str,
    train_jsonl: JsonlLocation,
    train_metadata: pd.DataFrame,
    valid_jsonl: JsonlLocation,
    valid_metadata: pd.DataFrame,
    params: Rho1Params,
    runtime: Mapping[str, Any],
    tokenizer: Tokenizer,
    checkpoints: CheckpointLocation | None = None,
) -> tuple[ModelDirectory, pd.DataFrame]:
    """MTP loss on the top ``params.top_k`` tokens by excess loss over the frozen
    ``reference_model``, per head, from ``init_model`` (the base model). Both models must ship
    the data's ``tokenizer`` (a reference without ``tokenizer.model`` is checked by vocabulary
    size in the workers). Returns the model directory and the step history."""
    return train_policy(
        "rho1",
        init_model,
        training_runs,
        train_jsonl,
        train_metadata,
        valid_jsonl,
        valid_metadata,
        params,
        runtime,
        reference_model=reference_model,
        checkpoints=checkpoints,
        tokenizer=tokenizer,
    )
