"""Per-run sandbox uids (root mode): the pool that hands them out exclusively across every
evaluator on the machine, and the search for processes a finished run left behind."""

from __future__ import annotations

import atexit
import collections
import fcntl
import logging
import os
import pwd
import shutil
import tempfile
import threading
import time

from weighted_mtp.evaluation.sandbox.runtime_dir import (
    DEFAULT_RUNTIME_DIR,
    RUNTIME_DIR_ENV,
    _safe_cache_root,
)

logger = logging.getLogger(__name__)

# Per-run uids for sandboxed programs when running as root: far above any real account so
# that limits counted per uid (RLIMIT_NPROC) and signals never involve another process.
SANDBOX_UID_BASE = 1_900_000_000
SANDBOX_UID_COUNT = 1024


class _UidPool:
    """Hands out sandbox uids no other run holds, in this process or any other.

    Distinct uids keep RLIMIT_NPROC and the end-of-run ``kill(-1)`` per run. Two evaluators
    on one machine (two evaluations, a test run next to an evaluation) draw from the same
    range, so each held uid is also an exclusive ``flock`` on ``<lock_dir>/<uid>``, released
    when the run ends or its process dies.
    """

    def __init__(self, base: int, count: int, lock_dir: str | None = None) -> None:
        self._free = collections.deque(range(base, base + count))
        self._cond = threading.Condition()
        self._held: dict[int, int] = {}
        self._lock_dir = lock_dir

    def _directory(self) -> str:
        if self._lock_dir is None:
            self._lock_dir = _uid_lock_dir()
        return self._lock_dir

    def held(self) -> set[int]:
        with self._cond:
            return set(self._held)

    def try_lock(self, uid: int) -> int | None:
        """The locked descriptor of ``uid``'s lock file, or None if another holder has it."""
        path = os.path.join(self._directory(), str(uid))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def acquire(self) -> int:
        with self._cond:
            while True:
                for _ in range(len(self._free)):
                    uid = self._free.popleft()
                    fd = self.try_lock(uid)
                    if fd is not None:
                        self._held[uid] = fd
                        return uid
                    self._free.append(uid)  # another process holds it
                self._cond.wait(timeout=0.05)

    def release(self, uid: int) -> None:
        with self._cond:
            os.close(self._held.pop(uid))  # closing the descriptor drops the flock
            self._free.append(uid)
            self._cond.notify()


def lasting_orphans(grace_s: float = 5.0) -> list[int]:
    """:func:`orphaned_processes` that are still alive after ``grace_s`` seconds.

    A process of another evaluator's finished run may still be on its way out (a pid
    namespace's members are killed asynchronously when its init exits) for a moment after
    that run released its uid; one that outlives the grace period was left behind.
    """
    deadline = time.monotonic() + grace_s
    while True:
        found = orphaned_processes()
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def orphaned_processes() -> list[int]:
    """Live processes of a sandbox uid that no run holds: what a finished run left behind.

    A uid is held (flocked) from before its run starts until its processes are gone, so a
    process whose uid nobody holds belongs to no run, whichever evaluator on the machine
    started it; processes of runs still going on elsewhere are not counted.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
            uid = int(fields["Uid"].split()[1])
        except (OSError, KeyError, ValueError):
            continue
        if not SANDBOX_UID_BASE <= uid < SANDBOX_UID_BASE + SANDBOX_UID_COUNT:
            continue
        if fields["State"].split()[0] == "Z":
            continue  # runs nothing; reaping it is up to its parent
        if uid in _UID_POOL.held():
            continue  # a run of ours is going on
        fd = _UID_POOL.try_lock(uid)
        if fd is None:
            continue  # another evaluator's run is going on
        os.close(fd)
        found.append(int(entry))
    return found


def _uid_lock_dir() -> str:
    root = os.environ.get(RUNTIME_DIR_ENV) or DEFAULT_RUNTIME_DIR
    try:
        directory = os.path.join(_safe_cache_root(root), "uid-locks")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        return directory
    except OSError as exc:
        logger.warning(
            "Sandbox: %s unusable (%s); sandbox uids are exclusive within this process only.",
            root,
            exc,
        )
        directory = tempfile.mkdtemp(prefix="wmtp-sandbox-uids-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        return directory


_UID_POOL = _UidPool(SANDBOX_UID_BASE, SANDBOX_UID_COUNT)


def _uid_is_unused(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False
