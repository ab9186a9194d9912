"""CodeContests rows (Hugging Face schema, both enum numberings, parquet and JSONL) -> records."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from weighted_mtp.data.codecontests import convert_codecontests
from weighted_mtp.data.codecontests_numbering import (
    CANONICAL_DIFFICULTY,
    DIFFICULTIES_PROTO,
    detect_numbering,
)
from weighted_mtp.data.errors import RecordError, UnknownEnumError
from weighted_mtp.data.records import validate_records
from weighted_mtp.datasets import RawRowsDataset

PY3, CPP, PY2, JAVA = 3, 2, 1, 4


def make_row(
    name: str = "1A. Theatre Square",
    *,
    source: int = 2,
    difficulty: int = 7,
    correct: list[tuple[int, str]] | None = None,
    incorrect: list[tuple[int, str]] | None = None,
    tests: int = 1,
) -> dict[str, Any]:
    """A row in the Hugging Face ``deepmind/code_contests`` schema (every column present)."""
    correct = correct if correct is not None else [(PY3, "print(int(input()) * 2)\n")]
    incorrect = incorrect if incorrect is not None else [(PY3, "print(int(input()))\n")]

    def tests_of(offset: int) -> dict[str, list[str]]:
        return {
            "input": [f"{i + offset}\n" for i in range(tests)],
            "output": [f"{2 * (i + offset)}\n" for i in range(tests)],
        }

    return {
        "name": name,
        "description": f"Problem {name}.\n\nRead n, print 2n.\n\tIndented line, ünïcode ✓",
        "public_tests": tests_of(1),
        "private_tests": tests_of(10),
        "generated_tests": tests_of(100),
        "source": source,
        "difficulty": difficulty,
        "solutions": {
            "language": [lang for lang, _ in correct],
            "solution": [code for _, code in correct],
        },
        "incorrect_solutions": {
            "language": [lang for lang, _ in incorrect],
            "solution": [code for _, code in incorrect],
        },
        "cf_contest_id": 1,
        "cf_index": "A",
        "cf_points": 500.0,
        "cf_rating": 1000,
        "cf_tags": ["math"],
        "is_description_translated": False,
        "untranslated_description": "",
        "time_limit": {"seconds": 2, "nanos": 500_000_000},
        "memory_limit_bytes": 256_000_000,
        "input_file": "",
        "output_file": "",
    }


def sample_rows() -> list[dict[str, Any]]:
    """Three tasks: mixed languages, a task without tests, a hard letter difficulty."""
    return [
        make_row(
            "a",
            correct=[(PY3, "print(1)\n"), (CPP, "int main(){}"), (PY3, "x = 1\nprint(x)\n")],
            incorrect=[(JAVA, "class A{}"), (PY3, "print(0)\n"), (PY2, "print 0")],
        ),
        make_row("b", difficulty=1, tests=0, incorrect=[]),
        make_row("c", difficulty=12, correct=[(CPP, "int main(){}")]),
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_converts_python3_solutions_and_counts_the_others() -> None:
    result = convert_codecontests(sample_rows(), split="train", source_file="rows.jsonl")
    validate_records(result.records, "training", "out")
    outputs = [(r["task_id"], r["is_correct"], r["output"]) for r in result.records]
    assert outputs == [
        ("codecontests/train/a", True, "print(1)\n"),
        ("codecontests/train/a", True, "x = 1\nprint(x)\n"),
        ("codecontests/train/a", False, "print(0)\n"),
        ("codecontests/train/b", True, "print(int(input()) * 2)\n"),
        ("codecontests/train/c", False, "print(int(input()))\n"),
    ]
    assert result.stats["filtered_cpp"] == 2
    assert result.stats["filtered_java"] == 1
    assert result.stats["filtered_python"] == 1
    assert result.stats["records_correct"] == 3 and result.stats["records_incorrect"] == 2
    first = result.records[0]
    assert first["instruction"] == sample_rows()[0]["description"]
    assert first["input"] == ""
    assert first["metadata"] == {
        "source": "codecontests/codeforces",
        "difficulty": 7,
        "has_tests": True,
        "bug_span": None,
    }
    assert result.records[3]["metadata"]["has_tests"] is False


def test_bug_spans_of_incorrect_solutions_are_carried_when_present() -> None:
    rows = sample_rows()
    # The synthetic generator's extra field, parallel to the solutions (Java and Python 2
    # entries are filtered with their spans).
    rows[0]["incorrect_solutions"]["bug_span"] = [None, [6, 7], None]
    rows[0]["solutions"]["bug_span"] = [None, None, None]
    records = convert_codecontests(rows, split="train").records
    assert [r["metadata"]["bug_span"] for r in records] == [None, None, [6, 7], None, None]

    rows[0]["incorrect_solutions"]["bug_span"] = [None, [6, 99], None]
    with pytest.raises(RecordError, match="bug_span 1 = \\[6, 99\\] is not a non-empty span"):
        convert_codecontests(rows, split="train")
    rows[0]["incorrect_solutions"]["bug_span"] = [None, [6, 7]]
    with pytest.raises(RecordError, match="2 bug spans for 3 solutions"):
        convert_codecontests(rows, split="train")


def test_problems_carry_all_tests_in_order() -> None:
    result = convert_codecontests(sample_rows(), split="test")
    validate_records(result.problems, "problem", "out")
    assert [p["task_id"] for p in result.problems] == ["codecontests/test/a", "codecontests/test/c"]
    assert result.stats["tasks_without_tests"] == 1
    problem = result.problems[0]
    assert problem["kind"] == "stdio" and problem["entry_point"] is None
    assert problem["tests"] == [
        {"input": "1\n", "output": "2\n"},
        {"input": "10\n", "output": "20\n"},
        {"input": "100\n", "output": "200\n"},
    ]
    assert problem["time_limit"] == pytest.approx(2.5)
    assert problem["canonical_solution"] == "print(1)\n"
    assert problem["difficulty"] == 7 and problem["split"] == "test"
    assert problem["execution_prefix"] == ""
    assert result.problems[1]["canonical_solution"] is None  # no Python 3 solution


def test_accepts_numpy_arrays_and_protobuf_json_lists() -> None:
    np = pytest.importorskip("numpy")
    row = make_row("n", tests=2)
    row["public_tests"] = {k: np.array(v, dtype=object) for k, v in row["public_tests"].items()}
    row["solutions"] = {
        "language": np.array([PY3, CPP], dtype=np.int64),
        "solution": np.array(["print(5)\n", "int main(){}"], dtype=object),
    }
    row["private_tests"] = [{"input": "7\n", "output": "14\n"}]
    row["source"] = np.int64(2)
    result = convert_codecontests([row], split="valid")
    assert [r["output"] for r in result.records if r["is_correct"]] == ["print(5)\n"]
    assert result.problems[0]["tests"][2] == {"input": "7\n", "output": "14\n"}


@pytest.mark.parametrize(
    ("numbering", "source", "difficulty", "expected_source", "expected_difficulty"),
    [
        # Card numbering: ATCODER 5, AIZU 6, L 18, V 28.
        ("hf", 5, 18, "atcoder", 18),
        ("hf", 6, 28, "aizu", 28),
        # Proto numbering: ATCODER 6, AIZU 7, L 19, V 29; normalised to the card's ints.
        ("proto", 6, 19, "atcoder", 18),
        ("proto", 7, 29, "aizu", 28),
        # Both agree up to CODEJAM and K.
        ("proto", 4, 17, "codejam", 17),
        ("hf", 4, 17, "codejam", 17),
    ],
)
def test_both_enum_numberings_normalise_to_the_card(
    numbering: str, source: int, difficulty: int, expected_source: str, expected_difficulty: int
) -> None:
    rows = [make_row("x", source=source, difficulty=difficulty)]
    result = convert_codecontests(rows, numbering=numbering)
    meta = result.records[0]["metadata"]
    assert meta["source"] == f"codecontests/{expected_source}"
    assert meta["difficulty"] == expected_difficulty


def test_canonical_difficulty_is_the_contiguous_card_numbering() -> None:
    assert CANONICAL_DIFFICULTY["UNKNOWN_DIFFICULTY"] == 0
    assert CANONICAL_DIFFICULTY["EXTERNAL"] == 6
    assert CANONICAL_DIFFICULTY["A"] == 7
    assert CANONICAL_DIFFICULTY["K"] == 17
    assert CANONICAL_DIFFICULTY["L"] == 18
    assert CANONICAL_DIFFICULTY["V"] == 28
    assert DIFFICULTIES_PROTO[19] == "L" and 18 not in DIFFICULTIES_PROTO


def test_auto_detects_the_numbering_from_unambiguous_values() -> None:
    hf_rows = [make_row("a", source=6, difficulty=20), make_row("b", source=5, difficulty=1)]
    proto_rows = [make_row("a", source=6, difficulty=20), make_row("b", source=7, difficulty=1)]
    assert detect_numbering(hf_rows, "auto", "f") == "hf"
    assert detect_numbering(proto_rows, "auto", "f") == "proto"
    # Source 6 means AIZU on the card, ATCODER in the proto: the file decides for every row.
    hf = convert_codecontests(hf_rows, numbering="auto")
    proto = convert_codecontests(proto_rows, numbering="auto")
    assert hf.numbering == "hf" and proto.numbering == "proto"
    assert hf.records[0]["metadata"] == {
        "source": "codecontests/aizu",
        "difficulty": 20,
        "has_tests": True,
        "bug_span": None,
    }
    assert proto.records[0]["metadata"]["source"] == "codecontests/atcoder"
    assert proto.records[0]["metadata"]["difficulty"] == 19  # proto M (20) -> card M (19)


def test_auto_without_evidence_reads_the_card_and_mixed_files_fail() -> None:
    ambiguous = [make_row("a", source=6, difficulty=19)]
    assert detect_numbering(ambiguous, "auto", "f") == "hf"
    mixed = [make_row("a", difficulty=18), make_row("b", source=7)]
    with pytest.raises(UnknownEnumError, match=r"mixed\.jsonl:2: .*both numberings"):
        detect_numbering(mixed, "auto", "mixed.jsonl")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("numbering", ["hf", "proto"])
def test_round_trip_from_files(tmp_path: Path, fmt: str, numbering: str) -> None:
    """Rows written in the published file formats convert as the in-memory rows do."""
    source, difficulty = (6, 18) if numbering == "hf" else (7, 29)  # AIZU, L / V
    rows = [*sample_rows(), make_row("z", source=source, difficulty=difficulty)]
    dataset = RawRowsDataset(filepath=str(tmp_path / f"train.{fmt}"))
    dataset.save(rows)
    loaded = dataset.load()
    assert loaded.source.endswith(f"train.{fmt}")
    result = convert_codecontests(loaded, split="train")
    expected = convert_codecontests(copy.deepcopy(rows), split="train")
    assert result.records == expected.records
    assert result.numbering == numbering
    assert result.records[-1]["metadata"]["source"] == "codecontests/aizu"
    # Card L (18) and proto V (29) map to the card's ints, L 18 and V 28.
    assert result.records[-1]["metadata"]["difficulty"] == (18 if numbering == "hf" else 28)


def test_unknown_language_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    rows = [make_row("ok"), make_row("bad", correct=[(PY3, "print(1)"), (9, "???")])]
    dataset = RawRowsDataset(filepath=str(write_jsonl(tmp_path / "raw.jsonl", rows)))
    with pytest.raises(UnknownEnumError, match=r"raw\.jsonl:2: .*language 9, expected one of"):
        convert_codecontests(dataset.load())


def test_unknown_difficulty_and_source_are_errors() -> None:
    with pytest.raises(UnknownEnumError, match=r"f:1: difficulty 18 is not in the proto"):
        convert_codecontests([make_row(difficulty=18)], numbering="proto", source_file="f")
    with pytest.raises(UnknownEnumError, match=r"f:1: source 9 "):
        convert_codecontests([make_row(source=9)], source_file="f")


def test_duplicate_task_names_are_rejected() -> None:
    with pytest.raises(RecordError, match=r"f:2: duplicate task name 'a' \(first at line 1\)"):
        convert_codecontests([make_row("a"), make_row("a")], source_file="f")


def test_max_solutions_per_task_caps_each_class() -> None:
    row = make_row(
        "a",
        correct=[(PY3, f"print({i})") for i in range(5)],
        incorrect=[(PY3, f"print(-{i})") for i in range(4)],
    )
    result = convert_codecontests([row], max_solutions_per_task=2)
    assert [r["output"] for r in result.records] == [
        "print(0)",
        "print(1)",
        "print(-0)",
        "print(-1)",
    ]
