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
