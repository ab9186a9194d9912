"""Where resume checkpoints live: a local directory, mirrored to an fsspec URL (``s3://``).

Both are a method's checkpoint location; a run uses the subdirectory of its run identity
(:meth:`CheckpointStorage.select_identity`), locally and remotely alike. Checkpoints are always
written to a local directory first (atomic rename, fast). Rank 0's checkpoint thread then
commits each one (the SHA256 manifest: minutes at 7B, which no rank waits for) and prunes
to ``keep_last``, and when the catalog puts checkpoints on an object store uploads it (files
first, the manifest last, so a remote directory with a manifest is complete), retrying with
backoff; a step never waits for it. A failed upload is reported at once (log and the
``on_failure`` callback, which the loop points at MLflow), and :meth:`finish` raises when the
last checkpoint was not committed or never reached the store. Before resuming,
:meth:`fetch_latest` downloads the newest complete remote checkpoint of the run identity that
is newer than what the local directory holds.

Credentials never pass through here: fsspec reads them from the environment.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec

from weighted_mtp.training.checkpoint import (
    CHECKPOINT_NAME,
    IDENTITY_DIR_NAME,
    IDENTITY_FILE,
    MANIFEST_FILE,
    CheckpointError,
    OtherRun,
    commit_checkpoint,
    legacy_checkpoints,
    list_checkpoints,
    local_other_runs,
)
from weighted_mtp.training.run_identity import RunIdentity

logger = logging.getLogger(__name__)


class CheckpointUploadError(RuntimeError):
    """The last checkpoint of a run never reached its storage."""


class CheckpointStorage:
    """Local checkpoint directory plus an optional remote mirror.

    Args:
        local_root: the method's checkpoint location; checkpoints are written into its run
            identity's subdirectory once :meth:`select_identity` has named it.
        remote_url: mirror (``s3://bucket/checkpoints/baseline``) or None; same layout.
        storage_options: fsspec options for ``remote_url`` (non-secret: endpoint URL...).
        retries, backoff_s: attempts per file and the first wait (doubled each time).
        on_failure: called with ``(step, message)`` when a checkpoint's upload gives up.
    """

    def __init__(
        self,
        local_root: Path,
        remote_url: str | None = None,
        storage_options: dict[str, Any] | None = None,
        *,
        retries: int = 4,
        backoff_s: float = 1.0,
        on_failure: Callable[[int, str], None] | None = None,
    ) -> None:
        self.base_root = Path(local_root)
        self.base_url = remote_url.rstrip("/") if remote_url else None
        self.local_root = self.base_root
        self.remote_url = self.base_url
        self.identity: RunIdentity | None = None
        self.storage_options = dict(storage_options or {})
        self.retries = retries
        self.backoff_s = backoff_s
        self.on_failure = on_failure
        self._queue: queue.Queue[tuple[int, Path, int] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._results: dict[int, str | None] = {}  # step -> None (uploaded) or error
        self._last_enqueued: int | None = None

    def select_identity(self, identity: RunIdentity) -> None:
        """Use the run identity's subdirectory, locally and remotely (before any checkpoint
        is read or written)."""
        if self._thread is not None:
            raise RuntimeError("select_identity after a checkpoint was queued")
        self.identity = identity
        self.local_root = self.base_root / identity.short
        self.remote_url = f"{self.base_url}/{identity.short}" if self.base_url else None

    # ------------------------------------------------------------------ remote access
    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        assert self.remote_url is not None
        fs, root = fsspec.core.url_to_fs(self.remote_url, **self.storage_options)
        return fs, root

    def remote_checkpoints(self) -> list[int]:
        """Steps of complete remote checkpoints (manifest present), oldest first."""
        if self.remote_url is None:
            return []
        fs, root = self._fs()
        if not fs.exists(root):
            return []
        steps = []
        for entry in fs.ls(root, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            match = CHECKPOINT_NAME.match(name)
            if match and fs.exists(f"{root}/{name}/{MANIFEST_FILE}"):
                steps.append(int(match.group(1)))
        return sorted(steps)

    def fetch_latest(self) -> int | None:
        """Download the newest complete remote checkpoint if it is newer than every local one;
        returns its step (None when nothing was fetched)."""
        remote = self.remote_checkpoints()
        if not remote:
            return None
        local = [s for s, _ in list_checkpoints(self.local_root)]
        newest = remote[-1]
        if local and local[-1] >= newest:
            return None
        fs, root = self._fs()
        name = f"step_{newest:08d}"
        partial = self.local_root / f".{name}.download"
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        manifest = json.loads(fs.cat_file(f"{root}/{name}/{MANIFEST_FILE}"))
        for rel in manifest["files"]:
            target = partial / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root}/{name}/{rel}", str(target))
        fs.get_file(f"{root}/{name}/{MANIFEST_FILE}", str(partial / MANIFEST_FILE))
        final = self.local_root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        logger.info("fetched checkpoint of step %d from %s", newest, self.remote_url)
        return newest

    def other_runs(self) -> tuple[list[OtherRun], int]:
        """The other run identities' checkpoint directories beside this one's, locally and
        (when the local location has none, as on a new machine) remotely, and how many
        checkpoints from before run identities lie in the local location: what a fresh start
        is explained with."""
        assert self.identity is not None, "select_identity first"
        runs = local_other_runs(self.base_root, self.identity)
        if runs or self.base_url is None:
            return runs, legacy_checkpoints(self.base_root)
        fs, root = fsspec.core.url_to_fs(self.base_url, **self.storage_options)
        if not fs.exists(root):
            return [], legacy_checkpoints(self.base_root)
        for entry in fs.ls(root, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if not IDENTITY_DIR_NAME.match(name) or name == self.identity.short:
                continue
            path = f"{root}/{name}/{IDENTITY_FILE}"
            try:
                other = RunIdentity.model_validate_json(fs.cat_file(path))
                info = fs.info(path)
            except (OSError, ValueError):
                continue
            stamp = info.get("LastModified") or info.get("mtime") or info.get("created") or 0
            modified = stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)
            runs.append(
                OtherRun(f"{self.base_url}/{name}", other.digest, other.components, modified)
            )
        return runs, legacy_checkpoints(self.base_root)

    # ------------------------------------------------------------------ commit + upload
    def commit_async(self, step: int, path: Path, *, keep_last: int) -> None:
        """Queue ``path`` (a checkpoint written with ``save_checkpoint(commit=False)``) to be
        committed (manifest), pruned to ``keep_last`` and uploaded; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name="checkpoint-commit", daemon=True
            )
            self._thread.start()
            # A run that fails with an exception after a save (a NaN loss, a bad batch) still
            # leaves that checkpoint committed to resume from; a killed process cannot.
            atexit.register(self._drain)
        self._last_enqueued = step
        self._queue.put((step, path, keep_last))

    def _drain(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            step, path, keep_last = item
            try:
                commit_checkpoint(path, keep_last=keep_last)
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                self._results[step] = f"could not be committed: {message}"
                logger.error("checkpoint of step %d could not be committed: %s", step, message)
                continue
            if self.remote_url is None:
                self._results[step] = None
                continue
            try:
                self._upload(step, path)
                self._results[step] = None
                logger.info("checkpoint of step %d uploaded to %s", step, self.remote_url)
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                self._results[step] = f"never reached {self.remote_url}: {message}"
                logger.error(
                    "checkpoint of step %d could not be uploaded to %s after %d attempts: %s",
                    step,
                    self.remote_url,
                    self.retries,
                    message,
                )
                if self.on_failure is not None:
                    self.on_failure(step, message)

    def _upload(self, step: int, path: Path) -> None:
        fs, root = self._fs()
        dest = f"{root}/{path.name}"
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
        for file in [*files, path / MANIFEST_FILE]:  # the manifest commits the directory
            rel = file.relative_to(path).as_posix()
            self._with_retries(lambda f=file, r=rel: fs.put_file(str(f), f"{dest}/{r}"))
        identity = path.parent / IDENTITY_FILE
        if identity.is_file():  # its store timestamp says which run uploaded last
            self._with_retries(lambda: fs.put_file(str(identity), f"{root}/{IDENTITY_FILE}"))
        self._prune_remote(fs, root)

    def _prune_remote(self, fs: fsspec.AbstractFileSystem, root: str) -> None:
        # Mirror the local retention: remote steps no longer kept locally are removed.
        keep = {p.name for _, p in list_checkpoints(self.local_root)}
        for entry in fs.ls(root, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if CHECKPOINT_NAME.match(name) and name not in keep:
                try:
                    fs.rm(f"{root}/{name}", recursive=True)
                except Exception as exc:  # pruning is housekeeping; never fail a run on it
                    logger.warning("could not remove old remote checkpoint %s: %s", name, exc)

    def _with_retries(self, action: Callable[[], object]) -> None:
        wait = self.backoff_s
        for attempt in range(1, self.retries + 1):
            try:
                action()
                return
            except Exception:
                if attempt == self.retries:
                    raise
                time.sleep(wait)
                wait *= 2

    def finish(self) -> None:
        """Wait for queued commits and uploads (rank 0, while the other ranks wait in
        :func:`~weighted_mtp.training.checkpoint.wait_for_rank0`).

        Raises:
            CheckpointError: the last checkpoint could not be committed.
            CheckpointUploadError: it was committed but never reached the store.
        """
        if self._thread is None:
            return
        self._drain()
        last = self._last_enqueued
        outcome = self._results.get(last) if last is not None else None
        if outcome is None:
            return
        message = f"the last checkpoint (step {last}) {outcome}"
        if outcome.startswith("could not be committed"):
            raise CheckpointError(f"{message}; it is incomplete in {self.local_root}")
        raise CheckpointUploadError(f"{message}; it is kept locally in {self.local_root}")
