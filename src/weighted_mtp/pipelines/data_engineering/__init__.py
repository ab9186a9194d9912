"""data_engineering: raw CodeContests / MBPP / HumanEval to training JSONL, metadata tables,
evaluation problems, a tokenizer and a SHA256 manifest."""

from weighted_mtp.pipelines.data_engineering.pipeline import create_pipeline

__all__ = ["create_pipeline"]
