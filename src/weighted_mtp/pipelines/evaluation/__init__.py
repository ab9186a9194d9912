"""Evaluation: generate completions per model, execute them in the sandbox, score pass@k and
report the comparison (see ``pipeline.py`` for how the set of models is chosen)."""

from weighted_mtp.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
