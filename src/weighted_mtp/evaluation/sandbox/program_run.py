"""One sandboxed run from start to clean-up: its uid, working directory, environment,
resource limits and the plan for the helper; afterwards, what the run's uid left behind.

The helper process and its output are supervised in ``supervision.py``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
from typing import Any

from weighted_mtp.evaluation.sandbox.child_process import SANDBOX_WORKDIR, SHARED_WRITABLE_DIRS
from weighted_mtp.evaluation.sandbox.guards import Isolation
from weighted_mtp.evaluation.sandbox.interpreter import _reachable_by_others
from weighted_mtp.evaluation.sandbox.supervision import (
    ExecutionResult,
    SandboxLimits,
    _spawn_and_collect,
)
from weighted_mtp.evaluation.sandbox.uid_pool import _UID_POOL

PROGRAM_NAME = "main.py"

# The interpreter's site-packages, so programs may import what is installed (numpy...).
_SITE_PACKAGES = tuple(dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib")))


def _environment(home: str, iso: Isolation | None = None) -> dict[str, str]:
    """A minimal environment: nothing of the evaluator's (credentials, tokens) leaks in."""
    site = _SITE_PACKAGES
    if iso is not None and iso.drop_uid and not iso.namespaces:
        site = tuple(p for p in site if _reachable_by_others(p))
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # Fixed hash seed: set/dict order of str keys, hence verdicts, are reproducible.
        "PYTHONHASHSEED": "0",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONPATH": os.pathsep.join(site),
        # Threads count against RLIMIT_NPROC; BLAS pools would otherwise hit it.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    if iso is not None and iso.library_path:
        env["LD_LIBRARY_PATH"] = iso.library_path
    return env


def _rlimits(limits: SandboxLimits) -> tuple[tuple[int, int, int], ...]:
    cpu = max(1, int(limits.cpu_seconds + 0.999))
    return (
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
        (resource.RLIMIT_NPROC, limits.max_processes, limits.max_processes),
        (resource.RLIMIT_CORE, 0, 0),
    )


def _run(
    iso: Isolation, source: str, stdin: str | bytes | None, limits: SandboxLimits
) -> ExecutionResult:
    uid = _UID_POOL.acquire() if iso.drop_uid else None
    workdir: str | None = None
    supervised = False
    cleanup = contextlib.ExitStack()
    try:
        program = source.encode("utf-8", errors="surrogateescape")
        program_file = None
        if iso.namespaces:
            # The helper writes it into the private tmpfs, from this unlinked file.
            cwd, home = "/", SANDBOX_WORKDIR
            program_file = _temporary_file(cleanup, program)
        else:
            workdir = tempfile.mkdtemp(prefix="wmtp-sandbox-")
            with open(os.path.join(workdir, PROGRAM_NAME), "wb") as handle:
                handle.write(program)
            if uid is not None:
                os.chown(workdir, uid, uid)
            cwd = home = workdir
        python = iso.python or sys.executable
        plan = {
            "uid": uid,
            "namespaces": iso.namespaces,
            "masks": [[masked, list(keeps)] for masked, keeps in iso.masks],
            "rlimits": [list(triple) for triple in _rlimits(limits)],
            "program_name": PROGRAM_NAME,
            "program_fd": program_file.fileno() if program_file else None,
            "tmpfs_bytes": limits.file_size_bytes + len(program) + 1024**2,
            "landlock": iso.landlock and not iso.namespaces,
            "seccomp_bpf": iso.seccomp_bpf,
        }
        stdin_file = (
            _temporary_file(cleanup, stdin.encode() if isinstance(stdin, str) else stdin)
            if stdin
            else None
        )
        result, supervised = _spawn_and_collect(
            plan, python, cwd, _environment(home, iso), stdin_file, limits
        )
        # 255: the supervisor's own failure path (or the program's choice): scan anyway.
        supervised = supervised and result.returncode != 255
        return result
    finally:
        cleanup.close()
        if workdir is not None:
            _remove_tree(workdir)
        if uid is not None:
            # The supervisor kills the uid's processes itself; the /proc scan (~10 ms of
            # the evaluator's time) is for a supervisor that was killed or a failed set-up.
            if not iso.namespaces and not supervised:
                _kill_uid(uid)
            if not iso.namespaces and not iso.landlock:
                _remove_litter(uid)
            _UID_POOL.release(uid)


def _temporary_file(cleanup: contextlib.ExitStack, content: bytes) -> Any:
    # A file, not a pipe: a program that never reads its input cannot block us.
    handle = cleanup.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
    handle.write(content)
    handle.flush()
    handle.seek(0)
    return handle


def _kill_uid(uid: int) -> None:
    """Backstop after the supervisor's own kill: end any process left with the run's uid."""
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


def _remove_litter(uid: int) -> None:
    """Without Landlock: remove what the run's uid left at the top of the shared dirs.

    So that a later run (maybe with the same uid) finds nothing; what it put deeper, inside
    another uid's world-writable subdirectory, stays (docs/sandbox.md).
    """
    for directory in SHARED_WRITABLE_DIRS:
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid == uid:
                        if entry.is_dir(follow_symlinks=False):
                            shutil.rmtree(entry.path, ignore_errors=True)
                        else:
                            os.unlink(entry.path)


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
