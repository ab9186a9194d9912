"""End to end: `kedro run` as a user runs it, in a copy of the project, offline.

The copy holds the project's own conf/ and raw MBPP file; everything else (synthetic
CodeContests, tokenizer, micro models, evaluation) is produced by the run itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

PROJECT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).parent / "kedro")

# Small enough for CI's 2 cores, large enough that every node has real work.
SMALL_RUN = ",".join(
    [
        "data_engineering.synthetic.n_train_tasks=40",
        "data_engineering.synthetic.n_valid_tasks=8",
        "data_engineering.synthetic.n_test_tasks=8",
        "data_engineering.tokenizer.vocab_size=512",
        "micro_models.mtp.dim=64",
        "micro_models.mtp.n_heads=4",
        "micro_models.reference.dim=32",
        "micro_models.reference.n_heads=2",
        "evaluation.datasets.humaneval.max_problems=3",
        "evaluation.datasets.mbpp.max_problems=3",
        "evaluation.datasets.codecontests.max_problems=3",
        "evaluation.generation.n_samples=2",
        "evaluation.generation.max_new_tokens=16",
    ]
)


def _run_kedro(project: Path, *args: str, tracking_uri: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [KEDRO, "run", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (
        f"kedro run {args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT / name, root / name)
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    # Kedro insists on the package living under the project's own source_dir.
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    raw_mbpp = root / "data" / "01_raw" / "mbpp"
    raw_mbpp.mkdir(parents=True)
    shutil.copy(PROJECT / "data" / "01_raw" / "mbpp" / "mbpp.jsonl", raw_mbpp / "mbpp.jsonl")
    return root


@pytest.mark.slow
def test_default_kedro_run_writes_every_output_and_logs_to_mlflow(project: Path):
    tracking_uri = f"sqlite:///{project / 'mlflow.db'}"
    _run_kedro(project, "--params", SMALL_RUN, tracking_uri=tracking_uri)

    data = project / "data"
    train = data / "05_model_input" / "codecontests" / "train.jsonl"
    meta = pd.read_parquet(data / "05_model_input" / "codecontests" / "train.metadata.parquet")
    n_lines = sum(1 for _ in train.open(encoding="utf-8"))
    assert len(meta) == n_lines > 40  # several solutions per task
    assert set(meta["is_correct"]) == {True, False}
    assert (data / "06_models" / "tokenizer" / "tokenizer.model").is_file()
    for model_dir in ("micro-mtp", "micro-ref"):
        assert (data / "06_models" / model_dir).is_dir()
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
    assert runs, "kedro-mlflow opened no run"
    run = runs[0]
    assert run.data.params["data_engineering.synthetic.n_train_tasks"] == "40"
    assert any(key.startswith("evaluation") for key in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/report.html" in artifacts


@pytest.mark.slow
def test_run_logs_to_a_remote_tracking_server(project: Path, mlflow_server: str):
    # Needs the tokenizer written by the default run above (same module-scoped project).
    _run_kedro(
        project,
        "--pipeline",
        "micro_models",
        "--params",
        "micro_models.mtp.dim=64,micro_models.mtp.n_heads=4",
        tracking_uri=mlflow_server,
    )
    client = mlflow.MlflowClient(mlflow_server)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.data.params.get("micro_models.mtp.dim") for r in runs] == ["64"]


@pytest.mark.slow
def test_kedro_viz_build_shows_every_pipeline(project: Path):
    proc = subprocess.run(
        [KEDRO, "viz", "build"],
        cwd=project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    graph = json.loads((project / "build" / "api" / "main").read_text())
    pipelines = {p["id"] for p in graph["pipelines"]}
    assert {"__default__", "data_engineering", "micro_models", "evaluation"} <= pipelines
    node_names = {n["name"] for n in graph["nodes"]}
    assert any("tokenizer" in name for name in node_names)


@pytest.mark.slow
def test_analysis_notebook_runs_against_the_catalog(project: Path):
    """The cells of notebooks/compare_methods.ipynb run as `kedro jupyter` would run them."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    notebook = json.loads((PROJECT / "notebooks" / "compare_methods.ipynb").read_text())
    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        context = session.load_context()
        namespace = {"catalog": context.catalog, "context": context, "session": session}
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                exec("".join(cell["source"]), namespace)  # noqa: S102 - our own notebook
    assert set(namespace["pivot"].columns) >= {"base_model", "canonical"}
    assert sum(namespace["status_counts"]["base_model"].values()) > 0
    assert namespace["meta"]["is_correct"].any()


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


def _latest_run(tracking_uri: str):
    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], order_by=["start_time DESC"]
    )
    return client, runs[0]


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
    client, run = _latest_run(tracking_uri)
    assert run.data.params["verifiable.max_steps"] == "3"
    assert run.data.params["verifiable.beta"] == "0.9"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == [1, 2, 3]
    assert client.get_metric_history(run.info.run_id, "weights/mean")
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
    client, run = _latest_run(tracking_uri)
    assert client.get_metric_history(run.info.run_id, "rho1/kept_ratio_head_1")


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

    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(
        [KEDRO, "run", "--pipeline", "baseline", "--params", params],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not any(checkpoints.glob("step_*/manifest.json")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out[-3000:]
    leftovers = subprocess.run(
        ["pgrep", "-f", "weighted_mtp.training.worker"], capture_output=True, text=True
    ).stdout.split()
    assert not leftovers, f"workers left behind: {leftovers}"
    saved = sorted(int(p.name[5:]) for p in checkpoints.glob("step_*"))
    assert saved and saved[-1] < 8

    again = _run_kedro(
        project, "--pipeline", "baseline", "--params", params, tracking_uri=tracking_uri
    )
    assert f"resuming from step {saved[-1]} of 8" in again.stdout + again.stderr
    final = pd.read_csv(history_csv).dropna(subset=["train/loss"])["train/loss"].iloc[-1]
    assert final == pytest.approx(expected, rel=1e-6)
