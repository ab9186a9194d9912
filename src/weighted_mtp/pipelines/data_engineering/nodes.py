"""Nodes of the data_engineering pipeline: raw rows in, training-ready data out.

Each node is a short call into :mod:`weighted_mtp.data`; the catalog reads and writes every
file. Parameters arrive as the pydantic models of :mod:`.params` (Kedro builds them from
``conf/base/parameters_data_engineering.yml`` and validates them before anything runs).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from weighted_mtp.data.codecontests import convert_codecontests
from weighted_mtp.data.humaneval import convert_humaneval
from weighted_mtp.data.manifest import (
    build_manifest,
    entry_for_bytes,
    entry_for_records,
    entry_for_table,
)
from weighted_mtp.data.mbpp import convert_mbpp
from weighted_mtp.data.metadata import build_metadata, normalise_metadata_table
from weighted_mtp.data.synthetic import generate_codecontests_rows
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.data.tokenizer_training import build_tokenizer
from weighted_mtp.pipelines.data_engineering.params import (
    ConversionParams,
    SyntheticParams,
    TokenizerParams,
)

logger = logging.getLogger(__name__)

Records = list[dict[str, Any]]


def generate_synthetic_codecontests(params: SyntheticParams) -> tuple[Records, Records, Records]:
    """Synthetic CodeContests rows (Hugging Face schema) for the train, valid and test splits."""
    splits = (
        ("train", params.n_train_tasks),
        ("valid", params.n_valid_tasks),
        ("test", params.n_test_tasks),
    )
    out = []
    for index, (split, n_tasks) in enumerate(splits):
        # One seed per split: the splits must not share tasks.
        rows = generate_codecontests_rows(n_tasks, params.seed + index, split=split)
        logger.info("synthetic CodeContests %s: %d tasks", split, len(rows))
        out.append(rows)
    return out[0], out[1], out[2]


def convert_codecontests_training(
    train_rows: Records, valid_rows: Records, params: ConversionParams
) -> tuple[Records, Records, Records]:
    """Training records of the train and valid splits, and their quarantined rows."""
    outputs = []
    quarantined: Records = []
    for split, rows in (("train", train_rows), ("valid", valid_rows)):
        result = convert_codecontests(
            rows,
            split=split,
            numbering=params.enum_numbering,
            on_bad_record=params.on_bad_record,
            max_solutions_per_task=params.max_solutions_per_task,
        )
        outputs.append(result.records)
        quarantined.extend(result.quarantined)
    return outputs[0], outputs[1], quarantined


def convert_codecontests_problems(
    test_rows: Records, params: ConversionParams
) -> tuple[Records, Records]:
    """stdio evaluation problems of the test split, and its quarantined rows."""
    result = convert_codecontests(
        test_rows,
        split="test",
        numbering=params.enum_numbering,
        on_bad_record=params.on_bad_record,
    )
    return result.problems, result.quarantined


def convert_mbpp_rows(
    rows: Records, params: ConversionParams
) -> tuple[Records, Records, Records, Records, Records]:
    """MBPP by standard split: train and validation records, test problems, the few-shot
    prompt problems, and quarantined rows. Every row lands in exactly one of them."""
    result = convert_mbpp(
        rows,
        on_bad_record=params.on_bad_record,
        splits={k: (int(v[0]), int(v[1])) for k, v in params.mbpp_splits.items()},
    )
    return (
        result.records["train"],
        result.records["validation"],
        result.problems["test"],
        result.problems["prompt"],
        result.quarantined,
    )


def convert_humaneval_rows(rows: Records, params: ConversionParams) -> tuple[Records, Records]:
    """HumanEval evaluation problems and quarantined rows."""
    return convert_humaneval(rows, on_bad_record=params.on_bad_record)


def train_tokenizer(
    codecontests_train: Records, mbpp_train: Records, params: TokenizerParams
) -> Tokenizer:
    """A tokenizer byte-exact on every training record (or the pretrained one).

    Raises:
        FileNotFoundError: ``pretrained_path`` does not exist, naming the parameter.
    """
    try:
        return build_tokenizer(
            [*codecontests_train, *mbpp_train],
            vocab_size=params.vocab_size,
            pretrained_path=params.pretrained_path,
            storage_options=params.storage_options,
            model_type=params.model_type,
            space_runs=params.space_runs,
            num_threads=params.num_threads,
        )
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"data_engineering.tokenizer.pretrained_path: {exc}") from exc


def metadata_table(records: Records, tokenizer: Tokenizer) -> pd.DataFrame:
    """The metadata table (offsets, labels, token counts) of one training JSONL."""
    return build_metadata(records, tokenizer)


def collect_quarantine(*quarantined: Records) -> Records:
    """All quarantined rows in one list; their count goes to the log."""
    merged = [entry for group in quarantined for entry in group]
    if merged:
        logger.warning("%d bad records quarantined (see the quarantine JSONL)", len(merged))
    else:
        logger.info("no bad records")
    return merged


def build_data_manifest(**outputs: Any) -> dict[str, Any]:
    """SHA256, size and row count of every file the pipeline wrote, keyed by catalog entry.

    Args:
        outputs: catalog entry name -> its data as loaded (record lists, metadata tables,
            the tokenizer).
    """
    entries = {}
    for name, data in outputs.items():
        if isinstance(data, Tokenizer):
            entries[name] = entry_for_bytes(data.model_proto, None)
        elif isinstance(data, pd.DataFrame):
            # Reloaded tables may come back with other string dtypes; the canonical dtypes
            # give the bytes that were written.
            entries[name] = entry_for_table(normalise_metadata_table(data))
        else:
            entries[name] = entry_for_records(list(data))
    logger.info("manifest of %d files", len(entries))
    return build_manifest(entries)
