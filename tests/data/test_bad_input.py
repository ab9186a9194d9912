"""Bad input names the file, the line and what was expected; or goes to quarantine."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from kedro.io.core import DatasetError

from tests.data.test_codecontests import make_row
from tests.data.test_mbpp import mbpp_row
from weighted_mtp.data.codecontests import convert_codecontests
from weighted_mtp.data.errors import MalformedJsonError, RecordError, UnknownEnumError
from weighted_mtp.data.records import BadRecordSink, validate_problem, validate_training_record
from weighted_mtp.datasets import JsonlDataset, RawRowsDataset
from weighted_mtp.pipelines.data_engineering.nodes import (
    ConversionParams,
    collect_quarantine,
    convert_codecontests_training,
    convert_mbpp_rows,
)


def good_record() -> dict[str, Any]:
    return {
        "instruction": "Add.",
        "input": "",
        "output": "print(1)\n",
        "task_id": "t/1",
        "is_correct": True,
        "metadata": {"source": "s", "difficulty": 3, "has_tests": True},
    }


def cause(info: pytest.ExceptionInfo) -> BaseException:
    """Kedro wraps dataset errors in DatasetError; ours is the cause."""
    return info.value.__cause__ if isinstance(info.value, DatasetError) else info.value


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ('{"a": 1', r"bad\.jsonl:3: invalid JSON at column 8"),
        ("[1, 2]", r"bad\.jsonl:3: a JSON list, expected an object"),
        ('"text"', r"bad\.jsonl:3: a JSON str, expected an object"),
    ],
)
def test_malformed_json_line(tmp_path: Path, line: str, pattern: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"ok": 1}\n\n' + line + "\n")
    for dataset in (JsonlDataset(filepath=str(path)), RawRowsDataset(filepath=str(path))):
        with pytest.raises(DatasetError) as info:
            dataset.load()
        assert isinstance(cause(info), MalformedJsonError)
        assert cause(info).line == 3
        with pytest.raises(MalformedJsonError, match=pattern):
            raise cause(info)


def test_invalid_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"ok": 1}\n{"x": "\xff"}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: not UTF-8"):
        JsonlDataset(filepath=str(path)).load()


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda r: r.pop("output"), r"f:7: missing field 'output' \(expected a string\)"),
        (lambda r: r.update(output=3), r"f:7: field 'output' must be str, got int"),
        (lambda r: r.update(is_correct="yes"), r"f:7: field 'is_correct' must be bool, got str"),
        (lambda r: r.pop("metadata"), r"f:7: missing field 'metadata'"),
        (
            lambda r: r["metadata"].update(difficulty=True),
            r"f:7: field 'metadata.difficulty' must be int, got a bool",
        ),
        (lambda r: r["metadata"].pop("has_tests"), r"f:7: missing field 'metadata.has_tests'"),
        (lambda r: r.update(task_id=""), r"f:7: field 'task_id' must be a non-empty string"),
    ],
)
def test_training_record_schema(mutate, pattern: str) -> None:
    record = good_record()
    validate_training_record(record, "f", 7)
    mutate(record)
    with pytest.raises(RecordError, match=pattern):
        validate_training_record(record, "f", 7)


def test_problem_schema() -> None:
    problem = {
        "task_id": "p",
        "dataset": "d",
        "prompt": "",
        "entry_point": None,
        "kind": "stdio",
        "tests": [{"input": "1", "output": 2}],
        "execution_prefix": "",
        "canonical_solution": None,
        "difficulty": None,
        "split": "test",
        "time_limit": None,
    }
    with pytest.raises(RecordError, match=r"f:2: tests\[0\] must be \{'input': str"):
        validate_problem(problem, "f", 2)
    problem.update(kind="function", tests="assert True", entry_point=None)
    with pytest.raises(RecordError, match=r"f:2: field 'entry_point' must be str, got NoneType"):
        validate_problem(problem, "f", 2)
    problem.update(kind="sql")
    with pytest.raises(RecordError, match=r"f:2: field 'kind' must be one of"):
        validate_problem(problem, "f", 2)


def test_jsonl_dataset_with_schema_rejects_bad_records_on_load_and_save(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    bad = good_record()
    bad["is_correct"] = 1
    path.write_text(json.dumps(good_record()) + "\n" + json.dumps(bad) + "\n")
    dataset = JsonlDataset(filepath=str(path), schema="training")
    with pytest.raises(DatasetError, match=r"train\.jsonl:2: field 'is_correct' must be bool"):
        dataset.load()
    with pytest.raises(DatasetError, match=r"train\.jsonl:2: field 'is_correct' must be bool"):
        dataset.save([good_record(), bad])


@pytest.mark.parametrize(
    ("mutate", "error", "pattern"),
    [
        (lambda r: r.pop("description"), RecordError, r"raw:2: missing field 'description'"),
        (lambda r: r.update(name=5), RecordError, r"raw:2: field 'name' must be a string"),
        (
            lambda r: r["solutions"]["language"].append(3),
            RecordError,
            r"raw:2: field 'solutions': 2 'language' values but 1 'solution' values",
        ),
        (
            lambda r: r["solutions"].update(language=[11]),
            UnknownEnumError,
            r"raw:2: field 'solutions': solution 0 has language 11",
        ),
        (lambda r: r.update(difficulty=40), UnknownEnumError, r"raw:2: difficulty 40 is not"),
        (
            lambda r: r.update(difficulty="A"),
            RecordError,
            r"raw:2: field 'difficulty' must be an int",
        ),
        (
            lambda r: r.update(public_tests={"input": ["1"], "output": [2]}),
            RecordError,
            r"raw:2: field 'public_tests': test 0 must be two strings",
        ),
        (
            lambda r: r.update(time_limit=3),
            RecordError,
            r"raw:2: field 'time_limit' must be an object",
        ),
    ],
)
def test_codecontests_bad_rows(mutate, error: type, pattern: str) -> None:
    rows = [make_row("a"), make_row("b")]
    mutate(rows[1])
    with pytest.raises(error, match=pattern):
        convert_codecontests(rows, source_file="raw")
    result = convert_codecontests(rows, source_file="raw", on_bad_record="quarantine")
    assert {r["task_id"] for r in result.records} == {"codecontests/train/a"}
    assert len(result.quarantined) == 1 and result.quarantined[0]["line"] == 2
    json.dumps(result.quarantined)  # the quarantine file can hold it


def test_a_bad_row_leaves_no_partial_records() -> None:
    row = make_row("a", correct=[(3, "print(1)"), (3, "print(2)")], incorrect=[(42, "?")])
    result = convert_codecontests([row], on_bad_record="quarantine")
    assert result.records == [] and len(result.quarantined) == 1


def test_quarantine_policy_through_the_nodes(caplog: pytest.LogCaptureFixture) -> None:
    params = ConversionParams(on_bad_record="quarantine")
    train = [make_row("a"), {"name": "broken"}]
    valid = [make_row("v", correct=[(7, "x")])]
    train_records, valid_records, cc_bad = convert_codecontests_training(train, valid, params)
    assert len(train_records) == 2 and valid_records == []
    mbpp = [mbpp_row(601), {"task_id": 602}]
    *_, mbpp_bad = convert_mbpp_rows(mbpp, params)
    with caplog.at_level(logging.WARNING):
        merged = collect_quarantine(cc_bad, mbpp_bad)
    assert [(q["line"], q["error"].split(" (")[0]) for q in merged] == [
        (2, "missing field 'description'"),
        (1, "field 'solutions': solution 0 has language 7, expected one of [0, 1, 2, 3, 4]"),
        (2, "missing field 'text'"),
    ]
    assert "3 bad records quarantined" in caplog.text
    with pytest.raises(RecordError):
        convert_codecontests_training(train, valid, ConversionParams())


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="on_bad_record must be one of"):
        BadRecordSink("skip")
