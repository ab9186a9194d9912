"""Where resume checkpoints live: a local directory, mirrored to an fsspec URL (``s3://``).

Checkpoints are always written to a local directory first (atomic rename, fast). When the
catalog puts them on an object store, a background thread uploads each finished checkpoint
(files first, the manifest last, so a remote directory with a manifest is complete), retrying
with backoff; a step never waits for it. A failed upload is reported at once (log and the
``on_failure`` callback, which the loop points at MLflow), and :meth:`finish` raises when the
last checkpoint never reached the store. Before resuming, :meth:`fetch_latest` downloads the
newest complete remote checkpoint that is newer than what the local directory holds.

Credentials never pass through here: fsspec reads them from the environment.
"""

from __future__ import annotations

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

from weighted_mtp.training.checkpoint import CHECKPOINT_NAME, MANIFEST_FILE, list_checkpoints

logger = logging.getLogger(__name__)


class CheckpointUploadError(RuntimeError):
    """The last checkpoint of a run never reached its storage."""


class CheckpointStorage:
    """Local checkpoint directory plus an optional remote mirror.

    Args:
        local_root: checkpoints are written here.
        remote_url: mirror (``s3://bucket/checkpoints/baseline``) or None.
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
        self.local_root = Path(local_root)
        self.remote_url = remote_url.rstrip("/") if remote_url else None
        self.storage_options = dict(storage_options or {})
        self.retries = retries
        self.backoff_s = backoff_s
        self.on_failure = on_failure
        self._queue: queue.Queue[tuple[int, Path] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._results: dict[int, str | None] = {}  # step -> None (uploaded) or error
        self._last_enqueued: int | None = None

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

    # ------------------------------------------------------------------ uploads
    def upload_async(self, step: int, path: Path) -> None:
        """Queue ``path`` (a complete local checkpoint) for upload; returns at once."""
        if self.remote_url is None:
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name="checkpoint-upload", daemon=True
            )
            self._thread.start()
        self._last_enqueued = step
        self._queue.put((step, path))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            step, path = item
            try:
                self._upload(step, path)
                self._results[step] = None
                logger.info("checkpoint of step %d uploaded to %s", step, self.remote_url)
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                self._results[step] = message
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
        """Wait for queued uploads; raise :class:`CheckpointUploadError` if the last
        checkpoint did not reach the store."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        last = self._last_enqueued
        if last is not None and self._results.get(last) is not None:
            raise CheckpointUploadError(
                f"the last checkpoint (step {last}) never reached {self.remote_url}: "
                f"{self._results[last]}; it is kept locally in {self.local_root}"
            )
