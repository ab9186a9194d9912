"""Process supervision of one run: start the helper, hold the wall-time limit, capture
output up to its cap, stop what is left, and turn the outcome into an ``ExecutionResult``.

``SandboxLimits`` is what a run may use; the helper (``child_process.py``) applies the limits
inside, this side enforces the wall time and the output cap from outside.
"""

from __future__ import annotations

import contextlib
import errno
import marshal
import os
import select
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from weighted_mtp.evaluation.sandbox import child_process

HELPER = os.path.abspath(child_process.__file__)


class SandboxSetupError(OSError):
    """The sandbox helper could not set up the program's isolation."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits (per test for stdio tasks).

    ``cpu_seconds``: RLIMIT_CPU (SIGXCPU, then SIGKILL one second later).
    ``wall_seconds``: the evaluator kills the process group after this long.
    ``memory_bytes``: RLIMIT_AS per process. ``file_size_bytes``: RLIMIT_FSIZE per file, and
    the size of the sandbox's tmpfs. ``max_processes``: RLIMIT_NPROC (processes and threads
    of the sandbox uid). ``max_output_bytes``: stdout and stderr are each captured up to
    this size; a program writing more is killed.
    """

    cpu_seconds: float = 5.0
    wall_seconds: float = 10.0
    memory_bytes: int = 2 * 1024**3
    file_size_bytes: int = 16 * 1024**2
    max_processes: int = 8
    max_output_bytes: int = 4 * 1024**2


@dataclass(frozen=True)
class ExecutionResult:
    """What one run of a program did.

    ``returncode`` follows ``subprocess`` (negative: killed by that signal).
    ``timed_out``: wall time exceeded (the evaluator killed it). ``cpu_limited``: stopped by
    RLIMIT_CPU. ``output_limited``: killed for writing more than ``max_output_bytes``.
    """

    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    cpu_s: float
    timed_out: bool = False
    cpu_limited: bool = False
    output_limited: bool = False


def _spawn_and_collect(
    plan: dict[str, Any],
    python: str,
    cwd: str,
    env: dict[str, str],
    stdin_file: Any,
    limits: SandboxLimits,
) -> tuple[ExecutionResult, bool]:
    """Run the helper and collect the program's outcome; also whether the supervisor exited
    by itself (so its clean-up ran)."""
    status_read, status_write = os.pipe()
    plan = {**plan, "status_fd": status_write, "evaluator_pid": os.getpid()}
    pass_fds = [status_write] + ([plan["program_fd"]] if plan["program_fd"] is not None else [])
    # The helper runs the program in its own interpreter after the set-up, so it starts
    # with the program's flags: -S -s -P -B is -I without -E (the environment is ours, so
    # PYTHONHASHSEED applies) and without site (.pth processing costs ~3 ms per start;
    # PYTHONPATH names site-packages).
    args = [python, "-S", "-s", "-P", "-B", HELPER, marshal.dumps(plan).hex()]
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(
            args,
            stdin=stdin_file if stdin_file is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
            pass_fds=pass_fds,
        )
    finally:
        os.close(status_write)
    deadline = start + limits.wall_seconds
    try:
        setup_error = _read_status(status_read, deadline)
    finally:
        os.close(status_read)
    if setup_error:
        _stop(proc.pid)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        raise SandboxSetupError(errno.EPERM, setup_error)
    timed_out = output_limited = False
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    buffers = {out_fd: bytearray(), err_fd: bytearray()}
    selector = selectors.DefaultSelector()
    pidfd: int | None = None
    try:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        open_fds = set(buffers)
        # A pidfd reports the exit without polling; Linux < 5.3 falls back to short polls.
        pidfd = _pidfd(proc.pid)
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ)
        exited = False
        while open_fds or not exited:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                # Past the wall limit, unless the program is done and only a straggler
                # (fallback mode: an escaped child) still holds the pipes.
                timed_out = not exited
                break
            poll = remaining if pidfd is not None or open_fds else min(remaining, 0.002)
            for key, _ in selector.select(poll if pidfd is not None else min(poll, 0.05)):
                if key.fd == pidfd:
                    exited = True
                    selector.unregister(pidfd)
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    open_fds.discard(key.fd)
                    continue
                buffers[key.fd] += chunk
                if len(buffers[key.fd]) > limits.max_output_bytes:
                    output_limited = True
            if output_limited:
                break
            if pidfd is None and not exited:
                exited = _has_exited(proc.pid)
            if exited and open_fds:
                deadline = min(deadline, time.perf_counter() + 0.5)
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)
        supervised = _stop(proc.pid)
        # wait4, not Popen.wait: its rusage includes the program reaped by the supervisor.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        proc.stderr.close()
    duration = time.perf_counter() - start
    cpu = usage.ru_utime + usage.ru_stime
    returncode = proc.returncode
    cpu_limited = (
        not timed_out
        and returncode in (-signal.SIGXCPU, -signal.SIGKILL)
        and (returncode == -signal.SIGXCPU or cpu >= limits.cpu_seconds * 0.9)
    )
    cap = limits.max_output_bytes
    result = ExecutionResult(
        returncode=returncode,
        stdout=bytes(buffers[out_fd][:cap]).decode("utf-8", "replace"),
        stderr=bytes(buffers[err_fd][-cap:]).decode("utf-8", "replace"),
        duration_s=duration,
        cpu_s=cpu,
        timed_out=timed_out,
        cpu_limited=cpu_limited,
        output_limited=output_limited,
    )
    return result, supervised


def _read_status(fd: int, deadline: float) -> str:
    """The helper's set-up error, or "" once the set-up is done (the pipe closed)."""
    message = b""
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return ""  # a hung set-up is handled like a hung program: the wall limit
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return message.decode("utf-8", "replace")
        message += chunk


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    """True once ``pid`` can be reaped (it is not reaped here)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_exit(pid: int, deadline: float) -> bool:
    """Wait until ``pid`` has exited or the deadline passes; True if it exited."""
    while not _has_exited(pid):
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return False
        time.sleep(min(0.005, remaining))
    return True


def _stop(pid: int) -> bool:
    """Stop a run: ask the supervisor to kill the program, then kill whatever is left.

    True if the supervisor exited by itself (after its own clean-up), False if it had to be
    killed too.
    """
    clean = True
    if not _has_exited(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        clean = _wait_exit(pid, time.perf_counter() + 1.0)
    _kill_group(pid)
    return clean


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
