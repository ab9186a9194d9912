"""The data_engineering pipeline, run with SequentialRunner on the project's catalog entries
moved into a temporary directory (small synthetic sizes, a few real-format MBPP rows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner

from tests.data.test_mbpp import SPLIT_ROWS, mbpp_row
from weighted_mtp.data.manifest import verify_file
from weighted_mtp.data.metadata import verify_metadata
from weighted_mtp.data.records import validate_records
from weighted_mtp.data.tokenizer_training import check_round_trip
from weighted_mtp.pipelines.data_engineering import create_pipeline
from weighted_mtp.pipelines.data_engineering.nodes import (
    ConversionParams,
    SyntheticParams,
    TokenizerParams,
)
from weighted_mtp.pipelines.data_engineering.pipeline import MANIFEST_INPUTS, TRAINING_FILES

PROJECT = Path(__file__).resolve().parents[2]


def data_engineering_entries(root: Path) -> dict[str, dict[str, Any]]:
    """The data_engineering entries of conf/base/catalog.yml, with ``data/`` under ``root``."""
    catalog = yaml.safe_load((PROJECT / "conf" / "base" / "catalog.yml").read_text())
    # Transcoded names (``codecontests_train_jsonl@records``) and the plain entry of the same
    # file, which the manifest is keyed by.
    plain = {name.split("@")[0] for name in MANIFEST_INPUTS}
    names = {*MANIFEST_INPUTS, *plain, "mbpp_raw", "humaneval_raw", "data_manifest"}
    entries = {}
    for name in names:
        entry = dict(catalog[name])
        if "filepath" in entry:
            assert entry["filepath"].startswith("data/"), name
            entry["filepath"] = str(root / entry["filepath"])
        entries[name] = entry
    return entries


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, DataCatalog, dict[str, Any]]:
    root = tmp_path_factory.mktemp("de_run")
    entries = data_engineering_entries(root)
    mbpp = Path(entries["mbpp_raw"]["filepath"])
    mbpp.parent.mkdir(parents=True)
    mbpp.write_text("".join(json.dumps(mbpp_row(i)) + "\n" for i in SPLIT_ROWS))
    catalog = DataCatalog.from_config(entries)
    catalog["params:data_engineering.synthetic"] = SyntheticParams(
        n_train_tasks=12, n_valid_tasks=4, n_test_tasks=4, seed=7
    )
    catalog["params:data_engineering.conversion"] = ConversionParams()
    catalog["params:data_engineering.tokenizer"] = TokenizerParams(vocab_size=600)
    SequentialRunner().run(create_pipeline(), catalog)
    manifest = json.loads(Path(entries["data_manifest"]["filepath"]).read_text())
    return root, catalog, manifest


def test_every_catalog_output_is_written(run) -> None:
    root, catalog, manifest = run
    outputs = create_pipeline().all_outputs()
    persisted = {n for n in outputs if not n.startswith("quarantine_")}
    assert persisted == {*MANIFEST_INPUTS, "data_manifest"}
    for name in persisted:
        assert catalog.exists(name), name
    assert set(manifest["files"]) == {name.split("@")[0] for name in MANIFEST_INPUTS}


def test_manifest_matches_every_file(run) -> None:
    root, catalog, manifest = run
    entries = data_engineering_entries(root)
    for name, entry in manifest["files"].items():
        verify_file(entries[name]["filepath"], entry)
    assert manifest["files"]["data_engineering_quarantine"]["rows"] == 0


def test_training_files_match_their_metadata(run) -> None:
    root, catalog, manifest = run
    entries = data_engineering_entries(root)
    tokenizer = catalog.load("tokenizer")
    for jsonl, table_name in TRAINING_FILES.items():
        records = catalog.load(jsonl)
        validate_records(records, "training", jsonl)
        table = catalog.load(table_name)
        verify_metadata(
            entries[jsonl]["filepath"], table, manifest_entry=manifest["files"][jsonl.split("@")[0]]
        )
        check_round_trip(tokenizer, records, source=jsonl)
    train = catalog.load("codecontests_train_jsonl@records")
    assert {r["is_correct"] for r in train} == {True, False}
    assert all(r["task_id"].startswith("codecontests/train/") for r in train)
    assert all(
        r["task_id"].startswith("codecontests/valid/")
        for r in catalog.load("codecontests_valid_jsonl@records")
    )
    assert tokenizer.vocab_size <= 600


def test_evaluation_problems(run) -> None:
    _, catalog, _ = run
    codecontests = catalog.load("eval_problems_codecontests")
    assert 0 < len(codecontests) <= 4
    assert {p["kind"] for p in codecontests} == {"stdio"}
    assert {p["split"] for p in codecontests} == {"test"}
    assert len(catalog.load("eval_problems_humaneval")) == 164
    for name in ("eval_problems_codecontests", "eval_problems_mbpp", "eval_problems_humaneval"):
        validate_records(catalog.load(name), "problem", name)


def test_every_mbpp_row_lands_in_exactly_one_output(run) -> None:
    _, catalog, _ = run
    ids = [
        r["task_id"]
        for name in (
            "mbpp_train_jsonl",
            "mbpp_valid_jsonl",
            "eval_problems_mbpp",
            "mbpp_fewshot_problems",
        )
        for r in catalog.load(name)
    ]
    assert sorted(ids) == sorted(f"mbpp/{i}" for i in SPLIT_ROWS)
    assert [p["task_id"] for p in catalog.load("eval_problems_mbpp")] == ["mbpp/11", "mbpp/510"]
