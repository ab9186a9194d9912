"""Kedro datasets of our own, referenced by dotted path in ``conf/*/catalog.yml``."""

from weighted_mtp.datasets.humaneval import HumanEvalDataset
from weighted_mtp.datasets.jsonl import JsonlDataset
from weighted_mtp.datasets.model_directory import HFModelDirectoryDataset, ModelDirectoryDataset
from weighted_mtp.datasets.raw_rows import RawRowsDataset
from weighted_mtp.datasets.sentencepiece_model import TokenizerDataset

__all__ = [
    "HFModelDirectoryDataset",
    "HumanEvalDataset",
    "JsonlDataset",
    "ModelDirectoryDataset",
    "RawRowsDataset",
    "TokenizerDataset",
]
