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
``socket()``. The set-up runs in a helper process (``child_process.py``), never between fork
and exec of the multi-threaded evaluator; the verdicts per sample are in ``execution``.

This module holds the entry points, ``run_program`` and the mode choice ``isolation()``,
which ties the rest together. Isolation discovery: ``guards`` (what a mode holds),
``uid_pool`` (per-run uids and leftovers), ``interpreter`` (an interpreter other uids can
run), ``seccomp``, ``landlock``, ``runtime_dir``. Process supervision: ``program_run`` (one
run's set-up and clean-up), ``supervision`` (the helper's process: deadline, output, result)
and ``child_process`` (the helper itself, started as a script). The entry points live here
rather than in a submodule so that a replacement of ``sandbox.isolation`` or ``sandbox._probe``
on the package (the tests' monkeypatching) is what ``run_program`` and ``isolation()`` call.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import subprocess

from weighted_mtp.evaluation.sandbox.guards import Isolation
from weighted_mtp.evaluation.sandbox.interpreter import (
    _interpreter_masks,
    _runtime_for_other_uids,
)
from weighted_mtp.evaluation.sandbox.landlock import _landlock_available
from weighted_mtp.evaluation.sandbox.program_run import PROGRAM_NAME, _run
from weighted_mtp.evaluation.sandbox.program_run import _environment as _environment
from weighted_mtp.evaluation.sandbox.runtime_dir import DEFAULT_RUNTIME_DIR, RUNTIME_DIR_ENV
from weighted_mtp.evaluation.sandbox.seccomp import _seccomp_filter
from weighted_mtp.evaluation.sandbox.supervision import (
    HELPER,
    ExecutionResult,
    SandboxLimits,
    SandboxSetupError,
)
from weighted_mtp.evaluation.sandbox.uid_pool import _UID_POOL as _UID_POOL
from weighted_mtp.evaluation.sandbox.uid_pool import (
    SANDBOX_UID_BASE,
    SANDBOX_UID_COUNT,
    _uid_is_unused,
    lasting_orphans,
    orphaned_processes,
)
from weighted_mtp.evaluation.sandbox.uid_pool import _UidPool as _UidPool

# Besides these, ``sandbox._run``, ``_UidPool``, ``_UID_POOL``, ``_environment`` and the
# discovery helpers stay reachable here (``as`` re-exports): the tests drive them directly.
__all__ = [
    "ALLOW_ROOT_ENV",
    "DEFAULT_RUNTIME_DIR",
    "HELPER",
    "PROGRAM_NAME",
    "RUNTIME_DIR_ENV",
    "SANDBOX_UID_BASE",
    "SANDBOX_UID_COUNT",
    "ExecutionResult",
    "Isolation",
    "SandboxLimits",
    "SandboxSetupError",
    "SandboxUnavailableError",
    "isolation",
    "lasting_orphans",
    "orphaned_processes",
    "run_program",
]

logger = logging.getLogger(__name__)


ALLOW_ROOT_ENV = "WMTP_SANDBOX_ALLOW_ROOT"


class SandboxUnavailableError(RuntimeError):
    """This machine can neither isolate programs nor run them without root."""


def run_program(
    source: str, stdin: str | bytes | None = None, limits: SandboxLimits | None = None
) -> ExecutionResult:
    """Run Python ``source`` in the sandbox with ``stdin`` as its standard input."""
    return _run(isolation(), source, stdin, limits or SandboxLimits())


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
