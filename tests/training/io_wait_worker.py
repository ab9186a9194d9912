"""A 2-process gloo job for test_run_identity: rank 0 does long "I/O" while the other rank
waits in :func:`~weighted_mtp.training.checkpoint.rank0_io` and
:func:`~weighted_mtp.training.checkpoint.wait_for_rank0`, longer than the training group's
timeout. Its own module so that the spawned processes import little."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from weighted_mtp.training.checkpoint import rank0_io, wait_for_rank0

#: The training process group's timeout: shorter than rank 0's I/O below.
GROUP_TIMEOUT_S = 3.0
IO_SECONDS = 4.5


def run(rank: int, store: str, out: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=GROUP_TIMEOUT_S),
    )
    try:
        with rank0_io(60.0) as group:
            if rank == 0:
                time.sleep(IO_SECONDS)  # the resume download and SHA check
        choice = ["step_00000004" if rank == 0 else None]
        dist.broadcast_object_list(choice, src=0, group=group)
        if rank == 0:
            time.sleep(IO_SECONDS)  # the final model write and upload
        wait_for_rank0(60.0)
        dist.barrier()  # the training group is still usable afterwards
        Path(f"{out}.{rank}").write_text(str(choice[0]))
    finally:
        dist.destroy_process_group()
