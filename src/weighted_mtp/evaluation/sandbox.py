"""Sandboxed execution of generated programs.

``run_program`` runs one program in a fresh interpreter with the isolation described in
``docs/sandbox.md``. What is possible depends on the machine, probed once per evaluator
process by ``isolation()``:

* root with ``CAP_SYS_ADMIN``: own network, mount and pid namespaces, a fresh tmpfs, a
  per-run unprivileged uid;
* root without it (a default container): a per-run unprivileged uid running a copy of the
  interpreter that other uids can reach, Landlock limiting writes to the run's directory,
  and every process of the uid killed after the run;
* not root: the evaluator's own uid.

In every mode: resource limits, a scrubbed environment, a supervisor between the evaluator
and the program, a process-group kill at the wall-time limit, a cap on captured output,
``PR_SET_NO_NEW_PRIVS`` and, where libseccomp is installed, a seccomp filter that denies
``socket()``. The set-up runs in a helper process (``sandbox_child.py``), never between fork
and exec of the multi-threaded evaluator; the verdicts per sample are in ``execution``.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import functools
import hashlib
import logging
import marshal
import os
import pwd
import resource
import select
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from weighted_mtp.evaluation import sandbox_child
from weighted_mtp.evaluation.sandbox_child import (
    SANDBOX_WORKDIR,
    SHARED_WRITABLE_DIRS,
)

logger = logging.getLogger(__name__)

PROGRAM_NAME = "main.py"
# Per-run uids for sandboxed programs when running as root: far above any real account so
# that limits counted per uid (RLIMIT_NPROC) and signals never involve another process.
SANDBOX_UID_BASE = 1_900_000_000
SANDBOX_UID_COUNT = 1024
HELPER = os.path.abspath(sandbox_child.__file__)
# Where the interpreter copy for other uids lives (root mode without namespaces only).
RUNTIME_DIR_ENV = "WMTP_SANDBOX_RUNTIME_DIR"
DEFAULT_RUNTIME_DIR = "/var/cache/weighted-mtp"


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


@dataclass(frozen=True)
class Isolation:
    """Which isolation this machine allows (decided once per evaluator process).

    ``python``: the interpreter programs run (empty: ``sys.executable``); in root mode
    without namespaces a copy other uids can reach, with ``library_path`` as its
    ``LD_LIBRARY_PATH`` when it links a shared libpython. ``seccomp_bpf``: the compiled
    filter denying ``socket()`` (empty: libseccomp unavailable).
    """

    namespaces: bool  # own network (loopback down), mount (tmpfs) and pid namespaces
    drop_uid: bool  # programs run as a per-run unprivileged uid
    masks: tuple[tuple[str, tuple[str, ...]], ...]
    landlock: bool = False  # writes only beneath the run's working directory
    seccomp_bpf: bytes = b""
    python: str = ""
    library_path: str = ""

    @property
    def seccomp(self) -> bool:
        return bool(self.seccomp_bpf)

    def guards(self) -> dict[str, bool]:
        """Every guard by name, with whether it is active here."""
        guards = {
            "rlimits": True,
            "scrubbed env": True,
            "process-group kill": True,
            "supervisor process": True,
            "no-new-privileges": True,
            # Pid namespace; else kill(-1) as the run's uid; else the supervisor, a child
            # subreaper, kills what the program left.
            "leftover processes killed": True,
            "unprivileged uid": self.drop_uid,
            "network namespace (no network)": self.namespaces,
            "private tmpfs": self.namespaces,
            "own pid namespace": self.namespaces,
            "seccomp: socket() denied": self.seccomp,
        }
        if not self.namespaces:  # with namespaces the private tmpfs confines writes
            guards["Landlock: writes only in the working directory"] = self.landlock
        return guards

    def describe(self) -> str:
        return ", ".join(name for name, active in self.guards().items() if active)

    def missing(self) -> str:
        return ", ".join(name for name, active in self.guards().items() if not active) or "none"


# ----------------------------------------------------------------------------- isolation


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


def _interpreter_paths() -> set[str]:
    """What a program's interpreter must reach: executable, prefixes, stdlib, libpython."""
    paths = {
        os.path.realpath(p)
        for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
    }
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    return paths


def _interpreter_masks() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Directories hiding the interpreter from other uids (e.g. ``/root`` 0700 with pyenv)."""
    masks: dict[str, set[str]] = {}
    for path in sorted(_interpreter_paths()):
        # Fresh tmpfs hide the shared writable dirs; an interpreter inside one (a venv in a
        # checkout under /tmp) is mounted back.
        shared = [d for d in SHARED_WRITABLE_DIRS if path.startswith(d + "/")]
        if shared:
            masks.setdefault(shared[0], set()).add(path)
            continue
        blocked = _first_blocked_ancestor(path)
        if blocked is not None:
            masks.setdefault(blocked, set()).add(path)
    result = []
    for masked, keeps in sorted(masks.items()):
        # A kept path inside another kept path comes back with its parent.
        tops = [k for k in sorted(keeps) if not any(k.startswith(o + "/") for o in keeps)]
        result.append((masked, tuple(tops)))
    return tuple(result)


def _first_blocked_ancestor(path: str) -> str | None:
    """The first proper ancestor of ``path`` that other uids cannot traverse, if any."""
    ancestor = "/"
    for part in path.strip("/").split("/"):
        ancestor = os.path.join(ancestor, part)
        if ancestor == path:
            return None
        if not os.stat(ancestor).st_mode & stat.S_IXOTH:
            return ancestor
    return None


def _reachable_by_others(path: str) -> bool:
    """Whether an unrelated uid can open ``path`` (read, and traverse if a directory)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    needed = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return _first_blocked_ancestor(path) is None and mode & needed == needed


def _libpython() -> str | None:
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return None
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY") or ""
    path = os.path.join(libdir, name)
    return path if name and os.path.exists(path) else None


def _stdlib_dirs() -> list[str]:
    # The base installation's, not a venv's (whose platstdlib is the venv's lib dir).
    base = {
        "base": sys.base_prefix,
        "platbase": sys.base_exec_prefix,
        "installed_base": sys.base_prefix,
        "installed_platbase": sys.base_exec_prefix,
    }
    paths = sysconfig.get_paths(vars=base)
    return sorted({os.path.realpath(paths["stdlib"]), os.path.realpath(paths["platstdlib"])})


def _link_or_copy(src: str, dst: str) -> None:
    # A hard link costs no space and no time; across file systems, a copy.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _safe_cache_root(root: str) -> str:
    """``root`` created if needed, refused unless only we can write to it."""
    os.makedirs(root, mode=0o755, exist_ok=True)
    info = os.lstat(root)
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise PermissionError(
            f"{root}: must be a directory owned by uid {os.geteuid()} and writable only by it "
            f"(set {RUNTIME_DIR_ENV} to another directory)"
        )
    os.chmod(root, 0o755)
    return root


def _runtime_for_other_uids() -> tuple[str, str]:
    """``(python, library_path)`` that a sandbox uid can execute.

    The interpreter as installed when other uids can reach it; otherwise a copy (hard links
    where possible) of its executable, standard library and libpython, without
    site-packages, in a root-owned 0755 directory. Nothing of the user's home becomes
    reachable: the 0700 directory keeps its mode and the copy holds only the runtime.
    """
    real = os.path.realpath(sys.executable)
    libpython = _libpython()
    needed = [real, *_stdlib_dirs(), *([libpython] if libpython else [])]
    if all(_reachable_by_others(p) for p in needed):
        return real, ""
    base = os.path.realpath(sys.base_prefix)
    outside = [p for p in needed if not p.startswith(base + "/")]
    if outside:
        raise OSError(f"cannot copy the interpreter: {outside} outside its prefix {base}")
    info = os.stat(real)
    key = hashlib.sha256(f"{real}|{info.st_mtime_ns}|{info.st_size}|{sys.version}".encode())
    root = os.environ.get(RUNTIME_DIR_ENV) or DEFAULT_RUNTIME_DIR
    try:
        root = _safe_cache_root(root)
    except OSError as exc:
        if os.environ.get(RUNTIME_DIR_ENV):
            raise
        logger.warning(
            "Sandbox: %s unusable (%s); copying the interpreter to a temp dir.", root, exc
        )
        root = _safe_cache_root(tempfile.mkdtemp(prefix="wmtp-sandbox-runtime-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    dest = os.path.join(root, f"python-{key.hexdigest()[:16]}")
    python = os.path.join(dest, os.path.relpath(real, base))
    library_path = (
        os.path.join(dest, os.path.relpath(os.path.dirname(libpython), base)) if libpython else ""
    )
    if not os.path.exists(os.path.join(dest, ".complete")):
        build = tempfile.mkdtemp(prefix=".build-", dir=root)
        try:
            os.chmod(build, 0o755)
            for directory in _stdlib_dirs():
                shutil.copytree(
                    directory,
                    os.path.join(build, os.path.relpath(directory, base)),
                    ignore=shutil.ignore_patterns("site-packages", "test", "config-*"),
                    copy_function=_link_or_copy,
                    dirs_exist_ok=True,
                )
            for path in (real, libpython):
                if path:
                    target = os.path.join(build, os.path.relpath(path, base))
                    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
                    _link_or_copy(path, target)
            for dirpath, dirnames, _ in os.walk(build):
                for name in dirnames:
                    os.chmod(os.path.join(dirpath, name), 0o755)
            open(os.path.join(build, ".complete"), "w").close()  # noqa: SIM115
            try:
                os.rename(build, dest)
            except OSError as exc:  # another evaluator finished first
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        finally:
            shutil.rmtree(build, ignore_errors=True)
        logger.info("Sandbox: interpreter copied to %s for the sandbox uids.", dest)
    return python, library_path


def _seccomp_filter() -> bytes:
    """The classic-BPF program denying ``socket()`` (and io_uring, which can open sockets)."""
    try:
        import pyseccomp
    except Exception as exc:  # noqa: BLE001 - ImportError, or libseccomp.so missing
        logger.warning("Sandbox: no seccomp filter (libseccomp unavailable: %s).", exc)
        return b""
    filt = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
    filt.add_rule(pyseccomp.ERRNO(errno.EACCES), "socket")
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        filt.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
    with tempfile.TemporaryFile() as handle:
        filt.export_bpf(handle)
        handle.seek(0)
        return handle.read()


def _landlock_available() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(
        sandbox_child.SYS_LANDLOCK_CREATE_RULESET,
        None,
        0,
        sandbox_child.LANDLOCK_CREATE_RULESET_VERSION,
    )
    return abi >= 1


def _uid_is_unused(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False


ALLOW_ROOT_ENV = "WMTP_SANDBOX_ALLOW_ROOT"


class SandboxUnavailableError(RuntimeError):
    """This machine can neither isolate programs nor run them without root."""


def _probe(candidate: Isolation) -> str | None:
    """None if ``candidate`` runs a program as intended, else why not."""
    source = "import os\nprint(6 * 7, os.getuid())\n"
    try:
        result = _run(candidate, source, None, SandboxLimits(wall_seconds=30.0))
    except (subprocess.SubprocessError, OSError) as exc:
        return str(exc)
    words = result.stdout.split()
    if result.returncode == 0 and len(words) == 2 and words[0] == "42":
        uid = int(words[1])
        if uid >= SANDBOX_UID_BASE if candidate.drop_uid else uid == os.getuid():
            return None
    return result.stderr.strip() or f"exit status {result.returncode}: {result.stdout!r}"


def _first_working(candidate: Isolation) -> tuple[Isolation | None, str]:
    """``candidate``, or it without seccomp and/or Landlock, whichever runs first; else why not.

    A container's own seccomp profile may forbid installing filters or Landlock: those
    guards are then left out (and reported missing), not the mode.
    """
    variants = [
        candidate,
        dataclasses.replace(candidate, seccomp_bpf=b""),
        dataclasses.replace(candidate, landlock=False),
        dataclasses.replace(candidate, seccomp_bpf=b"", landlock=False),
    ]
    first_reason = ""
    for variant in dict.fromkeys(variants):  # without repeats, in order
        reason = _probe(variant)
        if reason is None:
            if variant != candidate:
                logger.warning("Sandbox: %s; running without the guards it needs.", first_reason)
            return variant, ""
        first_reason = first_reason or reason
    return None, first_reason


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """Probe once which guards the OS allows, strongest first, and log the result."""
    bpf = _seccomp_filter()
    landlock = _landlock_available()
    user = Isolation(namespaces=False, drop_uid=False, masks=(), landlock=landlock, seccomp_bpf=bpf)
    if os.geteuid() != 0:
        iso, reason = _first_working(user)
        if iso is None:
            raise SandboxUnavailableError(f"cannot run programs at all: {reason}")
        _log_choice(iso, "not root")
        return iso
    reasons = []
    drop_uid = _uid_is_unused(SANDBOX_UID_BASE)
    if not drop_uid:
        reasons.append(f"uid {SANDBOX_UID_BASE} belongs to an account")
    full = Isolation(
        namespaces=True, drop_uid=drop_uid, masks=_interpreter_masks(), seccomp_bpf=bpf
    )
    iso, reason = _first_working(full)
    if iso is not None:
        _log_choice(iso, "" if iso.drop_uid else reasons[0])
        return iso
    reasons.append(f"namespaces: {reason}")
    if drop_uid:
        try:
            python, library_path = _runtime_for_other_uids()
            container = dataclasses.replace(
                user, drop_uid=True, python=python, library_path=library_path
            )
            iso, reason = _first_working(container)
        except OSError as exc:
            iso, reason = None, f"interpreter for other uids: {exc}"
        if iso is not None:
            _log_choice(iso, reasons[-1])
            return iso
        reasons.append(f"uid drop: {reason}")
    why = "; ".join(reasons)
    if os.environ.get(ALLOW_ROOT_ENV) != "1":
        raise SandboxUnavailableError(
            f"cannot isolate model-written programs ({why}): they would run as root, where "
            "os.kill(-1, 9) ends every process on the machine. Run the evaluation as root with "
            "CAP_SETUID/CAP_SETGID (any container) or as a non-root user, or set "
            f"{ALLOW_ROOT_ENV}=1 to accept the risk."
        )
    iso, reason = _first_working(user)
    if iso is None:
        raise SandboxUnavailableError(f"cannot run programs at all: {why}; as root: {reason}")
    _log_choice(iso, f"{ALLOW_ROOT_ENV}=1 and {why}")
    return iso


def _log_choice(iso: Isolation, why: str) -> None:
    if iso.namespaces and iso.drop_uid and iso.seccomp:
        logger.info("Sandbox guards active: %s.", iso.describe())
        return
    logger.warning(
        "Sandbox fallback (%s). Active guards: %s. Missing: %s (see docs/sandbox.md).",
        why,
        iso.describe(),
        iso.missing(),
    )


# ----------------------------------------------------------------------------- run_program


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
