"""The score CLI end to end (through the real sandbox) and its input errors."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from weighted_mtp.evaluation.score import main

PROBLEMS = [
    {
        "task_id": "demo/0",
        "dataset": "demo",
        "prompt": "def add(a, b):\n",
        "entry_point": "add",
        "kind": "function",
        "tests": "assert add(2, 3) == 5\n",
        "execution_prefix": "def add(a, b):\n",
        "canonical_solution": "    return a + b\n",
        "difficulty": None,
        "split": "test",
        "time_limit": None,
    },
    {
        "task_id": "demo/1",
        "dataset": "demo",
        "prompt": "Print the sum of two ints.",
        "entry_point": None,
        "kind": "stdio",
        "tests": [{"input": "2 3\n", "output": "5\n"}, {"input": "1 1\n", "output": "2\n"}],
        "execution_prefix": "",
        "canonical_solution": None,
        "difficulty": 3,
        "split": "test",
        "time_limit": 1.0,
    },
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def problems_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "problems.jsonl", PROBLEMS)


def test_scores_and_writes_verdicts(tmp_path: Path, problems_file: Path, capsys) -> None:
    samples = [
        {"task_id": "demo/0", "completion": "    return a + b\n"},
        {"task_id": "demo/0", "completion": "    return a * b\n"},
        {"task_id": "demo/1", "completion": "print(sum(map(int, input().split())))\n"},
        {"task_id": "demo/1", "completion": "print(5)\n"},
    ]
    samples_file = tmp_path / "samples.jsonl.gz"
    with gzip.open(samples_file, "wt") as handle:
        handle.writelines(json.dumps(s) + "\n" for s in samples)
    assert main([str(problems_file), str(samples_file), "--k", "1,2", "--workers", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == {"pass@1": 0.5, "pass@2": 1.0}
    out = Path(f"{samples_file}_results.jsonl")
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v["passed"] for v in verdicts] == [True, False, True, False]
    assert verdicts[3]["error"] == "wrong output on test 1"


def test_runs_as_module(tmp_path: Path, problems_file: Path) -> None:
    samples = write_jsonl(
        tmp_path / "s.jsonl", [{"task_id": "demo/0", "completion": "    return a + b\n"}]
    )
    out = tmp_path / "verdicts.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "weighted_mtp.evaluation.score",
            str(problems_file),
            str(samples),
            "--k",
            "1",
            "--out",
            str(out),
            "--timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"pass@1": 1.0}
    assert json.loads(out.read_text())["status"] == "passed"


@pytest.mark.parametrize(
    ("problems_text", "samples_text", "message"),
    [
        (None, '{"task_id": "demo/0", "completion": "x"}\n{"task_id": 1}\n', "s.jsonl:2"),
        (None, '{"task_id": "demo/9", "completion": "x"}\n', "s.jsonl:1: task_id 'demo/9'"),
        (None, "not json\n", "s.jsonl:1: invalid JSON"),
        ('{"task_id": "x", "kind": "bash", "prompt": ""}\n', "", "p.jsonl:1: 'kind'"),
        ('\n{"task_id": "x", "kind": "stdio", "prompt": "", "tests": []}\n', "", "p.jsonl:2"),
    ],
)
def test_bad_input_names_file_and_line(
    tmp_path: Path, problems_file: Path, capsys, problems_text, samples_text, message
) -> None:
    problems = problems_file
    if problems_text is not None:
        problems = tmp_path / "p.jsonl"
        problems.write_text(problems_text)
    samples = tmp_path / "s.jsonl"
    samples.write_text(samples_text)
    assert main([str(problems), str(samples)]) == 2
    assert message in capsys.readouterr().err
