"""Losses: the fused chunked unembedding + cross-entropy, the MTP loss on head hidden states
and the per-method losses (baseline, critic, verifiable, verifiable_uniform, rho1)."""

from weighted_mtp.alignment import IGNORE_INDEX, shift_labels
from weighted_mtp.losses.linear_cross_entropy import RowGroup, linear_cross_entropy
from weighted_mtp.losses.methods import (
    BaselineMethod,
    Batch,
    CriticMethod,
    LossContext,
    Method,
    Rho1Method,
    VerifiableMethod,
    VerifiableUniformMethod,
    reference_token_ce,
    value_squared_error,
)
from weighted_mtp.losses.metric_values import MetricValues
from weighted_mtp.losses.mtp import MTPLossOutput, mtp_cross_entropy

__all__ = [
    "IGNORE_INDEX",
    "BaselineMethod",
    "Batch",
    "CriticMethod",
    "LossContext",
    "MTPLossOutput",
    "Method",
    "MetricValues",
    "Rho1Method",
    "RowGroup",
    "VerifiableMethod",
    "VerifiableUniformMethod",
    "linear_cross_entropy",
    "mtp_cross_entropy",
    "reference_token_ce",
    "shift_labels",
    "value_squared_error",
]
