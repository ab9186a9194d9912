"""The project's Kedro datasets: local and S3 round trips, lazy construction, catalog use."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kedro.io import DataCatalog

from tests.data.test_codecontests import make_row
from weighted_mtp.data.manifest import entry_for_records, verify_file
from weighted_mtp.data.records import SourcedRows, dumps_line
from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.datasets import HumanEvalDataset, JsonlDataset, RawRowsDataset, TokenizerDataset

RECORDS = [
    {"task_id": "a", "text": "héllo\n\tworld", "n": 1},
    {"task_id": "b", "text": "世界 🚀 \u2028", "n": 2.5, "nested": {"x": [1, None]}},
]


def test_jsonl_round_trip_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "x.jsonl"
    dataset = JsonlDataset(filepath=str(path))
    assert not dataset.exists()
    dataset.save(iter(RECORDS))  # any iterable
    assert dataset.exists()
    assert dataset.load() == RECORDS
    # One compact UTF-8 object a line: the bytes the metadata offsets are computed from.
    assert path.read_bytes() == b"".join(dumps_line(r) + b"\n" for r in RECORDS)
    assert "héllo".encode() in path.read_bytes()
    verify_file(str(path), entry_for_records(RECORDS))


def test_constructors_have_no_side_effects(tmp_path: Path) -> None:
    missing = tmp_path / "never" / "created.jsonl"
    for dataset in (
        JsonlDataset(filepath=str(missing)),
        RawRowsDataset(filepath=str(tmp_path / "never" / "rows.parquet")),
        TokenizerDataset(filepath=str(tmp_path / "never" / "tokenizer.model")),
        # No credentials, no endpoint: building must still not touch the network.
        JsonlDataset(filepath="s3://no-such-bucket/x.jsonl", credentials={"key": "k"}),
    ):
        assert dataset._fs_cache is None
    assert not (tmp_path / "never").exists()


def test_describe_names_the_file() -> None:
    described = JsonlDataset(filepath="s3://bucket/key.jsonl", schema="problem")._describe()
    assert described == {"filepath": "bucket/key.jsonl", "protocol": "s3", "schema": "problem"}
    assert RawRowsDataset(filepath="x/rows.parquet")._describe()["format"] == "parquet"
    assert "x/rows.parquet" in str(RawRowsDataset(filepath="x/rows.parquet"))
    with pytest.raises(ValueError, match="cannot tell the format"):
        RawRowsDataset(filepath="rows.csv")


def test_raw_rows_normalises_numpy_from_pandas_parquet(tmp_path: Path) -> None:
    """A parquet file written by pandas (as HF shards are) reads back as plain Python."""
    rows = [make_row("a"), make_row("b", tests=3)]
    path = tmp_path / "train-00000-of-00001.parquet"
    pd.DataFrame(rows).to_parquet(path)
    loaded = RawRowsDataset(filepath=str(path)).load()
    assert isinstance(loaded, SourcedRows) and loaded.lines == [1, 2]
    assert loaded[1]["public_tests"]["input"] == ["1\n", "2\n", "3\n"]
    assert type(loaded[0]["solutions"]["language"]) is list
    assert type(loaded[0]["source"]) is int
    assert loaded == rows


def test_raw_rows_keeps_file_line_numbers_and_reads_gzip(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n\n{"a": 2}\n'))
    loaded = RawRowsDataset(filepath=str(path)).load()
    assert loaded == [{"a": 1}, {"a": 2}] and loaded.lines == [1, 3]
    out = RawRowsDataset(filepath=str(tmp_path / "out.jsonl.gz"))
    out.save([{"a": np.int64(3), "b": np.array([1, 2])}])
    assert out.load() == [{"a": 3, "b": [1, 2]}]


def test_raw_rows_writes_parquet_in_the_hf_shape(tmp_path: Path) -> None:
    dataset = RawRowsDataset(filepath=str(tmp_path / "rows.parquet"))
    dataset.save([make_row("a")])
    schema = pq.read_schema(tmp_path / "rows.parquet")
    assert schema.field("public_tests").type == pa.struct(
        [("input", pa.list_(pa.string())), ("output", pa.list_(pa.string()))]
    )
    assert dataset.load() == [make_row("a")]


def test_tokenizer_dataset_round_trip(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(["def f():\n    return 1\n"] * 50, vocab_size=300)
    dataset = TokenizerDataset(filepath=str(tmp_path / "tok" / "tokenizer.model"))
    dataset.save(tokenizer)
    loaded = dataset.load()
    assert loaded.model_proto == tokenizer.model_proto
    assert loaded.encode("def f():") == tokenizer.encode("def f():")
    assert loaded.source.endswith("tokenizer.model")


def test_datasets_from_catalog_config(tmp_path: Path) -> None:
    catalog = DataCatalog.from_config(
        {
            "records": {
                "type": "weighted_mtp.datasets.JsonlDataset",
                "filepath": str(tmp_path / "r.jsonl"),
            },
            "humaneval": {"type": "weighted_mtp.datasets.HumanEvalDataset"},
        }
    )
    catalog.save("records", RECORDS)
    assert catalog.load("records") == RECORDS
    assert len(catalog.load("humaneval")) == 164


@pytest.fixture
def s3_bucket(moto_s3_endpoint: str) -> dict[str, Any]:
    """A fresh bucket on the local moto server; yields the credentials for datasets."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="wmtp-data")
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": moto_s3_endpoint},
    }


def test_s3_round_trip(s3_bucket: dict[str, Any]) -> None:
    jsonl = JsonlDataset(filepath="s3://wmtp-data/corpus/train.jsonl", credentials=s3_bucket)
    assert not jsonl.exists()
    jsonl.save(RECORDS)
    assert jsonl.exists()
    assert jsonl.load() == RECORDS
    verify_file(
        "s3://wmtp-data/corpus/train.jsonl",
        entry_for_records(RECORDS),
        storage_options=s3_bucket,
    )
    raw = RawRowsDataset(filepath="s3://wmtp-data/raw/train.parquet", credentials=s3_bucket)
    raw.save([make_row("a")])
    assert raw.load() == [make_row("a")]
    assert raw.load().source == "s3://wmtp-data/raw/train.parquet"
    tokenizer = train_tokenizer(["x = 1\n"] * 20, vocab_size=280)
    tok = TokenizerDataset(filepath="s3://wmtp-data/tok/tokenizer.model", credentials=s3_bucket)
    tok.save(tokenizer)
    assert tok.load().model_proto == tokenizer.model_proto
    problems = HumanEvalDataset(filepath="s3://wmtp-data/he.jsonl", credentials=s3_bucket)
    JsonlDataset(filepath="s3://wmtp-data/he.jsonl", credentials=s3_bucket).save(
        [json.loads(json.dumps({"task_id": "HumanEval/0"}))]
    )
    assert problems.load() == [{"task_id": "HumanEval/0"}]
