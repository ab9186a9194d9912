"""Kedro datasets of our own, referenced by dotted path in ``conf/*/catalog.yml``."""

from weighted_mtp.datasets.checkpoint_location import (
    CheckpointLocation,
    CheckpointLocationDataset,
)
from weighted_mtp.datasets.humaneval import HumanEvalDataset
from weighted_mtp.datasets.jsonl import JsonlDataset, JsonlLocation
from weighted_mtp.datasets.model_directory import HFModelDirectoryDataset, ModelDirectoryDataset
from weighted_mtp.datasets.raw_rows import RawRowsDataset
from weighted_mtp.datasets.run_directory import RunDirectoryDataset
from weighted_mtp.datasets.sentencepiece_model import TokenizerDataset

__all__ = [
    "CheckpointLocation",
    "CheckpointLocationDataset",
    "HFModelDirectoryDataset",
    "HumanEvalDataset",
    "JsonlDataset",
    "JsonlLocation",
    "ModelDirectoryDataset",
    "RawRowsDataset",
    "RunDirectoryDataset",
    "TokenizerDataset",
]
