"""verifiable: TD-weighted MTP plus the value loss, with a difficulty curriculum, starting from
the critic's model (run the critic pipeline first)."""

from weighted_mtp.pipelines.verifiable.pipeline import create_pipeline

__all__ = ["create_pipeline"]
