"""Node of the critic pipeline (the job itself: :mod:`weighted_mtp.pipelines.training_nodes`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.datasets.checkpoint_location import CheckpointLocation
from weighted_mtp.datasets.jsonl import JsonlLocation
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.pipelines.training_nodes import train_policy
from weighted_mtp.training.config import CriticParams


def train_critic(
    init_model: ModelDirectory,
    training_runs: str,
    train_jsonl: JsonlLocation,
    train_metadata: pd.DataFrame,
    valid_jsonl: JsonlLocation,
    valid_metadata: pd.DataFrame,
    params: CriticParams,
    runtime: Mapping[str, Any],
    tokenizer: Tokenizer,
    checkpoints: CheckpointLocation | None = None,
) -> tuple[ModelDirectory, pd.DataFrame]:
    """Value head only (MSE to the final reward, trunk frozen) on a ``correct_fraction``
    sample, from ``init_model`` (the base model, shipping the data's ``tokenizer``). Returns the
    model directory (base weights + value head) and the step history."""
    return train_policy(
        "critic",
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
