"""Node of the critic pipeline (the job itself: :mod:`weighted_mtp.pipelines.training_nodes`).

Kedro validates a ``params:`` input against the annotation of the argument it feeds, so each
node declares its typed ``params``; the other inputs (``training_pipeline.training_inputs``)
pass through as keywords.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.pipelines.training_nodes import train_policy
from weighted_mtp.training.config import CriticParams


def train_critic(params: CriticParams, **inputs: Any) -> tuple[ModelDirectory, pd.DataFrame]:
    """Value head only (MSE to the final reward, trunk frozen) on a ``correct_fraction``
    sample, from ``init_model`` (the base model, shipping the data's ``tokenizer``). Returns the
    model directory (base weights + value head) and the step history."""
    return train_policy("critic", params, **inputs)
