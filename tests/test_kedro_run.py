"""End to end: `kedro run` as a user runs it, in a copy of the project, offline.

The copy holds the project's own conf/ and raw MBPP file; everything else (synthetic
CodeContests, tokenizer, micro models, evaluation) is produced by the run itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.tiny_project import KEDRO, kedro_env, params_arg, run_kedro, tiny_settings

PROJECT = Path(__file__).resolve().parents[1]
SMALL_RUN = params_arg(tiny_settings())
_run_kedro = run_kedro


@pytest.fixture(scope="module")
def project(default_run: Path, tmp_path_factory) -> Path:
    """A copy of the tiny default run's project, for the tests that run more pipelines."""
    root = tmp_path_factory.mktemp("project") / "project"
    shutil.copytree(default_run, root, ignore=shutil.ignore_patterns("build", "mlflow.db"))
    return root


@pytest.mark.slow
def test_default_kedro_run_writes_every_output_and_logs_to_mlflow(default_run: Path):
    project = default_run
    tracking_uri = f"sqlite:///{project / 'mlflow.db'}"

    data = project / "data"
    train = data / "05_model_input" / "codecontests" / "train.jsonl"
    meta = pd.read_parquet(data / "05_model_input" / "codecontests" / "train.metadata.parquet")
    n_lines = sum(1 for _ in train.open(encoding="utf-8"))
    assert len(meta) == n_lines > 40  # several solutions per task
    assert set(meta["is_correct"]) == {True, False}
    assert (data / "06_models" / "tokenizer" / "tokenizer.model").is_file()
    # The whole experiment: the pretrained base model and every method's model.
    for model_dir in ("micro-mtp-init", "micro-mtp", "micro-ref", "micro-ref-tuned"):
        assert (data / "06_models" / model_dir).is_dir()
    base = json.loads((data / "06_models" / "micro-mtp" / "metadata.json").read_text())
    assert base["method"] == "pretrain" and base["steps"] == 3
    for method in ("baseline", "critic", "verifiable", "verifiable_uniform", "rho1"):
        meta = json.loads((data / "06_models" / method / "metadata.json").read_text())
        assert meta["method"] == method and meta["steps"] == 3
        history = pd.read_csv(data / "08_reporting" / "training" / f"{method}_history.csv")
        assert history["step"].max() == 3
    verifiable = json.loads((data / "06_models" / "verifiable" / "metadata.json").read_text())
    assert verifiable["init_model"].endswith("06_models/critic")
    results = json.loads((data / "08_reporting" / "evaluation" / "results.json").read_text())
    assert "canonical" in json.dumps(results)
    table = pd.read_csv(data / "08_reporting" / "evaluation" / "pass_at_k.csv")
    assert {"humaneval", "mbpp", "codecontests"} <= set(table["dataset"])
    png = (data / "08_reporting" / "evaluation" / "pass_at_k.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], order_by=["start_time DESC"]
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, "kedro-mlflow opened no run, or several"
    run = parents[0]
    # One nested run per training job, each with its own step history.
    jobs = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert jobs == {
        "pretrain",
        "baseline",
        "critic",
        "verifiable",
        "verifiable_uniform",
        "reference",
        "rho1",
    }
    assert run.data.params["data_engineering.synthetic.n_train_tasks"] == "40"
    assert any(key.startswith("evaluation") for key in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/report.html" in artifacts


def _tiny_training(method: str, **extra: object) -> str:
    settings = {
        "max_steps": 3,
        "batch_size": 2,
        "max_seq_len": 256,
        "eval_every": 3,
        "val_samples": 4,
        "warmup_steps": 1,
        **extra,
    }
    return ",".join(f"{method}.{key}={value}" for key, value in settings.items())


def _latest_run(tracking_uri: str, job: str):
    """``(client, kedro run, job run)``: the newest top-level run (kedro-mlflow's, holding the
    parameters) and the run nested in it for training job ``job`` (its step metrics)."""
    client = mlflow.MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, order_by=["start_time DESC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    nested = [
        r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id and r.info.run_name == job
    ]
    assert len(nested) == 1, [r.info.run_name for r in runs]
    return client, parent, nested[0]


@pytest.mark.slow
@pytest.mark.distributed
def test_critic_then_verifiable_through_the_catalog(project: Path):
    """`kedro run --pipeline critic`, then `--pipeline verifiable` on 2 FSDP2 processes: the
    critic's model directory is the verifiable run's input, and the MLflow run holds the
    parameters and the per-step metric history."""
    tracking_uri = f"sqlite:///{project / 'mlflow.db'}"
    _run_kedro(
        project,
        "--pipeline",
        "critic",
        "--params",
        _tiny_training("critic"),
        tracking_uri=tracking_uri,
    )
    critic = json.loads((project / "data/06_models/critic/metadata.json").read_text())
    assert critic["method"] == "critic" and critic["has_value_head"]
    params = _tiny_training("verifiable") + ",runtime.nproc_per_node=2,runtime.strategy=fsdp"
    _run_kedro(project, "--pipeline", "verifiable", "--params", params, tracking_uri=tracking_uri)
    verifiable = json.loads((project / "data/06_models/verifiable/metadata.json").read_text())
    assert verifiable["method"] == "verifiable" and verifiable["steps"] == 3
    assert verifiable["init_model"].endswith("06_models/critic")
    assert verifiable["world_size"] == 2 and verifiable["strategy"] == "fsdp"
    client, run, job = _latest_run(tracking_uri, "verifiable")
    assert run.data.params["verifiable.max_steps"] == "3"
    assert run.data.params["verifiable.beta"] == "0.1"  # conf/base/parameters_verifiable.yml
    steps = [m.step for m in client.get_metric_history(job.info.run_id, "train/loss")]
    assert sorted(steps) == [1, 2, 3]
    assert client.get_metric_history(job.info.run_id, "weights/mean")
    history = pd.read_csv(project / "data/08_reporting/training/verifiable_history.csv")
    assert history["step"].max() == 3


@pytest.mark.slow
@pytest.mark.distributed
def test_rho1_tunes_its_reference_then_trains(project: Path):
    tracking_uri = f"sqlite:///{project / 'mlflow.db'}"
    params = ",".join([_tiny_training("rho1"), _tiny_training("rho1.reference_tuning")])
    _run_kedro(project, "--pipeline", "rho1", "--params", params, tracking_uri=tracking_uri)
    assert (project / "data/06_models/micro-ref-tuned/config.json").is_file()
    rho1 = json.loads((project / "data/06_models/rho1/metadata.json").read_text())
    assert rho1["method"] == "rho1"
    assert rho1["reference_model"].endswith("06_models/micro-ref-tuned")
    client, _, job = _latest_run(tracking_uri, "rho1")
    assert client.get_metric_history(job.info.run_id, "rho1/kept_ratio_head_1")


@pytest.mark.slow
@pytest.mark.distributed
def test_ctrl_c_then_run_again_resumes(project: Path):
    """Interrupted with Ctrl-C (SIGINT to `kedro run`): no worker is left behind; run again,
    it resumes (the log says from which step) and ends with the uninterrupted run's loss."""
    import signal
    import time

    tracking_uri = f"sqlite:///{project / 'mlflow.db'}"
    params = _tiny_training("baseline", max_steps=8, save_every=2, eval_every=8)
    checkpoints = project / "data/06_models/checkpoints/baseline"
    history_csv = project / "data/08_reporting/training/baseline_history.csv"
    _run_kedro(
        project,
        "--pipeline",
        "baseline",
        "--params",
        params + ",baseline.resume=never",
        tracking_uri=tracking_uri,
    )
    expected = pd.read_csv(history_csv).dropna(subset=["train/loss"])["train/loss"].iloc[-1]
    shutil.rmtree(checkpoints)

    env = kedro_env(tracking_uri)
    # A suite started in the background (`pytest &`, some CI runners) inherits SIGINT ignored,
    # and an ignored signal stays ignored across exec: kedro would never see the Ctrl-C that a
    # user's terminal delivers. A handler (not SIG_IGN) in this process resets to the default
    # in the child, as from a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [KEDRO, "run", "--pipeline", "baseline", "--params", params],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.time() + 300
    # One directory per run identity; a checkpoint is complete once its manifest is written.
    while time.time() < deadline and not any(checkpoints.glob("*/step_*/manifest.json")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out[-3000:]
    # This project's workers only: other runs may share the machine.
    leftovers = subprocess.run(
        ["pgrep", "-f", f"weighted_mtp.training.worker {project}/"], capture_output=True, text=True
    ).stdout.split()
    assert not leftovers, f"workers left behind: {leftovers}"
    saved = sorted(int(p.parent.name[5:]) for p in checkpoints.glob("*/step_*/manifest.json"))
    assert saved and saved[-1] < 8

    again = _run_kedro(
        project, "--pipeline", "baseline", "--params", params, tracking_uri=tracking_uri
    )
    assert f"resuming from step {saved[-1]} of 8" in again.stdout + again.stderr
    final = pd.read_csv(history_csv).dropna(subset=["train/loss"])["train/loss"].iloc[-1]
    assert final == pytest.approx(expected, rel=1e-6)
