"""A torchrun worker that knows nothing of ``JobSpec``, for the launcher's ``LaunchSpec`` test:
``python -m tests.training.plain_spec_worker SPEC``.

``SPEC`` is a plain JSON object (``{"message": ..., "run_dir": ...}``, written by the test's own
spec class). The worker prints a progress event without ``max_steps`` and one of another phase,
echoes the message, and writes ``run_dir/echo_rank{RANK}.json``. It imports no torch, so the
test costs torchrun's start-up only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from weighted_mtp.training import progress


def main(argv: list[str] | None = None) -> None:
    """Echo the spec's message as described in the module docstring."""
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    print(f"plain worker rank {rank}/{world}: {spec['message']}", flush=True)
    print(progress.format_event({"phase": "train", "step": 1}), flush=True)
    print(progress.format_event({"phase": "evaluate", "message": "echoed"}), flush=True)
    result = {"rank": rank, "world_size": world, "message": spec["message"]}
    out = Path(spec["run_dir"]) / f"echo_rank{rank}.json"
    out.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
