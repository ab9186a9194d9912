"""Whether the kernel has Landlock (Linux >= 5.13); the helper applies the rules
(``child_process.restrict_writes``)."""

from __future__ import annotations

import ctypes

from weighted_mtp.evaluation.sandbox import child_process


def _landlock_available() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(
        child_process.SYS_LANDLOCK_CREATE_RULESET,
        None,
        0,
        child_process.LANDLOCK_CREATE_RULESET_VERSION,
    )
    return abi >= 1
