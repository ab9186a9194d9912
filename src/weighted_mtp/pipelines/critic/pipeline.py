"""Wiring of the critic pipeline: ``base_model`` -> ``critic_model``."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from weighted_mtp.pipelines.critic.nodes import train_critic
from weighted_mtp.pipelines.training_pipeline import training_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """The critic pipeline: one training job from ``base_model``."""
    return training_pipeline(train_critic, "critic", init_model="base_model")
