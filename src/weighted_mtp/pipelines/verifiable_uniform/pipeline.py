"""Wiring of the verifiable_uniform pipeline: ``critic_model`` + ``params:verifiable`` ->
``verifiable_uniform_model``.

The control starts from the same ``critic_model`` as verifiable and reads the same parameter
group; its run directory, checkpoints (``verifiable_uniform_checkpoints``), history and model
are its own. A run before the critic's stops at once (``weighted_mtp.hooks.PrerequisitesHook``).
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from weighted_mtp.pipelines.training_pipeline import training_pipeline
from weighted_mtp.pipelines.verifiable_uniform.nodes import train_verifiable_uniform


def create_pipeline(**kwargs) -> Pipeline:
    """The verifiable_uniform pipeline: one training job from ``critic_model``."""
    return training_pipeline(
        train_verifiable_uniform, "verifiable_uniform", init_model="critic_model"
    )
