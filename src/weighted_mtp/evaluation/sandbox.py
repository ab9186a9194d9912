"""Sandboxed execution of generated programs.

``run_program`` runs one program in a fresh interpreter (``sys.executable``) with the
isolation described in ``docs/sandbox.md``: own network, mount and pid namespaces when the
evaluator runs as root, a per-run unprivileged uid, a fresh tmpfs working directory,
resource limits, a scrubbed environment, a wall-time kill of the whole process group and a
cap on captured output. The child-side set-up (between fork and exec) is in
``sandbox_child``; the verdicts per sample are in ``execution``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pwd
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from weighted_mtp.evaluation.sandbox_child import SANDBOX_WORKDIR, SHARED_WRITABLE_DIRS, ChildPlan

logger = logging.getLogger(__name__)

PROGRAM_NAME = "main.py"
# Per-run uids for sandboxed programs when running as root: far above any real account so
# that limits counted per uid (RLIMIT_NPROC) and signals never involve another process.
SANDBOX_UID_BASE = 1_900_000_000
SANDBOX_UID_COUNT = 1024


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


@dataclass(frozen=True)
class Isolation:
    """Which isolation this machine allows (decided once per evaluator process)."""

    namespaces: bool  # own network (loopback down), mount (tmpfs) and pid namespaces
    drop_uid: bool  # programs run as a per-run unprivileged uid
    masks: tuple[tuple[str, tuple[str, ...]], ...]

    def describe(self) -> str:
        parts = ["rlimits", "scrubbed env", "process-group kill", "supervisor process"]
        if self.drop_uid:
            parts.append("unprivileged uid")
        if self.namespaces:
            parts.append("no network, private tmpfs, own pid namespace")
        return ", ".join(parts)


# ----------------------------------------------------------------------------- isolation


class _UidPool:
    """Hands out distinct sandbox uids to concurrent runs (so NPROC and kill(-1) stay per run)."""

    def __init__(self, base: int, count: int) -> None:
        self._free = list(range(base + count - 1, base - 1, -1))
        self._cond = threading.Condition()

    def acquire(self) -> int:
        with self._cond:
            while not self._free:
                self._cond.wait()
            return self._free.pop()

    def release(self, uid: int) -> None:
        with self._cond:
            self._free.append(uid)
            self._cond.notify()


_UID_POOL = _UidPool(SANDBOX_UID_BASE, SANDBOX_UID_COUNT)


def _interpreter_masks() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Directories hiding the interpreter from other uids (e.g. ``/root`` 0700 with pyenv)."""
    needed = {
        os.path.realpath(p)
        for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
    }
    needed.add(os.path.dirname(os.path.realpath(sys.executable)))
    masks: dict[str, set[str]] = {}
    for path in sorted(needed):
        # Fresh tmpfs hide the shared writable dirs; an interpreter inside one (a venv in a
        # checkout under /tmp) is mounted back.
        shared = [d for d in SHARED_WRITABLE_DIRS if path.startswith(d + "/")]
        if shared:
            masks.setdefault(shared[0], set()).add(path)
            continue
        ancestor = "/"
        for part in path.strip("/").split("/"):
            ancestor = os.path.join(ancestor, part)
            if ancestor == path:
                break
            if not os.stat(ancestor).st_mode & 0o001:
                masks.setdefault(ancestor, set()).add(path)
                break
    result = []
    for masked, keeps in sorted(masks.items()):
        # A kept path inside another kept path comes back with its parent.
        tops = [k for k in sorted(keeps) if not any(k.startswith(o + "/") for o in keeps)]
        result.append((masked, tuple(tops)))
    return tuple(result)


def _uid_is_unused(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False


ALLOW_ROOT_ENV = "WMTP_SANDBOX_ALLOW_ROOT"


class SandboxUnavailableError(RuntimeError):
    """This machine can neither isolate programs nor run them without root."""


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """Probe once what the OS allows: namespaces and a uid drop need root (CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        logger.warning(
            "Sandbox without root: programs run as the evaluator's uid, with rlimits and a "
            "supervisor but without network isolation (see docs/sandbox.md)."
        )
        return Isolation(namespaces=False, drop_uid=False, masks=())
    masks = _interpreter_masks()
    drop_uid = _uid_is_unused(SANDBOX_UID_BASE)
    candidate = Isolation(namespaces=True, drop_uid=drop_uid, masks=masks)
    try:
        probe = _run(candidate, "print(6 * 7)", None, SandboxLimits(wall_seconds=30.0))
        if probe.returncode == 0 and probe.stdout.strip() == "42":
            return candidate
        reason = probe.stderr.strip() or f"exit status {probe.returncode}"
    except (subprocess.SubprocessError, OSError) as exc:  # the child's set-up failed
        reason = str(exc)
    logger.warning("Sandbox namespaces unavailable (%s); falling back.", reason)
    # Without a mount namespace the interpreter must be reachable by the sandbox uid as is.
    drop_uid = drop_uid and not masks
    if not drop_uid:
        if os.environ.get(ALLOW_ROOT_ENV) != "1":
            raise SandboxUnavailableError(
                f"cannot isolate model-written programs ({reason}), and they cannot drop root "
                "either (the interpreter is not reachable by another uid): they would run as "
                "root, where os.kill(-1, 9) ends every process on the machine. Run the "
                "evaluation where namespaces work (root with CAP_SYS_ADMIN), as a non-root "
                f"user, or set {ALLOW_ROOT_ENV}=1 to accept the risk."
            )
        logger.warning("Sandbox cannot drop root: programs run as root with rlimits only.")
    return Isolation(namespaces=False, drop_uid=drop_uid, masks=())


# ----------------------------------------------------------------------------- run_program


# The interpreter's site-packages, so programs may import what is installed (numpy...).
_SITE_PACKAGES = os.pathsep.join(
    dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
)


def _environment(home: str) -> dict[str, str]:
    """A minimal environment: nothing of the evaluator's (credentials, tokens) leaks in."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # Fixed hash seed: set/dict order of str keys, hence verdicts, are reproducible.
        "PYTHONHASHSEED": "0",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONPATH": _SITE_PACKAGES,
        # Threads count against RLIMIT_NPROC; BLAS pools would otherwise hit it.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _rlimits(limits: SandboxLimits) -> tuple[tuple[int, int, int], ...]:
    cpu = max(1, int(limits.cpu_seconds + 0.999))
    return (
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
        (resource.RLIMIT_NPROC, limits.max_processes, limits.max_processes),
        (resource.RLIMIT_CORE, 0, 0),
    )


def run_program(
    source: str, stdin: str | bytes | None = None, limits: SandboxLimits | None = None
) -> ExecutionResult:
    """Run Python ``source`` in the sandbox with ``stdin`` as its standard input."""
    return _run(isolation(), source, stdin, limits or SandboxLimits())


def _run(
    iso: Isolation, source: str, stdin: str | bytes | None, limits: SandboxLimits
) -> ExecutionResult:
    uid = _UID_POOL.acquire() if iso.drop_uid else None
    workdir: str | None = None
    cleanup = contextlib.ExitStack()
    try:
        program = source.encode("utf-8", errors="surrogateescape")
        if iso.namespaces:
            cwd, home = "/", SANDBOX_WORKDIR
        else:
            workdir = tempfile.mkdtemp(prefix="wmtp-sandbox-")
            with open(os.path.join(workdir, PROGRAM_NAME), "wb") as handle:
                handle.write(program)
            if uid is not None:
                os.chown(workdir, uid, uid)
            cwd = home = workdir
        plan = ChildPlan(
            uid=uid,
            namespaces=iso.namespaces,
            rlimits=_rlimits(limits),
            program_name=PROGRAM_NAME,
            program=program,
            tmpfs_bytes=limits.file_size_bytes + len(program) + 1024**2,
            masks=iso.masks,
        )
        stdin_file = None
        if stdin:
            # A file, not a pipe: a program that never reads its input cannot block us.
            stdin_file = cleanup.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
            stdin_file.write(stdin.encode() if isinstance(stdin, str) else stdin)
            stdin_file.seek(0)
        return _spawn_and_collect(plan, cwd, home, stdin_file, limits)
    finally:
        cleanup.close()
        if workdir is not None:
            _remove_tree(workdir)
        if uid is not None:
            if not iso.namespaces:
                _kill_uid(uid)
            _UID_POOL.release(uid)


def _spawn_and_collect(
    plan: ChildPlan, cwd: str, home: str, stdin_file: Any, limits: SandboxLimits
) -> ExecutionResult:
    # -S -s -P -B is -I without -E (the environment is ours, so PYTHONHASHSEED applies) and
    # without site: .pth processing costs ~3 ms per start; PYTHONPATH names site-packages.
    args = [sys.executable, "-S", "-s", "-P", "-B", PROGRAM_NAME]
    start = time.perf_counter()
    proc = subprocess.Popen(
        args,
        stdin=stdin_file if stdin_file is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=_environment(home),
        start_new_session=True,
        preexec_fn=plan.preexec,
    )
    deadline = start + limits.wall_seconds
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
        _stop(proc.pid)
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
    return ExecutionResult(
        returncode=returncode,
        stdout=bytes(buffers[out_fd][:cap]).decode("utf-8", "replace"),
        stderr=bytes(buffers[err_fd][-cap:]).decode("utf-8", "replace"),
        duration_s=duration,
        cpu_s=cpu,
        timed_out=timed_out,
        cpu_limited=cpu_limited,
        output_limited=output_limited,
    )


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


def _stop(pid: int) -> None:
    """Stop a run: ask the supervisor to kill the program, then kill whatever is left."""
    if not _has_exited(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        _wait_exit(pid, time.perf_counter() + 1.0)
    _kill_group(pid)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_uid(uid: int) -> None:
    """Kill every process of a sandbox uid (fallback mode: no pid namespace to do it for us)."""
    for _ in range(10):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as fh:
                    for line in fh:
                        if line.startswith("Uid:"):
                            if int(line.split()[1]) == uid:
                                found = True
                                os.kill(int(entry), signal.SIGKILL)
                            break
            except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
                continue
        if not found:
            return
        time.sleep(0.01)


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
