"""Wiring of the baseline pipeline: ``base_model`` -> ``baseline_model``."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from weighted_mtp.pipelines.baseline.nodes import train_baseline
from weighted_mtp.pipelines.training_pipeline import training_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """The baseline pipeline: one training job from ``base_model``."""
    return training_pipeline(train_baseline, "baseline", init_model="base_model")
