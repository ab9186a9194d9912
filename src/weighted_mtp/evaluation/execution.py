"""Verdicts per sample: each generated program run against its problem's tests.

``check_completions`` builds the program of each sample from its evaluation problem
(``docs/contracts.md``), runs many at once in the sandbox (``sandbox.run_program``) and
classifies the outcome.

Function tasks pass only on a positive signal: the test code is followed by a line that
prints a random nonce, so exiting early (``sys.exit(0)``, ``os._exit(0)``) or printing
"passed" never counts. Stdio tasks pass only when every test's output matches.

The sandbox's public names are re-exported here, so ``execution.run_program``,
``execution.SandboxLimits`` etc. keep working.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from weighted_mtp.evaluation import sandbox
from weighted_mtp.evaluation.sandbox import (
    PROGRAM_NAME,
    SANDBOX_UID_BASE,
    SANDBOX_UID_COUNT,
    ExecutionResult,
    Isolation,
    SandboxLimits,
    SandboxSetupError,
    SandboxUnavailableError,
    isolation,
    orphaned_processes,
    run_program,
)

__all__ = [
    "PROGRAM_NAME",
    "SANDBOX_UID_BASE",
    "SANDBOX_UID_COUNT",
    "STATUSES",
    "ExecutionResult",
    "InvalidSampleError",
    "Isolation",
    "SandboxLimits",
    "SandboxSetupError",
    "SandboxUnavailableError",
    "UnknownTaskError",
    "check_completions",
    "check_program",
    "isolation",
    "normalise_output",
    "orphaned_processes",
    "run_program",
]

STATUSES = ("passed", "failed", "timeout", "error")


class UnknownTaskError(KeyError):
    """A sample names a task_id that is not among the evaluation problems."""


class InvalidSampleError(ValueError):
    """A sample lacks ``task_id`` or ``completion``, or a problem is malformed."""


def _last_line(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return None


def normalise_output(text: str) -> str:
    """Stdout as compared for stdio tasks: trailing whitespace dropped per line and at the end."""
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines())


def _limits_for(problem: dict[str, Any], limits: SandboxLimits) -> SandboxLimits:
    """A problem's published ``time_limit`` may raise the budget, never lower it.

    Published limits are set for C++; a correct Python solution often needs more.
    """
    time_limit = problem.get("time_limit")
    if not time_limit:
        return limits
    return replace(
        limits,
        cpu_seconds=max(limits.cpu_seconds, float(time_limit)),
        wall_seconds=max(limits.wall_seconds, 2.0 * float(time_limit)),
    )


def _failure(result: ExecutionResult, limits: SandboxLimits) -> tuple[str, str]:
    """(status, error) for a run that did not succeed."""
    if result.timed_out:
        return "timeout", f"wall time limit exceeded ({limits.wall_seconds:g} s)"
    if result.cpu_limited:
        return "timeout", f"CPU time limit exceeded ({limits.cpu_seconds:g} s)"
    if result.output_limited:
        return "failed", f"output limit exceeded ({limits.max_output_bytes} bytes)"
    last = _last_line(result.stderr)
    if result.returncode is not None and result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        return "error", f"killed by {name}" + (f" ({last})" if last else "")
    if last is None:
        return "failed", f"exited with status {result.returncode} before the tests completed"
    if last.startswith("AssertionError"):
        return "failed", last
    return "error", last


def check_program(
    problem: dict[str, Any], completion: str, limits: SandboxLimits | None = None
) -> dict[str, Any]:
    """Run one completion against its problem; returns ``status``, ``passed``, ``error``, ``duration_s``."""
    limits = _limits_for(problem, limits or SandboxLimits())
    start = time.perf_counter()
    status, error = _check(problem, completion, limits)
    return {
        "status": status,
        "passed": status == "passed",
        "error": error,
        "duration_s": round(time.perf_counter() - start, 4),
    }


def _check(
    problem: dict[str, Any], completion: str, limits: SandboxLimits
) -> tuple[str, str | None]:
    kind = problem.get("kind")
    program = (problem.get("execution_prefix") or "") + completion
    if kind == "function":
        nonce = secrets.token_hex(16)
        # The nonce line runs only if every test above it ran without raising.
        source = (
            f"{program}\n{problem['tests']}\n\n"
            f"import sys as _wmtp_sys\n_wmtp_sys.stdout.write('\\n{nonce}\\n')\n"
            "_wmtp_sys.stdout.flush()\n"
        )
        result = run_program(source, None, limits)
        if result.returncode == 0 and nonce in result.stdout.splitlines():
            return "passed", None
        return _failure(result, limits)
    if kind == "stdio":
        tests = problem["tests"]
        if not tests:
            return "error", "problem has no tests"
        for index, test in enumerate(tests):
            result = run_program(program, test["input"], limits)
            if result.returncode != 0 or result.timed_out or result.output_limited:
                return _failure(result, limits)
            if normalise_output(result.stdout) != normalise_output(test["output"]):
                return "failed", f"wrong output on test {index}"
        return "passed", None
    raise InvalidSampleError(
        f"problem {problem.get('task_id')!r}: kind must be 'function' or 'stdio', got {kind!r}"
    )


def check_completions(
    problems: dict[str, dict[str, Any]],
    samples: Sequence[dict[str, Any]],
    *,
    limits: SandboxLimits | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Execute every sample's completion against its problem's tests, ``workers`` at a time.

    Returns, in input order, each sample dict extended with ``status``
    (``passed|failed|timeout|error``), ``passed``, ``error`` (last line of the error, e.g.
    ``"AssertionError"``; None when passed) and ``duration_s``. ``failed``: tests ran and did
    not pass (assertion, wrong output, exited before the tests completed, output limit);
    ``timeout``: wall or CPU limit; ``error``: the program crashed otherwise (exception,
    signal). ``progress(done, total)`` is called after each sample.
    """
    for index, sample in enumerate(samples):
        if "task_id" not in sample or "completion" not in sample:
            raise InvalidSampleError(f"sample {index}: needs 'task_id' and 'completion'")
        if not isinstance(sample["completion"], str):
            raise InvalidSampleError(f"sample {index}: 'completion' must be a string")
    unknown = sorted({str(s["task_id"]) for s in samples if s["task_id"] not in problems})
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise UnknownTaskError(f"{len(unknown)} sample task_id(s) not among the problems: {shown}")
    limits = limits or SandboxLimits()
    sandbox.isolation()  # probe once, before the threads start
    total = len(samples)
    done = 0
    lock = threading.Lock()

    def one(sample: dict[str, Any]) -> dict[str, Any]:
        nonlocal done
        verdict = check_program(problems[sample["task_id"]], sample["completion"], limits)
        if progress is not None:
            with lock:
                done += 1
                progress(done, total)
        return {**sample, **verdict}

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(one, samples))
