"""The launcher runs any :class:`LaunchSpec`, not only the training ``JobSpec``: a spec class of
this test and a worker that knows nothing of ``JobSpec`` (``tests.training.plain_spec_worker``)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from weighted_mtp.training.config import RuntimeParams
from weighted_mtp.training.launcher import LaunchResult, LaunchSpec, launch
from weighted_mtp.training.spec import JobSpec

ROOT = Path(__file__).resolve().parents[2]
WORKER = "tests.training.plain_spec_worker"
LOGGER = "weighted_mtp.training.launcher"


@dataclass(frozen=True)
class EchoSpec:
    """The least a job needs to be launched: a name, a run directory, a log directory, a
    process layout and a way to write itself where the worker reads it."""

    run_path: Path
    message: str
    runtime: RuntimeParams
    method: str = "echo"

    @property
    def log_dir(self) -> Path:
        return self.run_path / "logs"

    def write(self) -> Path:
        self.run_path.mkdir(parents=True, exist_ok=True)
        path = self.run_path / "echo.json"
        path.write_text(json.dumps({"message": self.message, "run_dir": str(self.run_path)}))
        return path


def test_the_training_spec_is_a_launch_spec(tmp_path: Path) -> None:
    spec = JobSpec(
        method="baseline", run_dir=str(tmp_path), params={}, init_model="m", train_jsonl="t"
    )
    assert isinstance(spec, LaunchSpec)
    assert not isinstance(object(), LaunchSpec)


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_a_spec_that_is_not_a_jobspec_runs_through_launch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "echo-run"
    spec = EchoSpec(run_dir, "hello", RuntimeParams(nproc_per_node=1, omp_threads=1))
    assert isinstance(spec, LaunchSpec) and not isinstance(spec, JobSpec)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = launch(spec, worker_module=WORKER, extra_env={"PYTHONPATH": path})

    assert isinstance(result, LaunchResult)
    assert result.returncode == 0 and result.run_dir == run_dir
    echoed = json.loads((run_dir / "echo_rank0.json").read_text())
    assert echoed == {"rank": 0, "world_size": 1, "message": "hello"}
    assert "plain worker rank 0/1: hello" in (run_dir / "logs" / "rank_0.log").read_text()
    # A train event without max_steps counts as the first step; the other phase is logged.
    assert result.first_step_seconds is not None
    assert result.last_event == {"phase": "evaluate", "message": "echoed"}
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert "[rank 0] plain worker rank 0/1: hello" in messages
    assert "evaluate | echoed" in messages
