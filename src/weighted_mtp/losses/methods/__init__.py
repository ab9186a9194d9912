"""The per-method losses: what each training method adds to the one loop.

A method sees the training module through :class:`PolicyModule` (head hidden states, the
shared unembedding, the value head) and a :class:`LossContext` (step-level denominators,
the gradient scale, and collectives for choices that span ranks). It returns the loss to
backpropagate and its metrics. Nothing here imports ``torch.distributed``: the loop injects
the collectives, identities in a single process.

Validation is the same for every policy method, so runs compare on one scale: the uniform MTP
loss (``val/loss``) on the same correct held-out rows (the loss panel), plus, where a value
head exists, value metrics on a balanced panel of their own (``validate_value``).

The package: :mod:`.context` (what a method sees), :mod:`.base` (:class:`Method`, the uniform
MTP loss of the baseline and the shared validation), :mod:`.critic` and :mod:`.weighted` (the
token-weighting methods: verifiable, verifiable_uniform, rho1).
"""

from __future__ import annotations

from weighted_mtp.losses.methods.base import (
    TD_DEFAULTS,
    BaselineMethod,
    Method,
    value_squared_error,
)
from weighted_mtp.losses.methods.context import Batch, LossContext, PolicyModule
from weighted_mtp.losses.methods.critic import CriticMethod
from weighted_mtp.losses.methods.weighted import (
    Rho1Method,
    VerifiableMethod,
    VerifiableUniformMethod,
    reference_token_ce,
)

__all__ = [
    "TD_DEFAULTS",
    "Batch",
    "BaselineMethod",
    "CriticMethod",
    "LossContext",
    "Method",
    "PolicyModule",
    "Rho1Method",
    "VerifiableMethod",
    "VerifiableUniformMethod",
    "reference_token_ce",
    "value_squared_error",
]
