"""Aggregating verdicts into pass@k per problem, per dataset and per difficulty."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from weighted_mtp.evaluation.execution import STATUSES, UnknownTaskError
from weighted_mtp.evaluation.pass_at_k import pass_at_k

# Keys under which generation may record how long each completion was, in tokens.
GENERATED_LENGTH_KEYS = ("n_generated_tokens", "generated_length")


def _generated_length(verdict: dict[str, Any]) -> float | None:
    for key in GENERATED_LENGTH_KEYS:
        value = verdict.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _group_summary(
    rows: list[dict[str, Any]], verdicts: list[dict[str, Any]], ks: Sequence[int]
) -> dict[str, Any]:
    """pass@k averaged over problems; a k appears only if every problem has n >= k."""
    summary: dict[str, Any] = {
        "n_problems": len(rows),
        "n_samples": sum(r["n"] for r in rows),
        "n_correct": sum(r["c"] for r in rows),
    }
    for k in ks:
        if rows and all(r["n"] >= k for r in rows):
            summary[f"pass@{k}"] = sum(r[f"pass@{k}"] for r in rows) / len(rows)
    counts = Counter(v.get("status") for v in verdicts)
    summary["status_counts"] = {s: counts.get(s, 0) for s in STATUSES}
    lengths = [_generated_length(v) for v in verdicts]
    if lengths and all(x is not None for x in lengths):
        summary["mean_generated_length"] = sum(lengths) / len(lengths)
    return summary


def summarise(
    problems: dict[str, dict[str, Any]],
    verdicts: Iterable[dict[str, Any]],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, Any]:
    """Summarise ``check_completions`` verdicts.

    Returns ``{"overall": {...}, "per_dataset": {dataset: {...}},
    "per_difficulty": {dataset: {difficulty: {...}}}, "per_problem": {task_id: {...}}}``.
    Per problem: ``dataset, difficulty, n, c`` and ``pass@k`` for each k <= n. Groups carry
    ``n_problems, n_samples, n_correct``, ``pass@k`` (mean over problems, only when every
    problem has n >= k), ``status_counts`` and, when every verdict records its length (one of
    ``GENERATED_LENGTH_KEYS``), ``mean_generated_length``. Only problems with at least one
    verdict are counted; a verdict for an unknown task_id raises UnknownTaskError.
    """
    ks = tuple(sorted(set(ks)))
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"summarise: ks must be positive integers, got {ks!r}")
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for verdict in verdicts:
        task_id = verdict.get("task_id")
        if task_id not in problems:
            raise UnknownTaskError(f"verdict for unknown task_id {task_id!r}")
        by_task[task_id].append(verdict)

    per_problem: dict[str, dict[str, Any]] = {}
    for task_id, task_verdicts in by_task.items():
        problem = problems[task_id]
        n = len(task_verdicts)
        c = sum(1 for v in task_verdicts if v.get("passed"))
        row: dict[str, Any] = {
            "dataset": problem.get("dataset") or "unknown",
            "difficulty": problem.get("difficulty"),
            "n": n,
            "c": c,
        }
        row.update({f"pass@{k}": pass_at_k(n, c, k) for k in ks if k <= n})
        per_problem[task_id] = row

    def group(task_ids: list[str]) -> dict[str, Any]:
        return _group_summary(
            [per_problem[t] for t in task_ids], [v for t in task_ids for v in by_task[t]], ks
        )

    datasets: dict[str, list[str]] = defaultdict(list)
    difficulties: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for task_id, row in per_problem.items():
        datasets[row["dataset"]].append(task_id)
        if row["difficulty"] is not None:
            difficulties[row["dataset"]][row["difficulty"]].append(task_id)
    return {
        "ks": list(ks),
        "overall": group(list(per_problem)),
        "per_dataset": {name: group(ids) for name, ids in sorted(datasets.items())},
        "per_difficulty": {
            name: {d: group(ids) for d, ids in sorted(levels.items())}
            for name, levels in sorted(difficulties.items())
        },
        "per_problem": per_problem,
    }


def pass_at_k_table(summary: dict[str, Any], model: str | None = None) -> list[dict[str, Any]]:
    """Tidy rows ``{model, dataset, difficulty, k, pass_at_k, n_problems}`` from ``summarise``.

    ``difficulty`` is None for a whole dataset; one row per k present in the group.
    """
    rows: list[dict[str, Any]] = []

    def emit(dataset: str, difficulty: int | None, group: dict[str, Any]) -> None:
        for k in summary["ks"]:
            if f"pass@{k}" in group:
                rows.append(
                    {
                        "model": model,
                        "dataset": dataset,
                        "difficulty": difficulty,
                        "k": k,
                        "pass_at_k": group[f"pass@{k}"],
                        "n_problems": group["n_problems"],
                    }
                )

    for dataset, group in summary["per_dataset"].items():
        emit(dataset, None, group)
        for difficulty, level in summary["per_difficulty"].get(dataset, {}).items():
            emit(dataset, difficulty, level)
    return rows
