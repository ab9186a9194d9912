"""Rendering the workers' progress events: INFO log lines at each further 10% (or every 30 s),
or a rich progress bar when stdout is a terminal."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from weighted_mtp.training.launcher.launch_spec import LaunchSpec
from weighted_mtp.training.progress import hms

# One logger for the whole launcher package: the name users filter on (see the docs).
logger = logging.getLogger("weighted_mtp.training.launcher")

#: Without a terminal, a progress line is logged at each 10% of the steps or after this long.
PROGRESS_LOG_INTERVAL_SECONDS = 30.0


class _LogProgress:
    """Progress as INFO lines: at each further 10% of the steps, or when the last line is
    older than :data:`PROGRESS_LOG_INTERVAL_SECONDS` (so CI output and log files stay short)."""

    def __init__(self) -> None:
        self._last_log = time.monotonic()
        self._last_decile = -1
        self._first: tuple[float, int] | None = None

    def update(self, event: dict[str, Any]) -> None:
        phase = event.get("phase", "train")
        if phase != "train":
            logger.info("%s", _describe(event))
            return
        now = time.monotonic()
        step, max_steps = event.get("step"), event.get("max_steps")
        if not isinstance(step, int):
            return
        if self._first is None:
            self._first = (now, step)
        decile = step * 10 // max_steps if isinstance(max_steps, int) and max_steps > 0 else -1
        due = now - self._last_log >= PROGRESS_LOG_INTERVAL_SECONDS
        if decile > self._last_decile or due or step == max_steps:
            self._last_decile = max(decile, self._last_decile)
            self._last_log = now
            text = _describe(event)
            eta = self._eta(now, step, max_steps)
            logger.info("%s%s", text, f" | ETA {hms(eta)}" if eta is not None else "")

    def _eta(self, now: float, step: int, max_steps: Any) -> float | None:
        if self._first is None or not isinstance(max_steps, int):
            return None
        t_first, step_first = self._first
        if step <= step_first:
            return None
        return (now - t_first) / (step - step_first) * max(0, max_steps - step)

    def close(self) -> None:
        pass


class _RichProgress:
    """A rich progress bar (step/max_steps, loss, tokens/s, ETA) on the console that Kedro's
    rich logging handler also writes to, so log lines scroll above the bar."""

    def __init__(self, description: str) -> None:
        self._description = description
        self._progress: Any = None
        self._task: Any = None

    def update(self, event: dict[str, Any]) -> None:
        phase = event.get("phase", "train")
        step, max_steps = event.get("step"), event.get("max_steps")
        # Generation workers report sequences done against the total the same way.
        if phase not in ("train", "generate") or not isinstance(step, int):
            logger.info("%s", _describe(event))
            return
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self._description,
                total=max_steps if isinstance(max_steps, int) else None,
                metrics="",
            )
        self._progress.update(self._task, completed=step, metrics=_metrics(event))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _make_renderer(spec: LaunchSpec, show_progress: bool) -> _LogProgress | _RichProgress:
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        tty = False
    if show_progress and tty:
        return _RichProgress(f"{spec.method} ({spec.runtime.nproc_per_node}x)")
    return _LogProgress()


def _metrics(event: dict[str, Any]) -> str:
    parts = []
    for key, fmt in (("loss", "loss {:.4f}"), ("val_loss", "val_loss {:.4f}"), ("lr", "lr {:.2e}")):
        if isinstance(event.get(key), (int, float)):
            parts.append(fmt.format(event[key]))
    if isinstance(event.get("tokens_per_s"), (int, float)):
        parts.append(f"{event['tokens_per_s']:,.0f} tok/s")
    return " | ".join(parts)


def _describe(event: dict[str, Any]) -> str:
    phase = event.get("phase", "train")
    head = str(phase)
    step, max_steps = event.get("step"), event.get("max_steps")
    if isinstance(step, int):
        head += f" step {step}" + (f"/{max_steps}" if isinstance(max_steps, int) else "")
        if isinstance(max_steps, int) and max_steps > 0:
            head += f" ({100 * step // max_steps}%)"
    rest = [_metrics(event)] if _metrics(event) else []
    if "message" in event:
        rest.append(str(event["message"]))
    return " | ".join([head, *rest])
