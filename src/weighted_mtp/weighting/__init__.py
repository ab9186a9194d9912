"""Per-token loss weights: TD-error weighting and Rho-1 selection (pure tensor math)."""

from weighted_mtp.weighting.rho1 import (
    exact_top_k,
    n_selected,
    n_selected_counts,
    rho1_mask,
    selection_threshold,
)
from weighted_mtp.weighting.td import last_masked_index, td_errors, td_weights

__all__ = [
    "exact_top_k",
    "last_masked_index",
    "n_selected",
    "n_selected_counts",
    "rho1_mask",
    "selection_threshold",
    "td_errors",
    "td_weights",
]
