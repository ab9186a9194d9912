"""summarise and the tidy pass@k table."""

from __future__ import annotations

import pytest

from weighted_mtp.evaluation import UnknownTaskError, pass_at_k, pass_at_k_table, summarise


def problem(task_id: str, dataset: str, difficulty: int | None) -> dict:
    return {"task_id": task_id, "dataset": dataset, "difficulty": difficulty, "kind": "stdio"}


PROBLEMS = {
    "a": problem("a", "cc", 1),
    "b": problem("b", "cc", 2),
    "c": problem("c", "he", None),
}


def verdicts(task_id: str, passed: list[bool], length: int | None = 10) -> list[dict]:
    out = []
    for ok in passed:
        v = {"task_id": task_id, "passed": ok, "status": "passed" if ok else "failed"}
        if length is not None:
            v["n_generated_tokens"] = length
        out.append(v)
    return out


def test_per_problem_dataset_and_difficulty() -> None:
    vs = (
        verdicts("a", [True, False, False, False, False])
        + verdicts("b", [False] * 5)
        + verdicts("c", [True, True], length=30)
    )
    summary = summarise(PROBLEMS, vs, ks=(1, 5))
    assert summary["per_problem"]["a"] == {
        "dataset": "cc",
        "difficulty": 1,
        "n": 5,
        "c": 1,
        "pass@1": pytest.approx(0.2),
        "pass@5": pytest.approx(1.0),
    }
    # c has only 2 samples: no pass@5 for it, nor for any group containing it.
    assert "pass@5" not in summary["per_problem"]["c"]
    cc = summary["per_dataset"]["cc"]
    assert cc["pass@1"] == pytest.approx(0.1)
    assert cc["pass@5"] == pytest.approx(0.5)
    assert (cc["n_problems"], cc["n_samples"], cc["n_correct"]) == (2, 10, 1)
    assert cc["status_counts"] == {"passed": 1, "failed": 9, "timeout": 0, "error": 0}
    assert cc["mean_generated_length"] == 10
    assert "pass@5" not in summary["overall"]
    assert summary["overall"]["pass@1"] == pytest.approx((0.2 + 0 + 1.0) / 3)
    assert summary["overall"]["mean_generated_length"] == pytest.approx((100 + 60) / 12)
    assert summary["per_difficulty"]["cc"][1]["pass@1"] == pytest.approx(0.2)
    assert summary["per_difficulty"]["cc"][2]["pass@5"] == 0.0
    assert "he" not in summary["per_difficulty"]  # no difficulty recorded


def test_generated_length_only_when_all_samples_carry_it() -> None:
    vs = verdicts("a", [True]) + verdicts("a", [False], length=None)
    assert "mean_generated_length" not in summarise(PROBLEMS, vs, ks=(1,))["overall"]


def test_matches_pass_at_k_directly() -> None:
    vs = verdicts("a", [True] * 3 + [False] * 7)
    summary = summarise(PROBLEMS, vs, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert summary["overall"][f"pass@{k}"] == pass_at_k(10, 3, k)


def test_unknown_task_and_bad_ks() -> None:
    with pytest.raises(UnknownTaskError):
        summarise(PROBLEMS, verdicts("zzz", [True]))
    with pytest.raises(ValueError):
        summarise(PROBLEMS, verdicts("a", [True]), ks=(0,))


def test_tidy_table() -> None:
    vs = verdicts("a", [True, False]) + verdicts("b", [False, False]) + verdicts("c", [True])
    rows = pass_at_k_table(summarise(PROBLEMS, vs, ks=(1, 2)), model="m")
    assert {
        "model": "m",
        "dataset": "cc",
        "difficulty": None,
        "k": 2,
        "pass_at_k": 0.5,
        "n_problems": 2,
    } in rows
    assert {
        "model": "m",
        "dataset": "cc",
        "difficulty": 1,
        "k": 1,
        "pass_at_k": 0.5,
        "n_problems": 1,
    } in rows
    he = [r for r in rows if r["dataset"] == "he"]
    assert [(r["k"], r["pass_at_k"]) for r in he] == [(1, 1.0)]  # n=1: no k=2 row
