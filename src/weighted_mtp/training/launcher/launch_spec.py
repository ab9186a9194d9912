"""What :func:`~weighted_mtp.training.launcher.launch` needs of a job: the :class:`LaunchSpec`
protocol.

The training :class:`~weighted_mtp.training.spec.JobSpec` satisfies it as it is; another kind
of torchrun job (data-parallel evaluation, a test's fake job) satisfies it with a few fields
and properties, without being a ``JobSpec``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from weighted_mtp.training.config import RuntimeParams


@runtime_checkable
class LaunchSpec(Protocol):
    """A job the launcher can run: read-only members, so a pydantic model, a (frozen)
    dataclass or a class with properties all satisfy it.

    Members:
        method: the job's kind (``"baseline"``, ``"evaluation"``, ...). With the run
            directory's name it gives the rendezvous id (:func:`~.command.rdzv_id`), and it
            labels the progress bar.
        run_path: the job's run directory; the launcher reports it in
            :class:`~weighted_mtp.training.launcher.LaunchResult` and names the rendezvous
            after its last component (so every node of a multi-node job must use the same
            name).
        log_dir: where the launcher writes ``rank_N.log``, ``torchrun.log``, torchrun's
            per-rank files and its error file (usually ``run_path / "logs"``).
        runtime: the process layout: ``nproc_per_node``, ``nnodes``, ``node_rank``,
            ``rdzv_endpoint`` and ``omp_threads`` are read.
        write(): writes the spec where the worker will read it and returns that path; every
            rank runs ``python -m <worker_module> <path>``.

    Progress needs nothing from the spec: the workers' events carry ``step`` and (optionally)
    ``max_steps``; without ``max_steps`` the display shows steps without a percentage or ETA.
    """

    @property
    def method(self) -> str: ...

    @property
    def run_path(self) -> Path: ...

    @property
    def log_dir(self) -> Path: ...

    @property
    def runtime(self) -> RuntimeParams: ...

    def write(self) -> Path: ...
