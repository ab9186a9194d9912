"""What the job's processes print: torchrun's own output (copied to ``torchrun.log``) and every
rank's output, followed in the per-rank files torchrun writes (``--log-dir``/``--redirects``),
logged as ``[rank N] ...``, merged into ``rank_N.log``, its progress events handed on."""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from weighted_mtp.training import progress
from weighted_mtp.training.launcher.processes import STOP_GRACE_SECONDS

# One logger for the whole launcher package: the name users filter on (see the docs).
logger = logging.getLogger("weighted_mtp.training.launcher")

_POLL_SECONDS = 0.1
#: Under the run's log directory: torchrun's per-rank files, and its own output.
_TORCHRUN_SUBDIR = "torchrun"
_TORCHRUN_LOG = "torchrun.log"


class _TorchrunOutput(threading.Thread):
    """Copies torchrun's own output (agent messages, its failure summary) to ``torchrun.log``.

    Agent warnings/errors (glog-style ``W…``/``E…`` lines) are logged as warnings, the rest at
    DEBUG: the failure summary repeats what :class:`TrainingJobError` reports more readably.
    """

    _GLOG = re.compile(r"^[WEF]\d{4} ")

    def __init__(self, path: Path) -> None:
        super().__init__(name="torchrun-output", daemon=True)
        self.stream: IO[bytes] | None = None
        self.path = path
        self.lines: deque[str] = deque(maxlen=5000)

    def start(self, stream: IO[bytes] | None = None) -> None:  # type: ignore[override]
        """Start copying ``stream`` (torchrun's stdout+stderr pipe)."""
        self.stream = stream
        super().start()

    def run(self) -> None:
        if self.stream is None:
            return
        with self.stream, self.path.open("w", encoding="utf-8") as out:
            for raw in iter(self.stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                out.write(line + "\n")
                out.flush()
                self.lines.append(line)
                level = logging.WARNING if self._GLOG.match(line) else logging.DEBUG
                logger.log(level, "[torchrun] %s", line, extra={"markup": False})

    def join(self, timeout: float | None = None) -> None:
        """Wait for torchrun's output to end (no-op when never started)."""
        if self.ident is not None:
            super().join(timeout=STOP_GRACE_SECONDS if timeout is None else timeout)

    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class _TailedFile:
    path: Path
    local_rank: int
    is_stdout: bool
    offset: int = 0
    partial: bytes = b""


@dataclass
class _RankLogTailer:
    """Follows the per-rank files torchrun writes (``<dir>/<id>_*/attempt_*/<local_rank>/
    {stdout,stderr}.log``), logs every line as ``[rank N] ...``, appends it to
    ``log_dir/rank_N.log`` and hands progress events (from stdout) to ``on_event``."""

    torchrun_dir: Path
    ignore: set[Path]
    log_dir: Path
    nnodes: int
    node_rank: int
    on_event: Callable[[dict[str, Any]], None]
    _files: dict[Path, _TailedFile] = field(default_factory=dict)
    _outputs: dict[int, IO[str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rank-log-tailer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Read what is left, then close the rank logs. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        for out in self._outputs.values():
            out.close()
        self._outputs.clear()

    def label(self, local_rank: int) -> str:
        # Global ranks are assigned by the rendezvous, not by node_rank, so on a multi-node
        # job the local rank is named with its node instead of guessing a global rank.
        if self.nnodes == 1:
            return f"rank {local_rank}"
        return f"node {self.node_rank} local rank {local_rank}"

    def rank_log(self, local_rank: int) -> Path:
        """The combined stdout+stderr file of a local rank."""
        if self.nnodes == 1:
            return self.log_dir / f"rank_{local_rank}.log"
        return self.log_dir / f"node{self.node_rank}_local_rank_{local_rank}.log"

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            self._discover()
            for tailed in list(self._files.values()):
                self._read(tailed, final=stopping)
            if stopping:
                return
            self._stop.wait(_POLL_SECONDS)

    def _discover(self) -> None:
        for run_dir in self.torchrun_dir.glob("*"):
            if run_dir in self.ignore or not run_dir.is_dir():
                continue
            for path in run_dir.glob("attempt_*/*/std*.log"):
                if path in self._files or not path.parent.name.isdigit():
                    continue
                if path.name in ("stdout.log", "stderr.log"):
                    self._files[path] = _TailedFile(
                        path, int(path.parent.name), path.name == "stdout.log"
                    )

    def _read(self, tailed: _TailedFile, *, final: bool) -> None:
        try:
            with tailed.path.open("rb") as fh:
                fh.seek(tailed.offset)
                data = fh.read()
        except OSError:
            return
        tailed.offset += len(data)
        data = tailed.partial + data
        # A line is handled only once complete: print() writes text and newline separately.
        *lines, tailed.partial = data.split(b"\n")
        if final and tailed.partial:
            lines.append(tailed.partial)
            tailed.partial = b""
        for raw in lines:
            self._line(tailed, raw.decode("utf-8", errors="replace").rstrip("\r"))

    def _line(self, tailed: _TailedFile, line: str) -> None:
        out = self._outputs.get(tailed.local_rank)
        if out is None:
            out = self.rank_log(tailed.local_rank).open("w", encoding="utf-8")
            self._outputs[tailed.local_rank] = out
        out.write(line + "\n")
        out.flush()
        if tailed.is_stdout:
            event = progress.parse_event(line)
            if event is not None:
                self.on_event(event)
                return
        logger.info("[%s] %s", self.label(tailed.local_rank), line, extra={"markup": False})
