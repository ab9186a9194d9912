"""A stand-in training worker for the launcher tests: ``python -m tests.training.fake_worker SPEC``.

It does what a real worker does at the process level (reads the spec, joins the gloo group,
prints progress from rank 0, writes a result) without a model, so the tests exercise the
launcher and torchrun in a few seconds. ``spec.params["behaviour"]`` selects the scenario:

* ``ok``: rank 0 prints progress events; every rank all-reduces ``rank + 1`` and writes
  ``run_dir/result_rank{N}.json``.
* ``raise_on_rank1``: rank 1 raises ``ValueError("boom from rank 1")`` (rank 0 waits in a
  barrier that never completes).
* ``sleep``: every rank writes ``run_dir/pid_rank{N}`` (its pid) and ``ppid_rank{N}`` (the
  torchrun agent's pid), then sleeps until killed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from weighted_mtp.training import progress
from weighted_mtp.training.spec import JobSpec


def _write_atomic(path: Path, text: str) -> None:
    # The test polls these files; a rename means it never reads a half-written one.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@record
def main(argv: list[str] | None = None) -> None:
    """Run the behaviour named in the spec (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    spec = JobSpec.read(argv[0])
    behaviour = spec.params.get("behaviour", "ok")
    max_steps = int(spec.params.get("max_steps", 5))
    run_dir = spec.run_path

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    print(f"fake worker rank {rank}/{world} behaviour={behaviour}", flush=True)
    print(f"rank {rank} says hello on stderr", file=sys.stderr, flush=True)

    if behaviour == "sleep":
        _write_atomic(run_dir / f"ppid_rank{rank}", str(os.getppid()))
        _write_atomic(run_dir / f"pid_rank{rank}", str(os.getpid()))
        while True:
            time.sleep(1)

    if behaviour == "raise_on_rank1":
        if rank == 1:
            raise ValueError("boom from rank 1")
        dist.barrier()

    if rank == 0:
        print(progress.format_event({"phase": "setup", "message": "fake model ready"}), flush=True)
    for step in range(1, max_steps + 1):
        if rank == 0:
            event = {
                "phase": "train",
                "step": step,
                "max_steps": max_steps,
                "loss": round(3.0 / step, 4),
                "tokens_per_s": 1000.0 + step,
            }
            print(progress.format_event(event), flush=True)
        time.sleep(0.05)

    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    _write_atomic(
        run_dir / f"result_rank{rank}.json",
        json.dumps({"rank": rank, "world_size": world, "sum": total.item()}),
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
