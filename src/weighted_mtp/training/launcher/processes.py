"""The lifecycle of a job's processes: torchrun in its own session behind a parent-death
signal, the process groups of its workers (from the process table), SIGTERM turned into
``SystemExit`` while a job runs, and stopping every group of the job (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# One logger for the whole launcher package: the name users filter on (see the docs).
logger = logging.getLogger("weighted_mtp.training.launcher")

#: Seconds between SIGTERM and SIGKILL when stopping a job (also torchrun's own shutdown timeout
#: when it tears down the surviving ranks after one failed).
STOP_GRACE_SECONDS = 5


@contextlib.contextmanager
def _sigterm_raises_systemexit() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` for the duration, so cleanup code runs.

    Only in the main thread (signal handlers can only be set there) and only when nobody else
    handles SIGTERM: a framework's own handler is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        logger.warning("received SIGTERM: stopping the training job")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _no_sigint() -> Iterator[None]:
    # A second Ctrl-C while the job is being stopped would abandon its processes.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# Run in a fresh interpreter (-I -S: no site, nothing imported but os, signal, ctypes) that then
# execs torchrun: prctl(PR_SET_PDEATHSIG) survives the exec, and the pid stays torchrun's.
_PDEATHSIG_EXEC = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the launcher died before prctl took effect
    sys.exit(128 + int(signal.SIGTERM))
os.execv(sys.argv[2], sys.argv[2:])
"""


def _with_parent_death_signal(cmd: list[str]) -> list[str]:
    """``cmd`` behind an exec shim that asks Linux to SIGTERM torchrun if this process dies
    (even by SIGKILL); torchrun then stops its workers itself.

    Not a ``preexec_fn``: with one, CPython forks (no vfork) and runs Python in the child
    before the exec, including every ``os.register_at_fork`` hook (torch's calls
    ``torch.get_num_threads()``). Forked from a non-main thread of a process whose torch
    state earlier in-process work left behind (a test session, a notebook), that child
    died with SIGSEGV before torchrun started: "torchrun exited with code -11" and an
    empty torchrun.log. Without ``preexec_fn`` nothing but C runs between fork and exec.
    The signal is tied to the launching thread, as before: :func:`launch` returns only
    after torchrun has exited.
    """
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_EXEC, str(os.getpid()), *cmd]


def _process_table() -> list[tuple[int, int, int, bool]]:
    """``(pid, ppid, pgid, is_zombie)`` of every process, from /proc or else ``ps``."""
    rows: list[tuple[int, int, int, bool]] = []
    proc = Path("/proc")
    if (proc / "self" / "stat").exists():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # exited meanwhile
            # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
            fields = stat[stat.rfind(")") + 2 :].split()
            rows.append((int(entry.name), int(fields[1]), int(fields[2]), fields[0] in "ZX"))
        return rows
    out = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid=,pgid=,stat="], capture_output=True, text=True, check=False
    ).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            rows.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[3].startswith("Z")))
    return rows


class _JobProcesses:
    """The process groups of one job: torchrun's and one per worker.

    torchrun starts each worker with ``start_new_session=True``, so a worker (and anything it
    forks, e.g. data-loader processes) is in its own process group, out of reach of a signal to
    torchrun's group; they are recorded here by pgid while torchrun is their parent.
    """

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.groups: set[int] = {proc.pid}
        self._stopped = False

    def refresh(self) -> set[int]:
        """Record torchrun's new children's groups; return the recorded groups still alive."""
        table = _process_table()
        for _pid, ppid, pgid, _zombie in table:
            if ppid == self.proc.pid and pgid != self.proc.pid:
                self.groups.add(pgid)
        alive = {pgid for _pid, _ppid, pgid, zombie in table if not zombie}
        # A group that emptied is forgotten: its id may later be reused by someone else's.
        self.groups &= alive | {self.proc.pid}
        return self.groups & alive

    def _signal(self, groups: set[int], sig: signal.Signals) -> None:
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)

    def stop_all(self) -> None:
        """SIGTERM every group of the job, SIGKILL what is left after the grace period, reap
        torchrun. Idempotent; does nothing when everything has already exited."""
        if self._stopped:
            return
        self._stopped = True
        with _no_sigint():
            alive = self.refresh()
            if not alive and self.proc.poll() is not None:
                return
            logger.warning("stopping the training job (pids/groups %s)", sorted(alive))
            # Workers are signalled directly too, in case torchrun is stuck or already gone.
            self._signal(alive, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while time.monotonic() < deadline:
                self.proc.poll()
                alive = self.refresh()
                if not alive and self.proc.returncode is not None:
                    break
                time.sleep(0.05)
            else:
                logger.warning("job still running after %ss: SIGKILL", STOP_GRACE_SECONDS)
                self._signal(alive, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_GRACE_SECONDS)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while (alive := self.refresh()) and time.monotonic() < deadline:
                self._signal(alive, signal.SIGKILL)
                time.sleep(0.05)
            if alive:
                logger.error("could not stop process groups %s", sorted(alive))
