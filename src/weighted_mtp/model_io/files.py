"""Model directory files: local paths and fsspec URLs (``s3://...``), SHA256 of files, atomic
directory writes and local cached copies of remote directories (one download per machine: the
processes that need the same copy take turns on a file lock, and those after the first find it
done).

The format of what such a directory holds (``params.json``, safetensors, ``metadata.json``)
lives in :mod:`weighted_mtp.model_io.model_dir`, which re-exports the names defined here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

logger = logging.getLogger(__name__)

CACHE_ENV = "WMTP_MODEL_CACHE"
_LISTING_FILE = ".wmtp-listing.json"


class ModelDirectoryError(Exception):
    """A model directory that cannot be read or written as the contract describes."""


class ModelFileNotFoundError(ModelDirectoryError, FileNotFoundError):
    """A file the model directory must contain is absent."""


# --------------------------------------------------------------------------- filesystems
def open_fs(url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None):
    """``(filesystem, path without protocol)`` for a local path or fsspec URL."""
    fs, path = fsspec.core.url_to_fs(str(url), **dict(storage_options or {}))
    return fs, path.rstrip("/")


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def sha256_file(path: str | Path, fs: fsspec.AbstractFileSystem | None = None) -> str:
    """Hex SHA256 of a file, streamed in 8 MiB blocks (7B weights do not fit twice in RAM)."""
    digest = hashlib.sha256()
    opener = fs.open if fs is not None else open
    with opener(str(path), "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_directory_atomically(
    out_dir: str | os.PathLike,
    fill: Callable[[Path], None],
    *,
    commit_file: str,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Create (or replace) the directory ``out_dir`` with what ``fill(tmp_dir)`` writes.

    Local: ``fill`` writes into a temporary sibling, which is renamed into place; a previous
    directory is first renamed aside and deleted after, so readers see the old or the new
    directory, never a mix. Remote: ``fill`` writes into a local temporary directory; the
    destination's ``commit_file`` is removed first, then everything else, then the new files are
    uploaded with ``commit_file`` last. Returns ``out_dir`` as given (a string).
    """
    fs, dest = open_fs(out_dir, storage_options)
    if is_local(fs):
        final = Path(dest)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            fill(tmp)
            if final.exists():
                old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return str(out_dir)

    if "/" not in dest.strip("/"):
        raise ModelDirectoryError(
            f"{out_dir}: refusing to write a model directory at a bucket root"
        )
    with tempfile.TemporaryDirectory(prefix="wmtp-upload-") as staging:
        fill(Path(staging))
        names = sorted(p.name for p in Path(staging).iterdir())
        if commit_file not in names:
            raise ModelDirectoryError(f"{out_dir}: writer produced no {commit_file}")
        if fs.exists(f"{dest}/{commit_file}"):
            fs.rm_file(f"{dest}/{commit_file}")
        if fs.exists(dest):
            fs.rm(dest, recursive=True)
        for name in [n for n in names if n != commit_file] + [commit_file]:
            fs.put_file(str(Path(staging) / name), f"{dest}/{name}")
        fs.invalidate_cache(dest)
    return str(out_dir)


# --------------------------------------------------------------------------- local copies
def default_cache_dir() -> Path:
    """``$WMTP_MODEL_CACHE`` or ``~/.cache/weighted_mtp/models``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "weighted_mtp" / "models")


@contextlib.contextmanager
def _exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if absent) while the block runs.

    The kernel drops the lock when the holder exits, even when it is killed, so a crashed
    download never blocks the next one."""
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process to finish copying %s", what)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _cached_listing(listing: Path) -> Any:
    try:
        return json.loads(listing.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def local_model_dir(
    model_dir: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Path:
    """A local path holding ``model_dir``'s files: the path itself when local, else a cached copy.

    The cache entry (named by the URL's hash) is reused while the remote listing (names and
    sizes) is unchanged; a new copy is downloaded beside it and renamed into place. Safe to call
    from every rank of a node at once: the copy is made under an exclusive file lock
    (``.<entry>.lock`` in the cache directory), so the first process downloads while the others
    wait, then find the finished copy and download nothing.
    """
    fs, root = open_fs(model_dir, storage_options)
    if is_local(fs):
        if not Path(root).is_dir():
            raise ModelFileNotFoundError(f"model directory {model_dir} does not exist")
        return Path(root)
    if not fs.isdir(root):
        raise ModelFileNotFoundError(f"model directory {model_dir} does not exist")
    # Size alone would miss a retrained model of the same architecture (every file the same
    # size): the object's ETag / modification time changes with any rewrite.
    remote = {
        info["name"][len(root) + 1 :]: [
            int(info.get("size") or 0),
            str(info.get("ETag") or info.get("etag") or info.get("LastModified") or ""),
            str(info.get("mtime") or info.get("last_modified") or ""),
        ]
        for info in fs.find(root, detail=True).values()
        if info.get("type", "file") == "file"
    }
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    key = hashlib.sha256(f"{protocol}://{root}".encode()).hexdigest()[:16]
    target = cache_root / f"{Path(root).name}-{key}"
    listing = target / _LISTING_FILE
    if _cached_listing(listing) == remote:
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache_root / f".{target.name}.lock", str(model_dir)):
        # Whoever held the lock before us may have just made this very copy.
        if _cached_listing(listing) == remote:
            logger.info("%s: using the copy another process just made in %s", model_dir, target)
            return target
        staging = cache_root / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        old = cache_root / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        try:
            for name in sorted(remote):
                local = staging / name
                local.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f"{root}/{name}", str(local))
            (staging / _LISTING_FILE).write_text(json.dumps(remote, sort_keys=True))
            # Renamed aside, not deleted in place: a reader never sees a half-deleted copy.
            if target.exists():
                os.replace(target, old)
            os.replace(staging, target)
        finally:
            for leftover in (staging, old):
                if leftover.exists():
                    shutil.rmtree(leftover, ignore_errors=True)
    logger.info("copied %s (%d files) to %s", model_dir, len(remote), target)
    return target
