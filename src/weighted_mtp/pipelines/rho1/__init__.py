"""rho1: MTP on correct solutions with Rho-1 token selection against a frozen reference LM,
which the pipeline first fine-tunes on correct solutions (unless it is already tuned)."""

from weighted_mtp.pipelines.rho1.pipeline import create_pipeline

__all__ = ["create_pipeline"]
