"""The evaluator's own directory on the machine (root mode only): the interpreter copy for
the sandbox uids and the uid lock files live under it."""

from __future__ import annotations

import os
import stat

# Where the interpreter copy for other uids (root mode without namespaces) and the uid locks live.
RUNTIME_DIR_ENV = "WMTP_SANDBOX_RUNTIME_DIR"
DEFAULT_RUNTIME_DIR = "/var/cache/weighted-mtp"


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
