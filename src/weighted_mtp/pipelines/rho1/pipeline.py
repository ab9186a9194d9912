"""Wiring of the rho1 pipeline: ``reference_model`` -> ``tuned_reference_model``;
``base_model`` + ``tuned_reference_model`` -> ``rho1_model``."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from weighted_mtp.pipelines.rho1.nodes import train_rho1, tune_reference
from weighted_mtp.pipelines.training_pipeline import training_inputs, training_node


def create_pipeline(**kwargs) -> Pipeline:
    """The rho1 pipeline: tune the reference (or pass it through), then train the policy."""
    return Pipeline(
        [
            Node(
                tune_reference,
                inputs=training_inputs("reference_model", "params:rho1", "reference"),
                outputs="tuned_reference_model",
                name="tune_reference",
            ),
            training_node(
                train_rho1,
                "rho1",
                init_model="base_model",
                extra_inputs={"reference_model": "tuned_reference_model"},
            ),
        ]
    )
