"""Wiring of the micro_models pipeline (see ``nodes.py``)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from weighted_mtp.pipelines.micro_models import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """The micro_models pipeline: ``tokenizer`` -> ``base_model``, ``reference_model``."""
    return Pipeline(
        [
            Node(
                nodes.build_micro_mtp_model,
                ["tokenizer", "params:micro_models.mtp"],
                "base_model",
                name="build_micro_mtp_model",
            ),
            Node(
                nodes.build_micro_reference_model,
                ["tokenizer", "params:micro_models.reference"],
                "reference_model",
                name="build_micro_reference_model",
            ),
        ]
    )
