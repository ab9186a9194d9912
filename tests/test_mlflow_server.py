"""MLflow: one `kedro run` (data, micro models with their pretraining, baseline training,
evaluation) logging to a real `mlflow server` on 127.0.0.1: the parameters, the per-step
history the torchrun workers send, the trained models' link to the run and the report all land
in the run kedro-mlflow opens, in the experiment that conf/base/mlflow.yml names.

Two training jobs run in that one `kedro run` (the micro model's pretraining and baseline), as
in the default run, which has six: each job's step history must stay its own.

The server is this module's own (sqlite store and artifacts in a temporary directory), so the
runs it holds are this module's only.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tests.test_kedro_run import (  # noqa: F401 - `project` is the module-scoped project copy
    SMALL_RUN,
    _run_kedro,
    _tiny_training,
    project,
)

PROJECT = Path(__file__).resolve().parents[1]
STEPS = 3
LR = 0.0023  # not a default, so that the logged value can only come from --params
EVALUATED = ["base_model", "baseline_model"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracking_server(mlflow_server: str) -> str:
    """The session's `mlflow server` on 127.0.0.1 (tests/conftest.py); only this module logs
    to it, so the runs it holds are this module's."""
    return mlflow_server


@pytest.fixture(scope="module")
def logged_run(project: Path, tracking_server: str):  # noqa: F811 - the imported fixture
    """Runs the pipelines once; returns ``(client, run)``."""
    # The evaluated models shape the pipeline, so they are configuration, not --params.
    (project / "conf" / "local" / "parameters_evaluation.yml").write_text(
        yaml.safe_dump({"evaluation": {"models": EVALUATED}})
    )
    params = ",".join(
        [
            SMALL_RUN,
            _tiny_training("micro_models.pretraining", max_steps=STEPS),
            _tiny_training("baseline", max_steps=STEPS, lr=LR),
        ]
    )
    _run_kedro(
        project,
        "--pipelines",
        "data_engineering,micro_models,baseline,evaluation",
        "--params",
        params,
        tracking_uri=tracking_server,
    )
    client = mlflow.MlflowClient(tracking_server)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    return client, parents[0]


def _job_history(client: mlflow.MlflowClient, run, job: str, key: str) -> list:
    """The metric history of ``key`` logged by training job ``job`` (``baseline``,
    ``pretrain``...) of the kedro run ``run``: from a nested run named ``job``, or from
    ``<job>/<key>`` in the run itself, whichever way the project keeps jobs apart."""
    children = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}' "
        f"and tags.mlflow.runName = '{job}'",
    )
    if children:
        return client.get_metric_history(children[0].info.run_id, key)
    prefixed = client.get_metric_history(run.info.run_id, f"{job}/{key}")
    if prefixed:
        return prefixed
    mixed = client.get_metric_history(run.info.run_id, key)
    pytest.fail(
        f"no {key} history of the {job} job alone: the run's {key} holds the steps "
        f"{sorted(m.step for m in mixed)} of every job in it"
    )


def test_the_run_is_in_the_configured_experiment(logged_run):
    client, run = logged_run
    mlflow_yml = yaml.safe_load((PROJECT / "conf" / "base" / "mlflow.yml").read_text())
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == mlflow_yml["tracking"]["experiment"]["name"]
    assert run.info.status == "FINISHED"


def test_training_parameters_are_logged_field_by_field(logged_run):
    _, run = logged_run
    params = run.data.params
    assert float(params["baseline.lr"]) == LR
    assert params["baseline.max_steps"] == str(STEPS)
    assert params["micro_models.mtp.dim"] == "64"


@pytest.mark.parametrize("job", ["pretrain", "baseline"])
def test_each_training_job_logs_one_value_per_step(logged_run, project: Path, job: str):  # noqa: F811
    client, run = logged_run
    history = _job_history(client, run, job, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
    # The same numbers as the history file the node returned, step by step.
    csv = project / "data" / "08_reporting" / "training" / f"{job}_history.csv"
    table = pd.read_csv(csv).dropna(subset=["train/loss"]).set_index("step")["train/loss"]
    for metric in history:
        assert metric.value == pytest.approx(table[metric.step], rel=1e-6)
    val_steps = [m.step for m in _job_history(client, run, job, "val/loss")]
    assert val_steps == [STEPS]  # eval_every = max_steps in _tiny_training


def _run_and_nested(client: mlflow.MlflowClient, run) -> list:
    nested = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    return [run, *nested]


def test_the_workers_log_into_the_kedro_run_and_its_history_is_an_artifact(logged_run):
    client, run = logged_run
    # Rank 0 of each job logs once per step, into the kedro run (or runs nested in it: the
    # fixture found a single top-level run), STEPS values for each of the two jobs.
    values = [
        metric
        for each in _run_and_nested(client, run)
        for key in each.data.metrics
        if key == "train/loss" or key.endswith("/train/loss")
        for metric in client.get_metric_history(each.info.run_id, key)
    ]
    assert len(values) == 2 * STEPS
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "training")}
    assert {"training/baseline_history.csv", "training/pretrain_history.csv"} <= artifacts


def test_the_trained_model_names_its_run(logged_run, project: Path):  # noqa: F811
    client, run = logged_run
    model_dir = project / "data" / "06_models" / "baseline"
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["mlflow_run_id"] in {r.info.run_id for r in _run_and_nested(client, run)}
    assert metadata["steps"] == STEPS
    assert Path(metadata["init_model"]) == project / "data" / "06_models" / "micro-mtp"


def test_the_run_names_the_model_directories_it_wrote(logged_run):
    _, run = logged_run
    for entry, folder in [("base_model", "micro-mtp"), ("baseline_model", "baseline")]:
        assert run.data.tags[f"model_dir.{entry}"].endswith(f"data/06_models/{folder}")


def test_the_evaluation_report_and_metrics_are_in_the_run(
    logged_run,
    project: Path,  # noqa: F811
    tracking_server: str,
    tmp_path: Path,
):
    client, run = logged_run
    for model in EVALUATED:
        for dataset in ("humaneval", "mbpp", "codecontests"):
            value = run.data.metrics[f"evaluation.{model}.{dataset}.pass_at_1"]
            assert 0.0 <= value <= 1.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/pass_at_k.png"} <= artifacts
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="evaluation/report.html",
        dst_path=str(tmp_path),
        tracking_uri=tracking_server,
    )
    written = project / "data" / "08_reporting" / "evaluation" / "report.html"
    assert Path(local).read_bytes() == written.read_bytes()
