"""Node of the baseline pipeline (the job itself: :mod:`weighted_mtp.pipelines.training_nodes`).

Kedro validates a ``params:`` input against the annotation of the argument it feeds, so each
node declares its typed ``params``; the other inputs (``training_pipeline.training_inputs``)
pass through as keywords.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.pipelines.training_nodes import train_policy
from weighted_mtp.training.config import BaselineParams


def train_baseline(params: BaselineParams, **inputs: Any) -> tuple[ModelDirectory, pd.DataFrame]:
    """MTP loss with every output token weighted 1, on correct solutions, from ``init_model``
    (the base model). Returns the trained model directory and the step history."""
    return train_policy("baseline", params, **inputs)
