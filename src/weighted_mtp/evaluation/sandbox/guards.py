"""``Isolation``: which guards this machine allows, as decided once per evaluator process.

The record the evaluator passes around: the mode (namespaces, per-run uid), the optional
kernel guards (seccomp, Landlock), the interpreter programs run, and the guards by name for
the log line and ``docs/sandbox.md``'s table.
"""

from __future__ import annotations

from dataclasses import dataclass


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
