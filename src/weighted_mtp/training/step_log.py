"""Rank 0's record of a run: the history file, live MLflow metrics and progress events.

MLflow is imported here only, and only when a run id is given (rank 0 of the workers): the
metrics land in the run that kedro-mlflow opened in the Kedro process, no new run is made.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from weighted_mtp.training.progress import format_event

logger = logging.getLogger(__name__)

# Metric -> field of the progress event the launcher renders.
_EVENT_KEYS = {"train/loss": "loss", "train/tokens_per_s": "tokens_per_s", "val/loss": "val_loss"}


class StepLog:
    """Appends one JSON object per logged step to ``history_path`` and sends the same numbers
    to MLflow (``log_batch`` into ``run_id``); prints progress events for the launcher.

    MLflow gets the metrics in batches, at most ``flush_seconds`` after they were logged and
    all of them by :meth:`close`: one ``log_batch`` costs about 11 ms of CPU on the default
    SQLite store, whatever its size, which once per step was ~2 % of a micro model's step.
    """

    def __init__(
        self,
        history_path: Path,
        *,
        tracking_uri: str | None,
        run_id: str | None,
        max_steps: int,
        method: str,
        flush_seconds: float = 5.0,
        client: Any = None,
    ) -> None:
        self.history_path = history_path
        self.max_steps = max_steps
        self.method = method
        self.flush_seconds = flush_seconds
        self._client = client
        self._run_id = run_id
        self._failures = 0
        self._upload_failures = 0
        # The checkpoint upload thread reports failures through _send too.
        self._lock = threading.Lock()
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()
        if run_id and client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=tracking_uri)
        history_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = history_path.open("a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float], *, phase: str = "train") -> None:
        """``step`` is 1-based (the number of optimizer steps done)."""
        record = {"step": step, "time": time.time(), **metrics}
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()
        if self._client is not None:
            self._send(step, metrics)
        event: dict[str, Any] = {
            "phase": phase,
            "step": step,
            "max_steps": self.max_steps,
            "method": self.method,
        }
        for key, short in _EVENT_KEYS.items():
            if key in metrics and math.isfinite(metrics[key]):
                event[short] = round(metrics[key], 5)
        print(format_event(event), flush=True)

    def replay(self, history: Path, up_to_step: int) -> int:
        """Copy the records of an earlier run up to ``up_to_step`` (a resumed run continues
        its history) into this history file and MLflow run; returns how many."""
        if not history.is_file():
            return 0
        n = 0
        for line in history.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("step", 0) > up_to_step:
                continue
            self._file.write(line + "\n")
            if self._client is not None:
                metrics = {k: v for k, v in record.items() if k not in ("step", "time")}
                self._send(int(record["step"]), metrics)
            n += 1
        self._file.flush()
        self.flush()
        return n

    def report_upload_failure(self, step: int, message: str) -> None:
        """A checkpoint upload gave up (called from the upload thread)."""
        self._upload_failures += 1
        if self._client is not None:
            self._send(step, {"checkpoint/upload_failures": float(self._upload_failures)})
            try:
                assert self._run_id is not None
                self._client.set_tag(self._run_id, "checkpoint_upload_error", message[:5000])
            except Exception as exc:
                logger.warning("could not record the upload failure in MLflow: %s", exc)

    def _send(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key=k, value=float(v), timestamp=now, step=step)
            for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(v)
        ]
        with self._lock:
            self._pending += batch
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Send the metrics not yet sent to MLflow (a failure is counted and logged)."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._last_flush = time.monotonic()
            if not batch or self._client is None:
                return
            try:
                for i in range(0, len(batch), 1000):  # MLflow's limit per log_batch
                    self._client.log_batch(self._run_id, metrics=batch[i : i + 1000])
            except Exception as exc:  # a flaky tracking server must not kill a training run
                self._failures += 1
                steps = f"{batch[0].step}-{batch[-1].step}"
                logger.warning(
                    "MLflow logging failed for steps %s (%s); history file kept", steps, exc
                )

    def close(self) -> None:
        self.flush()
        self._file.close()
        if self._failures:
            logger.warning(
                "%d MLflow logging calls failed; the full history is in %s",
                self._failures,
                self.history_path,
            )
