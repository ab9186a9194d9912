"""verifiable_uniform: the control of verifiable that isolates the TD weighting. Verifiable's
rows, curriculum, value loss and parameters (``params:verifiable``), from the same critic's
model, with every token's MTP weight 1 (run the critic pipeline first)."""

from weighted_mtp.pipelines.verifiable_uniform.pipeline import create_pipeline

__all__ = ["create_pipeline"]
