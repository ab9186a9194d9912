"""baseline: MTP fine-tuning of the base model with a uniform per-token weight, on correct
solutions."""

from weighted_mtp.pipelines.baseline.pipeline import create_pipeline

__all__ = ["create_pipeline"]
