"""Progress events: how a torchrun worker tells the launcher how far training has got.

Rank 0 prints one line per event on its stdout::

    print(progress.format_event({"phase": "train", "step": 3, "max_steps": 10,
                                 "loss": 2.1, "tokens_per_s": 1234.5}), flush=True)

which produces::

    WMTP_PROGRESS {"phase":"train","step":3,"max_steps":10,"loss":2.1,"tokens_per_s":1234.5}

Format: the marker :data:`MARKER` at the very start of the line, one space, then a JSON object
on the same line (compact separators; ``json.dumps`` escapes any newline inside strings, so an
event is always one line). The launcher (:mod:`weighted_mtp.training.launcher`) picks these lines
out of the workers' stdout (not stderr), does not echo them, and renders them as a progress bar
on a terminal or as a periodic INFO log line otherwise; the last one becomes
``LaunchResult.last_event``. The line still lands in the rank's log file, so the log keeps the
full history. Only global rank 0 should print events: the launcher takes them from whichever
local rank prints them, since on a multi-node job it cannot tell which node hosts rank 0.

Keys (all optional; unknown keys, e.g. ``method``, are allowed and passed through):

``phase`` (str)
    ``"train"`` after an optimizer step (the default when missing), ``"validate"`` after a
    validation pass, or anything else (``"setup"``, ``"save"``, ``"done"``). Only ``"train"``
    events move the progress bar; the others are logged as one line each. The launcher's
    ``first_step_seconds`` is the time to the first ``"train"`` event.
``step`` (int)
    optimizer steps completed (1-based: ``step == max_steps`` is the last one).
``max_steps`` (int)
    total optimizer steps of the run.
``loss`` (float)
    the loss of that step (training loss for ``"train"``, validation loss for ``"validate"``).
``tokens_per_s`` (float)
    training throughput, tokens per second over all ranks.
``val_loss`` (float), ``lr`` (float)
    shown when present.
``message`` (str)
    free text, shown for any phase.

Values must be JSON-serialisable; ``format_event`` converts objects with ``.item()`` (0-d torch
tensors, numpy scalars) so ``loss.item()`` can be omitted. NaN/inf are written as JSON's
``NaN``/``Infinity`` extensions, which :func:`parse_event` reads back.
"""

from __future__ import annotations

import json
from typing import Any

MARKER = "WMTP_PROGRESS"
_PREFIX = MARKER + " "


def _to_json(value: Any) -> Any:
    # Workers hold metrics as 0-d tensors or numpy scalars; .item() is the common protocol.
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"progress event value of type {type(value).__name__} is not JSON-serialisable")


def format_event(event: dict[str, Any]) -> str:
    """Return the one-line progress event for ``event`` (no trailing newline).

    Raises ``TypeError`` when ``event`` is not a dict or holds a value that cannot be
    serialised.
    """
    if not isinstance(event, dict):
        raise TypeError(f"a progress event is a dict, got {type(event).__name__}")
    return _PREFIX + json.dumps(event, separators=(",", ":"), default=_to_json)


def parse_event(line: str) -> dict[str, Any] | None:
    """Return the event dict of a line printed by :func:`format_event`, else None.

    Surrounding whitespace (the newline, a ``\\r``) is ignored; a line that merely mentions
    the marker elsewhere, or whose JSON is malformed or not an object, gives None.
    """
    text = line.strip()
    if not text.startswith(_PREFIX):
        return None
    try:
        event = json.loads(text[len(_PREFIX) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def hms(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS`` (an ETA in a progress line)."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
