"""The torchrun launcher, run for real with a fake worker (``tests.training.fake_worker``)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from weighted_mtp.training import launcher, progress
from weighted_mtp.training.config import RuntimeParams
from weighted_mtp.training.launcher import LaunchResult, TrainingJobError, launch
from weighted_mtp.training.spec import JobSpec

ROOT = Path(__file__).resolve().parents[2]
WORKER = "tests.training.fake_worker"
LOGGER = "weighted_mtp.training.launcher"


def _spec(run_dir: Path, behaviour: str, nproc: int = 2, **params) -> JobSpec:
    return JobSpec(
        method="baseline",
        run_dir=str(run_dir),
        init_model="unused",
        train_jsonl="unused",
        params={"behaviour": behaviour, **params},
        runtime=RuntimeParams(nproc_per_node=nproc, omp_threads=1),
    )


def _env() -> dict[str, str]:
    # The workers import the fake worker from the project root whatever pytest's cwd is.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}


def _launch(spec: JobSpec) -> LaunchResult:
    return launch(spec, worker_module=WORKER, extra_env=_env(), show_progress=False)


def _result(run_dir: Path, rank: int) -> dict:
    return json.loads((run_dir / f"result_rank{rank}.json").read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed worker whose parent (torchrun) died first is re-parented to the machine's init,
    # which is outside our control and may reap it late: a zombie runs nothing.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


# --------------------------------------------------------------------------- no processes


def test_progress_event_round_trip() -> None:
    event = {"phase": "train", "step": 3, "max_steps": 10, "loss": 2.1, "tokens_per_s": 1234.5}
    line = progress.format_event(event)
    assert line.startswith(progress.MARKER + " ") and "\n" not in line
    assert progress.parse_event(line) == event
    assert progress.parse_event(line + "\r\n") == event
    assert progress.format_event({"message": "a\nb"}).count("\n") == 0
    assert progress.parse_event(progress.format_event({"loss": torch.tensor(1.5)})) == {"loss": 1.5}
    for other in ("step 3 loss 2.1", "", "WMTP_PROGRESS not json", 'WMTP_PROGRESS ["list"]'):
        assert progress.parse_event(other) is None
    assert progress.parse_event("[rank 0] " + line) is None
    with pytest.raises(TypeError):
        progress.format_event({"x": object()})


def test_command_line_single_and_multi_node(tmp_path: Path) -> None:
    single = _spec(tmp_path / "a", "ok", nproc=3)
    cmd = launcher.build_command(
        single, worker_module=WORKER, spec_path=single.spec_path, torchrun_log_dir=tmp_path
    )
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=3" in cmd and "--nnodes=1" in cmd
    assert "--rdzv-endpoint=127.0.0.1:0" in cmd and "--local-addr=127.0.0.1" in cmd
    assert cmd[-3:] == ["-m", WORKER, str(single.spec_path)]

    runtime = RuntimeParams(nproc_per_node=2, nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.5:29400")
    multi = single.model_copy(update={"runtime": runtime})
    cmd = launcher.build_command(
        multi, worker_module=WORKER, spec_path=multi.spec_path, torchrun_log_dir=tmp_path
    )
    # Static rendezvous: node_rank fixes the global ranks (node 0 hosts rank 0, the writer).
    assert "--rdzv-backend=static" in cmd and "--node-rank=1" in cmd
    assert "--master-addr=10.0.0.5" in cmd and "--master-port=29400" in cmd
    assert "--local-addr=127.0.0.1" not in cmd
    bad = runtime.model_copy(update={"rdzv_endpoint": "10.0.0.5"})
    with pytest.raises(ValueError, match="expected host:port"):
        launcher.build_command(
            multi.model_copy(update={"runtime": bad}),
            worker_module=WORKER,
            spec_path=multi.spec_path,
            torchrun_log_dir=tmp_path,
        )
    # Every node derives the same id from the run, wherever its run directory lives.
    elsewhere = multi.model_copy(update={"run_dir": str(tmp_path / "other" / "a")})
    assert launcher.rdzv_id(multi) == launcher.rdzv_id(elsewhere)
    assert launcher.rdzv_id(multi) != launcher.rdzv_id(_spec(tmp_path / "b", "ok"))

    env = launcher.build_env(single, {"MLFLOW_RUN_ID": "abc"})
    assert env["OMP_NUM_THREADS"] == "1" and env["MLFLOW_RUN_ID"] == "abc"
    assert env["PYTHONUNBUFFERED"] == "1" and env["KEDRO_DISABLE_TELEMETRY"] == "1"
    default = single.model_copy(update={"runtime": RuntimeParams(nproc_per_node=2)})
    expected = max(1, (os.cpu_count() or 1) // 2)
    assert launcher.build_env(default)["OMP_NUM_THREADS"] == str(expected)
    assert 0 < launcher.free_port() < 65536


def test_progress_lines_are_throttled_without_terminal(caplog: pytest.LogCaptureFixture) -> None:
    renderer = launcher._LogProgress()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for step in range(1, 1001):
            renderer.update({"phase": "train", "step": step, "max_steps": 1000, "loss": 1.0})
    lines = [r.getMessage() for r in caplog.records]
    assert 10 <= len(lines) <= 12, lines
    assert lines[-1].startswith("train step 1000/1000 (100%) | loss 1.0000")


def test_failure_summary_is_parsed() -> None:
    text = textwrap.dedent(
        """\
        Failures:
        [1]:
          rank      : 0 (local_rank: 0)
          exitcode  : -15 (pid: 11)  (SIGTERM)
        ------------------------------------------------------------
        Root Cause (first observed failure):
        [0]:
          rank      : 3 (local_rank: 1)
          exitcode  : 1 (pid: 12)
        """
    )
    failures = launcher._parse_failures(text)
    assert [(f.rank, f.local_rank, f.exitcode, f.root_cause) for f in failures] == [
        (0, 0, -15, False),
        (3, 1, 1, True),
    ]


# --------------------------------------------------------------------------- torchrun


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_two_processes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = _launch(_spec(run_dir, "ok", max_steps=4))

    assert result.returncode == 0 and result.run_dir == run_dir
    for rank in (0, 1):
        assert _result(run_dir, rank) == {"rank": rank, "world_size": 2, "sum": 3.0}
        log = (run_dir / "logs" / f"rank_{rank}.log").read_text()
        assert f"fake worker rank {rank}/2 behaviour=ok" in log
        assert f"rank {rank} says hello on stderr" in log  # stderr lands in the same file
    assert result.last_event == {
        "phase": "train",
        "step": 4,
        "max_steps": 4,
        "loss": 0.75,
        "tokens_per_s": 1004.0,
    }
    assert result.first_step_seconds is not None
    assert 0 < result.first_step_seconds <= result.wall_seconds

    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert "[rank 1] fake worker rank 1/2 behaviour=ok" in messages
    assert "[rank 0] rank 0 says hello on stderr" in messages
    assert not any(progress.MARKER in m for m in messages)  # rendered, not echoed
    assert any(m.startswith("train step 4/4 (100%) | loss 0.7500") for m in messages)


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_one_process_takes_the_same_path(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = _launch(_spec(run_dir, "ok", nproc=1, max_steps=2))
    assert result.returncode == 0
    assert _result(run_dir, 0) == {"rank": 0, "world_size": 1, "sum": 1.0}
    assert (run_dir / "logs" / "rank_0.log").exists()
    assert not (run_dir / "logs" / "rank_1.log").exists()
    assert result.last_event is not None and result.last_event["step"] == 2


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_two_jobs_at_once(tmp_path: Path) -> None:
    outcomes: dict[str, LaunchResult | BaseException] = {}

    def run(name: str) -> None:
        try:
            outcomes[name] = _launch(_spec(tmp_path / name, "ok", max_steps=2))
        except BaseException as exc:  # reported by the assertion below
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=110)
    for name in ("a", "b"):
        outcome = outcomes[name]
        assert isinstance(outcome, LaunchResult), outcome
        assert _result(tmp_path / name, 1)["sum"] == 3.0


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_torchrun_starts_without_python_between_fork_and_exec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``preexec_fn`` makes CPython fork and run Python (every at-fork hook, torch's
    included) in the child: launched from a thread of a process that had run FSDP2 in-process,
    that child died by SIGSEGV before torchrun started. The parent-death signal is set by an
    exec shim instead, and it survives the exec into torchrun."""
    spawned: list[tuple[list[str], dict]] = []
    real_popen = launcher.subprocess.Popen

    def recording_popen(args, **kwargs):
        spawned.append((list(args), kwargs))
        return real_popen(args, **kwargs)

    monkeypatch.setattr(launcher.subprocess, "Popen", recording_popen)
    outcome: list[LaunchResult | BaseException] = []

    def run() -> None:
        try:
            outcome.append(_launch(_spec(tmp_path / "run", "ok", nproc=1, max_steps=1)))
        except BaseException as exc:  # reported by the assertion below
            outcome.append(exc)

    thread = threading.Thread(target=run)  # as the tests and notebooks launch
    thread.start()
    thread.join(timeout=110)
    assert outcome and isinstance(outcome[0], LaunchResult), outcome
    (cmd, kwargs), *_ = spawned
    assert kwargs.get("preexec_fn") is None
    assert "torch.distributed.run" in cmd

    # The shim's prctl outlives the exec: the exec'd program reads its own PR_GET_PDEATHSIG.
    probe = (
        "import ctypes, signal; v = ctypes.c_int(); "
        "ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); "  # PR_GET_PDEATHSIG
        "assert v.value == signal.SIGTERM, v.value"
    )
    shimmed = launcher._with_parent_death_signal([sys.executable, "-c", probe])
    assert subprocess.run(shimmed, timeout=60).returncode == 0


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_worker_failure_names_the_rank_and_its_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingJobError) as info:
        _launch(_spec(tmp_path / "run", "raise_on_rank1"))
    err = info.value
    message = str(err)
    assert "rank 1 (exit code 1)" in message
    assert "ValueError: boom from rank 1" in message
    assert err.failed_ranks == [1] and err.returncode != 0
    assert "boom from rank 1" in (tmp_path / "run" / "logs" / "rank_1.log").read_text()


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_two_nodes_on_one_machine(tmp_path: Path) -> None:
    """The multi-node path (static rendezvous on a given endpoint), as two 1-process
    "nodes"."""
    endpoint = f"127.0.0.1:{launcher.free_port()}"
    outcomes: dict[int, LaunchResult | BaseException] = {}

    def run(node: int) -> None:
        runtime = RuntimeParams(
            nproc_per_node=1, nnodes=2, node_rank=node, rdzv_endpoint=endpoint, omp_threads=1
        )
        # Same run name on both nodes (it gives the rendezvous id), separate directories.
        spec = _spec(tmp_path / f"node{node}" / "run", "ok", max_steps=2)
        try:
            outcomes[node] = _launch(spec.model_copy(update={"runtime": runtime}))
        except BaseException as exc:  # reported by the assertion below
            outcomes[node] = exc

    threads = [threading.Thread(target=run, args=(node,)) for node in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=110)
    results = [outcomes[node] for node in (0, 1)]
    assert all(isinstance(r, LaunchResult) for r in results), results
    ranks = set()
    for node in (0, 1):
        run_dir = tmp_path / f"node{node}" / "run"
        assert (run_dir / "logs" / f"node{node}_local_rank_0.log").exists()
        for result_file in run_dir.glob("result_rank*.json"):
            result = json.loads(result_file.read_text())
            assert result["world_size"] == 2 and result["sum"] == 3.0
            ranks.add(result["rank"])
    assert ranks == {0, 1}
    # node_rank 0 hosts global rank 0, the only rank that reports progress.
    assert [r.last_event is not None for r in results] == [True, False]  # type: ignore[union-attr]


_INTERRUPTED_PARENT = """
import signal, sys
# A parent started in the background may inherit SIGINT ignored; a terminal's is not.
signal.signal(signal.SIGINT, signal.default_int_handler)
from weighted_mtp.training.launcher import launch
from weighted_mtp.training.spec import JobSpec
spec = JobSpec.model_validate_json(sys.argv[1])
try:
    launch(spec, worker_module=sys.argv[2], extra_env={"PYTHONPATH": sys.argv[3]},
           show_progress=False)
except KeyboardInterrupt:
    sys.exit(42)
sys.exit(1)
"""


@pytest.mark.distributed
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("sig", "exit_code"),
    [(signal.SIGINT, 42), (signal.SIGTERM, 128 + signal.SIGTERM)],
    ids=["SIGINT", "SIGTERM"],
)
def test_interrupt_stops_every_process(tmp_path: Path, sig: signal.Signals, exit_code: int) -> None:
    run_dir = tmp_path / "run"
    spec = _spec(run_dir, "sleep")
    parent = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED_PARENT, spec.model_dump_json(), WORKER, str(ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so that this test can clean up if the launcher does not
    )
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 90
        files = [run_dir / f"{kind}_rank{r}" for kind in ("pid", "ppid") for r in (0, 1)]
        while not all(f.exists() for f in files):
            assert parent.poll() is None, parent.communicate()[0].decode()
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.2)
        pids = sorted({int(f.read_text()) for f in files})
        assert len(pids) == 3  # two workers and torchrun
        assert all(_alive(pid) for pid in pids)

        parent.send_signal(sig)
        output = parent.communicate(timeout=60)[0].decode()
        # SIGINT: KeyboardInterrupt re-raised after the cleanup; SIGTERM: SystemExit(143).
        assert parent.returncode == exit_code, output

        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if _alive(pid)], output
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in pids:
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
