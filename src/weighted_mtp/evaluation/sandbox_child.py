"""Child-side set-up of the sandbox: what runs in the forked child before ``exec``.

The parent (``execution.run_program``) starts each program with
``subprocess.Popen(..., preexec_fn=ChildPlan.preexec)``. Between ``fork`` and ``exec``
the child isolates itself (namespaces, tmpfs, resource limits, an unprivileged uid) and
forks once more: the grandchild becomes the program, the child stays behind as a tiny
supervisor that waits for it and mirrors its exit status. So the program's parent is never
the evaluator, and in namespace mode the program is pid 1 of its own pid namespace: when it
exits or is killed, the kernel kills every process it left behind.

Only plain system calls run here (no imports, no logging, no locks): the evaluator is
multi-threaded and a forked child must not touch state another thread might hold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal
from dataclasses import dataclass

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

# Directories any uid may write to on a typical Linux box; in namespace mode each gets a
# fresh, size-limited tmpfs so nothing a program writes outlives it or fills the disk.
SHARED_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
SANDBOX_WORKDIR = "/tmp/sandbox"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class SandboxSetupError(OSError):
    """A system call of the child-side set-up failed (reported through ``Popen``)."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SandboxSetupError(errno, f"sandbox set-up: {what}: {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


@dataclass(frozen=True)
class ChildPlan:
    """Everything the child needs, computed by the parent before ``fork``.

    ``rlimits`` holds ``(resource, soft, hard)`` triples. ``masks`` lists directories the
    sandbox uid cannot traverse (e.g. a 0700 ``/root`` holding a pyenv interpreter) as
    ``(directory, paths_to_keep)``: the directory is hidden behind an empty tmpfs and only
    the kept paths are bind-mounted back, so the interpreter stays reachable and nothing
    else in it is visible.
    """

    uid: int | None
    namespaces: bool
    rlimits: tuple[tuple[int, int, int], ...]
    program_name: str
    program: bytes
    tmpfs_bytes: int
    masks: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def preexec(self) -> None:
        """Runs in the child between fork and exec (``Popen(preexec_fn=...)``)."""
        if self.namespaces:
            _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
            self._build_filesystem()
        _supervise_fork()
        # From here on we are the program (in namespace mode: pid 1 of a new pid namespace).
        if self.namespaces:
            # A /proc of our own pid namespace: the program sees only its own processes.
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        for res, soft, hard in self.rlimits:
            resource.setrlimit(res, (soft, hard))
        if self.uid is not None:
            os.setgroups([])
            os.setgid(self.uid)
            os.setuid(self.uid)
        # Set after the uid change (a credential change clears it): if the supervisor dies,
        # so does the program.
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")

    def _build_filesystem(self) -> None:
        _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
        # Open every kept path before anything is hidden: the bind mounts below come from
        # these descriptors, so a kept path may live inside a directory that gets hidden (a
        # venv under /tmp, pyenv under a 0700 /root).
        kept = [
            (keep, os.open(keep, os.O_PATH | os.O_DIRECTORY))
            for _, keeps in self.masks
            for keep in keeps
        ]
        _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={self.tmpfs_bytes},mode=1777")
        for directory in SHARED_WRITABLE_DIRS[1:]:
            if os.path.isdir(directory):
                _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=1777")
        for masked, _ in self.masks:
            if masked not in SHARED_WRITABLE_DIRS:  # those got their fresh tmpfs above
                _mount("tmpfs", masked, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        for keep, fd in kept:
            os.makedirs(keep, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", keep, None, MS_BIND | MS_REC, None)
            os.close(fd)
        os.mkdir(SANDBOX_WORKDIR, 0o700)
        fd = os.open(
            os.path.join(SANDBOX_WORKDIR, self.program_name), os.O_WRONLY | os.O_CREAT, 0o644
        )
        try:
            os.write(fd, self.program)
        finally:
            os.close(fd)
        if self.uid is not None:
            os.chown(SANDBOX_WORKDIR, self.uid, self.uid)
        os.chdir(SANDBOX_WORKDIR)


def _supervise_fork() -> None:
    """Fork; the parent side waits for the program and exits with its status, never returning.

    SIGTERM to the supervisor kills the program (and with it its pid namespace).

    The supervisor closes every descriptor first: it must not hold the output pipes (the
    evaluator reads them to EOF) nor Popen's exec-error pipe (Popen waits for its EOF).
    """
    pid = os.fork()
    if pid == 0:
        return
    try:
        os.closerange(0, 65536)
        # The evaluator stops a run with SIGTERM to us: we kill the program and still reap
        # it, so it never becomes an orphan zombie left to an init that may not reap.
        signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            os._exit(128 + sig)
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 255)
    finally:
        os._exit(255)
