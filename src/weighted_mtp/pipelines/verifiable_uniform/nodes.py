"""Node of the verifiable_uniform pipeline (the job itself:
:mod:`weighted_mtp.pipelines.training_nodes`).

Kedro validates a ``params:`` input against the annotation of the argument it feeds: the control
reads verifiable's group (``params:verifiable``) as :class:`VerifiableParams`, so that the two
runs cannot be configured apart; the other inputs pass through as keywords.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.pipelines.training_nodes import train_policy
from weighted_mtp.training.config import VerifiableParams


def train_verifiable_uniform(
    params: VerifiableParams, **inputs: Any
) -> tuple[ModelDirectory, pd.DataFrame]:
    """The uniform MTP loss (every token's weight 1) plus ``value_coef`` times the value loss,
    over verifiable's data plan, from ``init_model`` (the critic's model). The TD weights are
    still computed and logged, not applied. Returns the model directory and the step history."""
    return train_policy("verifiable_uniform", params, **inputs)
