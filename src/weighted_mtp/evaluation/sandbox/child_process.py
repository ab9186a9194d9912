"""The sandbox's helper process: isolates itself, forks the program, and supervises it.

The evaluator (``supervision._spawn_and_collect``) starts this file as a script, with the
program's interpreter flags and environment, ``python -S -s -P -B child_process.py PLAN``,
through a plain ``subprocess.Popen``: no ``preexec_fn``, which Python documents as unsafe
in a multi-threaded process (the evaluator runs many programs from a thread pool). Being a
fresh single-threaded interpreter, the helper may do anything between its own fork and the
program's start.

Steps, each only when the plan asks for it (``sandbox.isolation`` decides what the machine
allows): unshare network, mount and pid namespaces and build a private tmpfs layout; fork.
The parent side stays as a small supervisor that waits for the program, kills what the
program left behind (with a uid of its own: every process of that uid; else, as a child
subreaper, every orphan that re-parented to it), and mirrors its exit status; so the
program's parent is never the evaluator. The child side sets resource limits, drops to the
run's unprivileged uid, sets ``PR_SET_PDEATHSIG`` and ``PR_SET_NO_NEW_PRIVS``, restricts
file-system writes to its working directory (Landlock), installs a seccomp filter that
denies ``socket()``, and then runs the program as this interpreter's ``__main__`` (one
interpreter start per program instead of two; ``run_program_here``).

A set-up failure is written to the status descriptor (``status_fd``) and the helper exits
with ``SETUP_FAILED``; the evaluator reads that descriptor to its end, which comes when the
set-up closes it, and raises ``SandboxSetupError`` on a message.
"""

from __future__ import annotations

# Only modules that cost nothing to import (built in, or already loaded by the interpreter's
# start): this runs once per program, and json (re, enum), contextlib (functools) or signal
# (enum) would double the start-up time of the helper.
import _signal
import ctypes
import marshal
import os
import resource
import struct
import sys

SIGKILL = 9
SIGSTOP = 19
SIGTERM = 15

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

# Landlock (Linux >= 5.13). Syscall numbers are the same on every architecture (they were
# added after the tables were unified).
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_WRITE_FILE = 1 << 1
# Every right that creates, removes, renames or truncates: what the program may do only
# inside its own working directory. ABI 2 adds REFER (rename/link across directories),
# ABI 3 TRUNCATE.
LANDLOCK_WRITE_RIGHTS_V1 = LANDLOCK_WRITE_FILE | sum(1 << bit for bit in range(4, 13))
LANDLOCK_REFER = 1 << 13
LANDLOCK_TRUNCATE = 1 << 14

# Directories any uid may write to on a typical Linux box; in namespace mode each gets a
# fresh, size-limited tmpfs so nothing a program writes outlives it or fills the disk.
SHARED_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
SANDBOX_WORKDIR = "/tmp/sandbox"
# Exit status of the helper when its set-up failed (the message is on the status fd).
SETUP_FAILED = 125

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """A set-up step failed; the message goes to the evaluator through the status fd."""


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(errno)}")
    return result


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _prctl(option: int, arg: int, what: str) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), 0), what)


def build_filesystem(plan: dict, program: bytes) -> None:
    """Namespace mode: fresh tmpfs on the shared writable dirs, the interpreter kept visible."""
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    # Open every kept path before anything is hidden: the bind mounts below come from these
    # descriptors, so a kept path may live inside a directory that gets hidden (a venv under
    # /tmp, pyenv under a 0700 /root).
    masks = [(masked, tuple(keeps)) for masked, keeps in plan["masks"]]
    kept = [
        (keep, os.open(keep, os.O_PATH | os.O_DIRECTORY)) for _, keeps in masks for keep in keeps
    ]
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={plan['tmpfs_bytes']},mode=1777")
    for directory in SHARED_WRITABLE_DIRS[1:]:
        if os.path.isdir(directory):
            _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=1777")
    for masked, _ in masks:
        if masked not in SHARED_WRITABLE_DIRS:  # those got their fresh tmpfs above
            _mount("tmpfs", masked, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for keep, fd in kept:
        os.makedirs(keep, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", keep, None, MS_BIND | MS_REC, None)
        os.close(fd)
    os.mkdir(SANDBOX_WORKDIR, 0o700)
    fd = os.open(os.path.join(SANDBOX_WORKDIR, plan["program_name"]), os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, program)
    finally:
        os.close(fd)
    if plan["uid"] is not None:
        os.chown(SANDBOX_WORKDIR, plan["uid"], plan["uid"])
    os.chdir(SANDBOX_WORKDIR)


def restrict_writes(workdir: str) -> None:
    """Landlock: writes (create, remove, rename, truncate) only beneath ``workdir``.

    Existing files elsewhere stay writable only as far as plain permissions allow, which for
    the sandbox uid is nothing outside world-writable files (e.g. ``/dev/null``).
    """
    abi = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    _check(abi, "landlock version")
    handled = LANDLOCK_WRITE_RIGHTS_V1
    if abi >= 2:
        handled |= LANDLOCK_REFER
    if abi >= 3:
        handled |= LANDLOCK_TRUNCATE
    attr = struct.pack("=Q", handled)  # struct landlock_ruleset_attr, handled_access_fs only
    ruleset = _check(
        _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, attr, len(attr), 0), "landlock ruleset"
    )
    try:
        for path, rights in ((workdir, handled), ("/dev", LANDLOCK_WRITE_FILE)):
            fd = os.open(path, os.O_PATH | os.O_DIRECTORY)
            try:
                # struct landlock_path_beneath_attr is packed: u64 allowed, s32 parent_fd.
                rule = struct.pack("=Qi", rights, fd)
                _check(
                    _libc.syscall(
                        SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, rule, 0
                    ),
                    f"landlock rule {path}",
                )
            finally:
                os.close(fd)
        _check(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock restrict")
    finally:
        os.close(ruleset)


def install_seccomp(bpf: bytes) -> None:
    """Load a classic-BPF seccomp program (compiled by libseccomp in the evaluator)."""
    count = len(bpf) // 8  # struct sock_filter is 8 bytes
    filters = ctypes.create_string_buffer(bpf, len(bpf))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("@HP", count, ctypes.addressof(filters))
    prog = ctypes.create_string_buffer(fprog, len(fprog))
    _check(
        _libc.prctl(
            PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), prog, ctypes.c_ulong(0), 0
        ),
        "seccomp",
    )


def kill_uid(uid: int) -> None:
    """Kill every process of ``uid``: ``kill(-1)`` from a process of that uid.

    The kernel signals all processes of the caller's uid under the task-list lock, and a fork
    with a fatal signal pending fails, so a fork bomb cannot outrun it (a ``/proc`` scan can).
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def kill_descendants() -> None:
    """Kill and reap every process the program left (they were re-parented to us).

    Used when the program shares the evaluator's uid, where ``kill(-1)`` would reach the
    evaluator too: kill our children, reap them, and repeat for their orphans.
    """
    while True:
        children: set[int] = set()
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/children") as handle:
                    children.update(int(pid) for pid in handle.read().split())
            except OSError:
                continue
        for child in children:
            try:
                os.kill(child, SIGKILL)
            except ProcessLookupError:
                continue
        if not reap_all(block=bool(children)):
            return


def reap_all(block: bool) -> bool:
    """Reap exited children (waiting for every child if ``block``); False once none is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def supervise(pid: int, plan: dict) -> None:
    """Wait for the program, clean up after it and exit with its status (never returns).

    SIGTERM (the evaluator's wall-time kill) kills the program. The supervisor closed every
    descriptor: it must not hold the output pipes (the evaluator reads them to the end) nor
    the status pipe (the evaluator reads it until the set-up is done).
    """
    try:
        os.closerange(0, 65536)
        _signal.signal(SIGTERM, lambda *_: os.kill(pid, SIGKILL))
        _, status = os.waitpid(pid, 0)
        if not plan["namespaces"]:
            # No pid namespace ends what the program left behind (a setsid()'d child); being
            # a child subreaper, we inherited it.
            if plan["uid"] is not None:
                kill_uid(plan["uid"])
                reap_all(block=True)
            else:
                kill_descendants()
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig not in (SIGKILL, SIGSTOP):
                _signal.signal(sig, _signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            os._exit(128 + sig)
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 255)
    finally:
        os._exit(255)


def become_program(plan: dict) -> None:
    """Child side: limits, uid, parent-death signal, no-new-privileges, Landlock, seccomp."""
    if plan["namespaces"]:
        # A /proc of our own pid namespace: the program sees only its own processes.
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    for res, soft, hard in plan["rlimits"]:
        resource.setrlimit(res, (soft, hard))
    uid = plan["uid"]
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    # Set after the uid change (a credential change clears it): if the supervisor dies, so
    # does the program.
    _prctl(PR_SET_PDEATHSIG, SIGKILL, "prctl(PDEATHSIG)")
    # No set-uid binary can give root back; also what Landlock and seccomp need without
    # CAP_SYS_ADMIN.
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl(NO_NEW_PRIVS)")
    if plan["landlock"]:
        restrict_writes(os.getcwd())
    if plan["seccomp_bpf"]:
        install_seccomp(plan["seccomp_bpf"])


def run_program_here(name: str) -> None:
    """Run ``name`` as this interpreter's ``__main__``, as ``python name`` would.

    In place of an exec of a second interpreter: the helper was started with the program's
    flags and environment (``-S -s -P -B``, ``PYTHONHASHSEED=0``), so one interpreter start
    serves both, which halves the start-up cost per program. The program gets a fresh
    ``__main__`` module and ``sys.argv``; an uncaught exception is reported through
    ``sys.excepthook`` without the helper's frames and exits with status 1, like the
    interpreter's own handling.
    """
    import builtins

    sys.argv = [name]
    module = type(sys)("__main__")
    module.__dict__.update(
        __file__=name, __builtins__=builtins, __cached__=None, __loader__=None, __spec__=None
    )
    sys.modules["__main__"] = module
    try:
        with open(name, "rb") as handle:
            code = compile(handle.read(), name, "exec", dont_inherit=True)
        del handle
        exec(code, module.__dict__)
    except SystemExit:
        raise
    except BaseException:
        kind, value, trace = sys.exc_info()
        while trace is not None and trace.tb_frame.f_code.co_filename == __file__:
            trace = trace.tb_next
        # The default hook prints value.__traceback__, not its argument.
        sys.excepthook(kind, value.with_traceback(trace), trace)
        sys.exit(1)


def main(argv: list[str]) -> None:
    # The evaluator's plan, marshalled (a built-in codec: no import, unlike json).
    plan = marshal.loads(bytes.fromhex(argv[1]))
    status_fd = plan["status_fd"]
    os.set_inheritable(status_fd, False)  # the program's own children must not hold it
    try:
        # If the evaluator dies, the supervisor (this process) gets SIGTERM, which ends the
        # program: nothing outlives an evaluator killed mid-run. The evaluator's thread that
        # started us waits for us, so its end means the evaluator's.
        _prctl(PR_SET_PDEATHSIG, SIGTERM, "prctl(PDEATHSIG)")
        if os.getppid() != plan["evaluator_pid"]:
            raise SetupError("the evaluator exited before the set-up")
        program = b""
        if plan["program_fd"] is not None:
            with os.fdopen(plan["program_fd"], "rb") as handle:
                program = handle.read()
        if plan["namespaces"]:
            _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
            build_filesystem(plan, program)
        else:
            # Orphans of the program re-parent to us, so we can kill and reap them.
            _prctl(PR_SET_CHILD_SUBREAPER, 1, "prctl(CHILD_SUBREAPER)")
        pid = os.fork()
        if pid != 0:
            supervise(pid, plan)
        # From here on we are the program (in namespace mode: pid 1 of a new pid namespace).
        become_program(plan)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the evaluator
        message = str(exc) if isinstance(exc, SetupError) else f"{type(exc).__name__}: {exc}"
        try:
            os.write(status_fd, f"sandbox set-up: {message}".encode())
        finally:
            os._exit(SETUP_FAILED)
    os.close(status_fd)  # set-up done: the evaluator stops waiting for a message
    run_program_here(plan["program_name"])


if __name__ == "__main__":
    main(sys.argv)
