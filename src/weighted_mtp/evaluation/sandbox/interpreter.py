"""The interpreter a sandboxed program runs, made reachable where it would be hidden.

With namespaces: the directories that hide it from other uids (a 0700 home with pyenv, a
venv under ``/tmp``), which the helper masks and mounts back. Root without namespaces: the
installed interpreter if other uids can reach it, else a copy of its executable, standard
library and libpython (no site-packages) in the evaluator's runtime directory.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import logging
import os
import shutil
import stat
import sys
import sysconfig
import tempfile

from weighted_mtp.evaluation.sandbox.child_process import SHARED_WRITABLE_DIRS
from weighted_mtp.evaluation.sandbox.runtime_dir import (
    DEFAULT_RUNTIME_DIR,
    RUNTIME_DIR_ENV,
    _safe_cache_root,
)

logger = logging.getLogger(__name__)


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
