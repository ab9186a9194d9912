"""Nodes of the rho1 pipeline (the job itself: :mod:`weighted_mtp.pipelines.training_nodes`).

Kedro validates a ``params:`` input against the annotation of the argument it feeds, so each
node declares its typed ``params``; the other inputs (``training_pipeline.training_inputs``)
pass through as keywords.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.reference import HFModelDirectory
from weighted_mtp.pipelines.training_nodes import train_policy, tune_reference_model
from weighted_mtp.training.config import Rho1Params


def tune_reference(params: Rho1Params, **inputs: Any) -> HFModelDirectory:
    """Fine-tune the reference LM (``init_model``) on correct solutions with
    ``params.reference_tuning``; with ``reference_tuning.enabled: false`` the reference is
    returned untouched (the catalog then points ``tuned_reference_model`` at it). Tuning encodes
    with the reference's ``tokenizer.model``, which must be the data's ``tokenizer``."""
    return tune_reference_model(params.reference_tuning, **inputs)


def train_rho1(params: Rho1Params, **inputs: Any) -> tuple[ModelDirectory, pd.DataFrame]:
    """MTP loss on the top ``params.top_k`` tokens by excess loss over the frozen
    ``reference_model``, per head, from ``init_model`` (the base model). Returns the model
    directory and the step history."""
    return train_policy("rho1", params, **inputs)
