"""micro_models: laptop-sized models (an MTP policy pretrained from random weights, and a LLaMA
reference made from its trunk and head 0) that share the data_engineering tokenizer, so that
every pipeline runs end to end without a download."""

from weighted_mtp.pipelines.micro_models.pipeline import create_pipeline

__all__ = ["create_pipeline"]
