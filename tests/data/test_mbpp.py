"""MBPP rows (``mbpp.jsonl`` format) -> training records and function problems, by split."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from weighted_mtp.data.errors import RecordError
from weighted_mtp.data.mbpp import (
    convert_mbpp,
    entry_point_of,
    mbpp_prompt,
    parse_quietly,
    split_of,
)
from weighted_mtp.data.records import validate_records
from weighted_mtp.datasets import RawRowsDataset


def mbpp_row(task_id: int, **overrides: Any) -> dict[str, Any]:
    """A row as in the published file (CRLF line endings in code, as the real file has)."""
    row = {
        "text": f"Write a function to add {task_id} to a number.",
        "code": f"def add_{task_id}(x):\r\n    return x + {task_id}",
        "task_id": task_id,
        "test_setup_code": "",
        "test_list": [
            f"assert add_{task_id}(1) == {1 + task_id}",
            f"assert add_{task_id}(-{task_id}) == 0",
        ],
        "challenge_test_list": [],
    }
    row.update(overrides)
    return row


#: Two rows of each standard split, at its edges.
SPLIT_ROWS = [1, 10, 11, 510, 511, 600, 601, 974]


def run_program(program: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )


def test_rows_go_to_their_standard_split(tmp_path: Path) -> None:
    path = tmp_path / "mbpp.jsonl"
    path.write_text("".join(json.dumps(mbpp_row(i)) + "\n" for i in SPLIT_ROWS))
    result = convert_mbpp(RawRowsDataset(filepath=str(path)).load())
    assert result.counts == {"prompt": 2, "test": 2, "validation": 2, "train": 2}
    assert [p["task_id"] for p in result.problems["test"]] == ["mbpp/11", "mbpp/510"]
    assert [r["task_id"] for r in result.records["train"]] == ["mbpp/601", "mbpp/974"]
    for split in result.problems:
        validate_records(result.problems[split], "problem", split)
        validate_records(result.records[split], "training", split)
        assert {p["split"] for p in result.problems[split]} == {split}
    assert split_of(0) is None and split_of(975) is None


def test_problem_and_record_fields() -> None:
    result = convert_mbpp([mbpp_row(11)])
    problem = result.problems["test"][0]
    tests = "assert add_11(1) == 12\nassert add_11(-11) == 0"
    assert problem["prompt"] == (
        "Write a function to add 11 to a number.\nYour code should pass these tests:\n" + tests
    )
    assert problem["entry_point"] == "add_11"
    assert problem["kind"] == "function" and problem["dataset"] == "mbpp"
    assert problem["execution_prefix"] == ""
    assert problem["canonical_solution"] == "def add_11(x):\n    return x + 11"  # LF, not CRLF
    assert problem["tests"] == tests + "\n"
    record = result.records["test"][0]
    assert record["instruction"] == problem["prompt"]
    assert record["output"] == problem["canonical_solution"]
    assert record["is_correct"] is True
    assert record["metadata"] == {"source": "mbpp", "difficulty": 0, "has_tests": True}


def test_canonical_solution_passes_and_a_wrong_one_fails() -> None:
    setup = "OFFSET = 0\r\n"
    row = mbpp_row(700, test_setup_code=setup)
    problem = convert_mbpp([row]).problems["train"][0]
    assert problem["tests"].startswith("OFFSET = 0\n\nassert add_700(1)")
    ok = run_program(
        problem["execution_prefix"] + problem["canonical_solution"] + "\n" + problem["tests"]
    )
    assert ok.returncode == 0, ok.stderr
    bad = run_program("def add_700(x):\n    return x\n" + "\n" + problem["tests"])
    assert bad.returncode != 0 and "AssertionError" in bad.stderr


@pytest.mark.parametrize(
    ("code", "test", "expected"),
    [
        ("def f(x):\n    return x", "assert f(1) == 1", "f"),
        # A builtin wraps the call: the defined function is chosen, not set().
        ("def g(x):\n    return [x]", "assert set(g(1)) == {1}", "g"),
        # Helper defined first, the tested function last, and math.isclose around it.
        (
            "def h(x):\n    return x\ndef area(r):\n    return h(r) * 3.14",
            "assert math.isclose(area(1), 3.14)",
            "area",
        ),
        # A class under test (MBPP has a few).
        (
            "class Pair:\n    pass\ndef make():\n    return Pair()",
            "assert make() is not None",
            "make",
        ),
    ],
)
def test_entry_point_parsing(code: str, test: str, expected: str) -> None:
    assert entry_point_of(code, test) == expected


def test_bad_rows_name_file_line_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "mbpp.jsonl"
    rows = [mbpp_row(601), mbpp_row(602, test_list="assert x"), mbpp_row(975), mbpp_row(603)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = RawRowsDataset(filepath=str(path)).load()
    with pytest.raises(RecordError, match=r"mbpp\.jsonl:2: field 'test_list' must be a list"):
        convert_mbpp(loaded)
    quarantined = convert_mbpp(loaded, on_bad_record="quarantine")
    assert quarantined.counts["train"] == 2
    assert [(q["line"], q["error"][:30]) for q in quarantined.quarantined] == [
        (2, "field 'test_list' must be a li"),
        (3, "task_id 975 is in none of the "),
    ]
    assert sum(quarantined.counts.values()) + len(quarantined.quarantined) == len(rows)


def test_duplicate_task_id_is_rejected() -> None:
    with pytest.raises(RecordError, match=r"f:2: duplicate task_id 601 \(first at line 1\)"):
        convert_mbpp([mbpp_row(601), mbpp_row(601)], source_file="f")


def test_prompt_helper_lists_every_test() -> None:
    assert mbpp_prompt("Do it.", ["assert a", "assert b"]) == (
        "Do it.\nYour code should pass these tests:\nassert a\nassert b"
    )


def test_the_published_file_converts_every_row() -> None:
    """The real ``mbpp.jsonl`` committed in the project (974 rows): each lands in one split."""
    path = Path(__file__).resolve().parents[2] / "data" / "01_raw" / "mbpp" / "mbpp.jsonl"
    rows = RawRowsDataset(filepath=str(path)).load()
    assert len(rows) == 974
    result = convert_mbpp(rows)
    assert result.counts == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    assert result.quarantined == []
    for split in result.problems:
        validate_records(result.problems[split], "problem", split)
        validate_records(result.records[split], "training", split)
        # The function under test is one the reference code defines.
        for problem in result.problems[split]:
            defined = {
                node.name
                for node in ast.walk(parse_quietly(problem["canonical_solution"]))
                if isinstance(node, (ast.FunctionDef, ast.ClassDef))
            }
            assert problem["entry_point"] in defined, problem["task_id"]
