"""micro_models: laptop-sized random models (an MTP policy and a LLaMA reference) that share
the data_engineering tokenizer, so that every pipeline runs end to end without a download."""

from weighted_mtp.pipelines.micro_models.pipeline import create_pipeline

__all__ = ["create_pipeline"]
