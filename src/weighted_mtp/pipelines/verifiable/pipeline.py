"""Wiring of the verifiable pipeline: ``critic_model`` -> ``verifiable_model``.

``critic_model`` is a catalog entry, written by ``kedro run --pipeline critic``: the hand-off
between the two pipelines shows in kedro-viz, and a run before the critic's stops at once
(see ``weighted_mtp.hooks.PrerequisitesHook``).
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from weighted_mtp.pipelines.training_pipeline import training_pipeline
from weighted_mtp.pipelines.verifiable.nodes import train_verifiable


def create_pipeline(**kwargs) -> Pipeline:
    """The verifiable pipeline: one training job from ``critic_model``."""
    return training_pipeline(train_verifiable, "verifiable", init_model="critic_model")
