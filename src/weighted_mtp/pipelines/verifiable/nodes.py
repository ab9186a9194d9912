"""Node of the verifiable pipeline (the job itself: :mod:`weighted_mtp.pipelines.training_nodes`).

Kedro validates a ``params:`` input against the annotation of the argument it feeds, so each
node declares its typed ``params``; the other inputs (``training_pipeline.training_inputs``)
pass through as keywords.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.pipelines.training_nodes import train_policy
from weighted_mtp.training.config import VerifiableParams


def train_verifiable(
    params: VerifiableParams, **inputs: Any
) -> tuple[ModelDirectory, pd.DataFrame]:
    """MTP loss weighted by ``clamp(exp(td / beta), w_min, w_max)`` plus ``value_coef`` times
    the value loss, over the curriculum, from ``init_model`` (the critic's model, whose value
    head gives the TD errors). Returns the model directory and the step history."""
    return train_policy("verifiable", params, **inputs)
