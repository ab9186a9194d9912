"""A failed job as an exception: torchrun's failure summary parsed (which rank failed, with
which exit code, which were stopped after it), the ``@record`` error files and the ranks' logs
quoted in :class:`TrainingJobError`."""

from __future__ import annotations

import contextlib
import json
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from weighted_mtp.training import progress
from weighted_mtp.training.launcher.rank_output import _RankLogTailer, _TorchrunOutput

#: Lines of a failed rank's traceback or log quoted in :class:`TrainingJobError`.
ERROR_TAIL_LINES = 30
#: Under the run's log directory: torchrun's own error file (TORCHELASTIC_ERROR_FILE).
_TORCHRUN_ERROR_FILE = "torchrun_error.json"


class TrainingJobError(RuntimeError):
    """A training job ended badly: a worker failed, or torchrun itself did.

    Attributes:
        returncode: torchrun's exit code.
        failed_ranks: global ranks that failed on their own (not those torchrun stopped after
            the first failure); empty when torchrun failed before or without a worker failing.
        log_dir: the run's log directory (``rank_N.log``, ``torchrun.log``).
    """

    def __init__(
        self, message: str, *, returncode: int, failed_ranks: list[int], log_dir: Path
    ) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.failed_ranks = failed_ranks
        self.log_dir = log_dir


@dataclass
class _Failure:
    rank: int
    local_rank: int
    exitcode: int
    root_cause: bool


_FAILURE_RE = re.compile(
    r"rank\s*:\s*(?P<rank>\d+)\s*\(local_rank:\s*(?P<local>\d+)\)\s*\n"
    r"\s*exitcode\s*:\s*(?P<code>-?\d+)"
)


def _parse_failures(torchrun_text: str) -> list[_Failure]:
    """Failed ranks from torchrun's ``ChildFailedError`` summary (the only place that gives
    each rank's exit code); empty when torchrun printed none."""
    root_at = torchrun_text.rfind("Root Cause")
    start = torchrun_text.rfind("Failures:")
    if start < 0:
        return []
    failures: dict[int, _Failure] = {}
    for match in _FAILURE_RE.finditer(torchrun_text, start):
        failure = _Failure(
            rank=int(match["rank"]),
            local_rank=int(match["local"]),
            exitcode=int(match["code"]),
            root_cause=0 <= root_at < match.start(),
        )
        if failure.rank not in failures or failure.root_cause:
            failures[failure.rank] = failure
    return sorted(failures.values(), key=lambda f: f.rank)


def _error_file_traceback(path: Path) -> str | None:
    """The traceback that ``@record`` wrote for a worker, or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, dict):
        extra = message.get("extraInfo") or {}
        text = extra.get("py_callstack") or message.get("message")
        return str(text) if text else None
    return str(message) if message else None


def _tail(path: Path, n: int) -> list[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            lines = [line.rstrip("\n") for line in fh if progress.parse_event(line) is None]
    except OSError:
        return []
    return lines[-n:]


def _signal_name(code: int) -> str:
    with contextlib.suppress(ValueError):
        return f" ({signal.Signals(-code).name})" if code < 0 else ""
    return ""


def _job_error(
    returncode: int,
    torchrun_dir: Path,
    old_attempt_dirs: set[Path],
    tailer: _RankLogTailer,
    torchrun_out: _TorchrunOutput,
) -> TrainingJobError:
    failures = _parse_failures(torchrun_out.text())
    attempts = sorted(
        (
            p
            for d in torchrun_dir.glob("*")
            if d not in old_attempt_dirs
            for p in d.glob("attempt_*")
        ),
        key=lambda p: int(p.name.removeprefix("attempt_") or 0),
    )
    attempt = attempts[-1] if attempts else None

    if not failures and attempt is not None:
        # No summary (torchrun killed, format changed): ranks that left an error file failed.
        for rdir in sorted(attempt.iterdir()):
            if rdir.name.isdigit() and (rdir / "error.json").exists():
                local = int(rdir.name)
                failures.append(_Failure(local, local, returncode, root_cause=True))

    culprits = [f for f in failures if f.root_cause or f.exitcode > 0] or failures
    stopped = [f for f in failures if f not in culprits]
    if culprits:
        names = ", ".join(
            f"rank {f.rank} (exit code {f.exitcode}{_signal_name(f.exitcode)})" for f in culprits
        )
        lines = [f"training job failed (torchrun exit code {returncode}): {names}"]
        if stopped:
            lines.append(
                "then stopped by torchrun: "
                + ", ".join(f"rank {f.rank}{_signal_name(f.exitcode)}" for f in stopped)
            )
    else:
        lines = [f"training job failed: torchrun exited with code {returncode}"]

    for failure in culprits:
        log = tailer.rank_log(failure.local_rank)
        trace = None
        if attempt is not None:
            trace = _error_file_traceback(attempt / str(failure.local_rank) / "error.json")
        if trace:
            body = trace.rstrip("\n").splitlines()[-ERROR_TAIL_LINES:]
            lines.append(f"--- rank {failure.rank} traceback (full log: {log}):")
        else:
            body = _tail(log, ERROR_TAIL_LINES)
            lines.append(f"--- rank {failure.rank}: last {len(body)} lines of {log}:")
        lines.extend(body)
    if not culprits:
        trace = _error_file_traceback(tailer.log_dir / _TORCHRUN_ERROR_FILE)
        if trace:
            lines.append("--- torchrun error:")
            lines.extend(trace.rstrip("\n").splitlines()[-ERROR_TAIL_LINES:])
        tail = list(torchrun_out.lines)[-ERROR_TAIL_LINES:]
        lines.append(f"--- last {len(tail)} lines of {torchrun_out.path}:")
        lines.extend(tail)
    return TrainingJobError(
        "\n".join(lines),
        returncode=returncode,
        failed_ranks=[f.rank for f in culprits],
        log_dir=tailer.log_dir,
    )
