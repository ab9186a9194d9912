"""Start a job as torchrun worker processes and wait for it: the only place in the project
that spawns training (or other torchrun) processes.

:func:`launch` writes the job spec, runs ``python -m torch.distributed.run ... -m <worker> SPEC``
in its own session, streams every rank's output into the log (``[rank N] ...``) and into
``spec.log_dir/rank_N.log``, renders the workers' progress events (:mod:`.progress`), and turns
a failed worker into a :class:`TrainingJobError` carrying the worker's traceback. Whatever
happens to the calling process short of SIGKILL (Ctrl-C, SIGTERM, an exception), no worker
outlives the call. See ``docs/training_launcher.md``.

The package, one concern per module:

- :mod:`.launch_spec`: :class:`LaunchSpec`, what ``launch`` reads of a job (``JobSpec`` or any
  other spec with those members);
- :mod:`.command`: the torchrun command line and environment (rendezvous id and endpoint);
- :mod:`.processes`: the processes' lifecycle (session, signals, parent-death signal, process
  groups, stopping the job);
- :mod:`.rank_output`: torchrun's output and the per-rank log tailer;
- :mod:`.progress_render`: progress as log lines or a rich bar;
- :mod:`.failures`: torchrun's failure summary and error files as a :class:`TrainingJobError`;
- here: :func:`launch`, which ties them together, and :class:`LaunchResult`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weighted_mtp.training.launcher.command import build_command, build_env, free_port, rdzv_id
from weighted_mtp.training.launcher.failures import (
    _TORCHRUN_ERROR_FILE,
    ERROR_TAIL_LINES,
    TrainingJobError,
    _job_error,
)

# Reached as ``launcher._parse_failures`` by the tests that parse a failure summary.
from weighted_mtp.training.launcher.failures import _parse_failures as _parse_failures
from weighted_mtp.training.launcher.launch_spec import LaunchSpec
from weighted_mtp.training.launcher.processes import (
    STOP_GRACE_SECONDS,
    _JobProcesses,
    _sigterm_raises_systemexit,
    _with_parent_death_signal,
)
from weighted_mtp.training.launcher.progress_render import (
    PROGRESS_LOG_INTERVAL_SECONDS,
    _LogProgress,
    _make_renderer,
    _RichProgress,
)
from weighted_mtp.training.launcher.rank_output import (
    _POLL_SECONDS,
    _TORCHRUN_LOG,
    _TORCHRUN_SUBDIR,
    _RankLogTailer,
    _TorchrunOutput,
)

__all__ = [
    "ERROR_TAIL_LINES",
    "PROGRESS_LOG_INTERVAL_SECONDS",
    "STOP_GRACE_SECONDS",
    "LaunchResult",
    "LaunchSpec",
    "TrainingJobError",
    "build_command",
    "build_env",
    "free_port",
    "launch",
    "rdzv_id",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchResult:
    """What :func:`launch` reports about a job that finished successfully.

    Attributes:
        run_dir: the run directory.
        returncode: torchrun's exit code (0).
        wall_seconds: from the call to the end of the job.
        first_step_seconds: from the call to the first ``phase == "train"`` progress event
            (start-up cost: interpreter, torch import, rendezvous, model and data loading);
            None when the workers never reported a training step.
        last_event: the last progress event received, or None.
    """

    run_dir: Path
    returncode: int
    wall_seconds: float
    first_step_seconds: float | None
    last_event: dict[str, Any] | None


def launch(
    spec: LaunchSpec,
    *,
    worker_module: str = "weighted_mtp.training.worker",
    extra_env: dict[str, str] | None = None,
    show_progress: bool = True,
) -> LaunchResult:
    """Run the job described by ``spec`` under torchrun and wait for it to finish.

    Args:
        spec: the job, a :class:`~weighted_mtp.training.spec.JobSpec` or any other
            :class:`LaunchSpec`; written first by ``spec.write()``. ``spec.runtime`` gives the
            process layout (``nproc_per_node``, ``nnodes``, ``node_rank``, ``rdzv_endpoint``,
            ``omp_threads``).
        worker_module: module run by every rank as ``python -m <worker_module> <spec path>``
            (the path ``spec.write()`` returned).
        extra_env: added to the workers' environment (e.g. ``MLFLOW_RUN_ID``).
        show_progress: render progress events as a rich progress bar when stdout is a
            terminal; otherwise (or when False) they become periodic INFO log lines.

    Returns:
        A :class:`LaunchResult`.

    Raises:
        TrainingJobError: torchrun exited with a non-zero code (a worker failed, or the
            rendezvous did); the message names the failed rank(s), their exit code and the
            traceback or last lines of their log.
        KeyboardInterrupt, SystemExit: after stopping every process of the job, when the
            caller was interrupted (SIGINT) or terminated (SIGTERM, re-raised as
            ``SystemExit(143)``).
    """
    t0 = time.monotonic()
    spec_path = spec.write()
    log_dir = spec.log_dir
    torchrun_dir = log_dir / _TORCHRUN_SUBDIR
    torchrun_dir.mkdir(parents=True, exist_ok=True)
    old_attempt_dirs = set(torchrun_dir.iterdir())

    cmd = build_command(
        spec, worker_module=worker_module, spec_path=spec_path, torchrun_log_dir=torchrun_dir
    )
    env = build_env(spec, extra_env)
    # torchrun copies the root-cause worker's error file here, or writes its own error (e.g. a
    # rendezvous timeout); the workers get their own file from torchrun.
    error_file = log_dir / _TORCHRUN_ERROR_FILE
    error_file.unlink(missing_ok=True)
    env["TORCHELASTIC_ERROR_FILE"] = str(error_file)
    logger.info(
        "launching %s x %d process(es) on node %d/%d; logs in %s",
        worker_module,
        spec.runtime.nproc_per_node,
        spec.runtime.node_rank,
        spec.runtime.nnodes,
        log_dir,
    )
    logger.debug("torchrun command: %s", " ".join(cmd))

    events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
    tailer = _RankLogTailer(
        torchrun_dir,
        ignore=old_attempt_dirs,
        log_dir=log_dir,
        nnodes=spec.runtime.nnodes,
        node_rank=spec.runtime.node_rank,
        on_event=lambda event: events.put((time.monotonic() - t0, event)),
    )
    renderer: _LogProgress | _RichProgress = _make_renderer(spec, show_progress)
    first_step_seconds: float | None = None
    last_event: dict[str, Any] | None = None

    def handle(seconds: float, event: dict[str, Any]) -> None:
        nonlocal first_step_seconds, last_event, renderer
        last_event = event
        if first_step_seconds is None and event.get("phase", "train") == "train":
            first_step_seconds = seconds
        try:
            renderer.update(event)
        except Exception:
            # A display problem (odd terminal, unexpected event values) must not stop a run.
            logger.warning("progress display failed; logging progress instead", exc_info=True)
            with contextlib.suppress(Exception):
                renderer.close()
            renderer = _LogProgress()

    def drain_events(wait: float = 0.0) -> None:
        with contextlib.suppress(queue.Empty):
            # Block for the first one only: this is also the loop's sleep.
            item = events.get(timeout=wait) if wait > 0 else events.get_nowait()
            handle(*item)
            while True:
                handle(*events.get_nowait())

    torchrun_out = _TorchrunOutput(log_dir / _TORCHRUN_LOG)
    with _sigterm_raises_systemexit(), contextlib.ExitStack() as stack:
        # Run last to first on the way out: stop the processes, then collect their output.
        stack.callback(lambda: renderer.close())  # the renderer in use then
        stack.callback(torchrun_out.join)
        stack.callback(tailer.stop)
        proc = subprocess.Popen(
            _with_parent_death_signal(cmd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        tracker = _JobProcesses(proc)
        # Whatever ends this block early (Ctrl-C, SIGTERM, a bug here), the job is stopped.
        stack.callback(tracker.stop_all)
        torchrun_out.start(proc.stdout)
        tailer.start()

        next_scan = 0.0
        while proc.poll() is None:
            if time.monotonic() >= next_scan:
                # Workers are recorded while torchrun is alive: once it dies they are
                # re-parented and could not be found as its children any more.
                tracker.refresh()
                next_scan = time.monotonic() + 1.0
            drain_events(wait=_POLL_SECONDS)
        returncode = proc.returncode
        # Normally nothing is left; workers of a torchrun that crashed would be.
        tracker.stop_all()
        tailer.stop()
        drain_events()
        renderer.close()
        torchrun_out.join()

    wall = time.monotonic() - t0
    if returncode != 0:
        raise _job_error(returncode, torchrun_dir, old_attempt_dirs, tailer, torchrun_out)
    logger.info("training job finished in %.1f s", wall)
    return LaunchResult(
        run_dir=spec.run_path,
        returncode=returncode,
        wall_seconds=wall,
        first_step_seconds=first_step_seconds,
        last_event=last_event,
    )
