"""Node of the verifiable pipeline (the job itself: :mod:`weighted_mtp.pipelines.training_nodes`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.datasets.checkpoint_location import CheckpointLocation
from weighted_mtp.datasets.jsonl import JsonlLocation
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.pipelines.training_nodes import train_policy
from weighted_mtp.training.config import VerifiableParams


def train_verifiable(
    init_model: ModelDirectory,
    training_runs: str,
    train_jsonl: JsonlLocation,
    train_metadata: pd.DataFrame,
    valid_jsonl: JsonlLocation,
    valid_metadata: pd.DataFrame,
    params: VerifiableParams,
    runtime: Mapping[str, Any],
    tokenizer: Tokenizer,
    checkpoints: CheckpointLocation | None = None,
) -> tuple[ModelDirectory, pd.DataFrame]:
    """MTP loss weighted by ``clamp(exp(td / beta), w_min, w_max)`` plus ``value_coef`` times
    the value loss, over the curriculum, from ``init_model`` (the critic's model, whose value
    head gives the TD errors; it must ship the data's ``tokenizer``). Returns the model
    directory and the step history."""
    return train_policy(
        "verifiable",
        init_model,
        training_runs,
        train_jsonl,
        train_metadata,
        valid_jsonl,
        valid_metadata,
        params,
        runtime,
        checkpoints=checkpoints,
        tokenizer=tokenizer,
    )
