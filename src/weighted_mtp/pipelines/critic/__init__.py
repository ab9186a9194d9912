"""critic: trains the value head alone (trunk frozen) on a balanced correct/incorrect sample;
its model is where the verifiable pipeline starts."""

from weighted_mtp.pipelines.critic.pipeline import create_pipeline

__all__ = ["create_pipeline"]
