"""Wiring of the micro_models pipeline (see ``nodes.py``)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from weighted_mtp.pipelines.micro_models import nodes
from weighted_mtp.pipelines.training_pipeline import training_inputs


def create_pipeline(**kwargs) -> Pipeline:
    """The micro_models pipeline: ``tokenizer`` -> ``micro_mtp_init`` -> (pretraining on the
    training split) -> ``base_model``; ``tokenizer`` + ``base_model`` -> ``reference_model``."""
    return Pipeline(
        [
            Node(
                nodes.build_micro_mtp_model,
                ["tokenizer", "params:micro_models.mtp"],
                "micro_mtp_init",
                name="build_micro_mtp_model",
            ),
            Node(
                nodes.pretrain_micro_model,
                training_inputs("micro_mtp_init", "params:micro_models.pretraining", "pretrain"),
                ["base_model", "pretrain_training_history"],
                name="pretrain_micro_mtp_model",
            ),
            Node(
                nodes.build_micro_reference_model,
                ["tokenizer", "params:micro_models.reference", "base_model"],
                "reference_model",
                name="build_micro_reference_model",
            ),
        ]
    )
