"""What a new user sees from `kedro`: no third-party warnings, one line for a mistyped pipeline
name, the real error for a pipeline that fails to import, plain logs when the output is not a
terminal, and the runner's name in MLflow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.tiny_project import copy_project
from weighted_mtp.cli import (
    available_pipelines,
    describe_parameter_errors,
    unknown_pipelines_message,
)
from weighted_mtp.hooks import runner_name

PROJECT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).parent / "kedro")
NOISE = ("Add type hints", "register_new_resolver", "\x1b[", "Traceback")


def _kedro(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [KEDRO, *args],
        cwd=cwd,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_kedro_help_prints_no_warnings():
    proc = _kedro("--help", cwd=PROJECT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("Usage: kedro"), proc.stdout[:500]
    assert not [word for word in NOISE if word in proc.stdout]


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--pipelines", "--pipeline"])
def test_an_unknown_pipeline_is_one_line_naming_the_valid_ones(flag):
    proc = _kedro("run", flag, "foo", cwd=PROJECT)
    valid = ", ".join(available_pipelines())
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"Error: Unknown pipeline 'foo': valid names are {valid} "
        "(without --pipelines: the whole experiment)"
    ]


@pytest.mark.slow
def test_a_pipeline_that_fails_to_import_shows_its_own_error(tmp_path):
    project = copy_project(tmp_path)
    broken = project / "src" / "weighted_mtp" / "pipelines" / "broken"
    broken.mkdir()
    (broken / "__init__.py").write_text("import weighted_mtp_no_such_module\n")
    # The copy's package, as for a user's checkout (the installed one is /work/main's).
    proc = _kedro("run", "--pipelines", "broken", cwd=project, PYTHONPATH=str(project / "src"))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Unknown pipeline" not in output
    assert "No module named 'weighted_mtp_no_such_module'" in output, output[-3000:]


@pytest.mark.slow
def test_a_missing_prerequisite_is_reported_without_a_traceback(tmp_path):
    project = copy_project(tmp_path)  # no data: nothing produced yet
    proc = _kedro(
        "run",
        "--pipelines",
        "verifiable",
        cwd=project,
        PYTHONPATH=str(project / "src"),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Error: MissingPrerequisiteError: Cannot run pipeline verifiable: " in proc.stderr
    assert "critic_model does not exist yet (data/06_models/critic)" in proc.stderr


def test_the_valid_names_are_the_pipelines_kedro_finds():
    from kedro.framework.project import find_pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT)
    found = set(find_pipelines(raise_errors=True)) - {"__default__"}
    assert available_pipelines() == sorted(found)
    assert {"data_engineering", "evaluation", "verifiable"} <= found


def test_unknown_pipelines_message():
    valid = ["a", "b"]
    assert unknown_pipelines_message(["a", "__default__"], valid) is None
    assert unknown_pipelines_message([], valid) is None
    assert unknown_pipelines_message(["a", "x", "y"], valid) == (
        "Unknown pipelines 'x', 'y': valid names are a, b (without --pipelines: the whole "
        "experiment)"
    )


def test_parameter_errors_keep_text_that_is_not_pydantics():
    message = (
        "Parameter validation failed:\n"
        "- Parameter 'x': value is None but type is not Optional\n"
        "- Parameter 'micro_models.mtp': Failed to instantiate MicroMTPParams for parameter "
        "'micro_models.mtp': 1 validation error for MicroMTPParams\n"
        "  Value error, dim=100 is not divisible by n_heads=8 [type=value_error, "
        "input_value={'dim': 100}, input_type=dict]\n"
        "    For further information visit https://errors.pydantic.dev/2.14/v/value_error"
    )
    assert describe_parameter_errors(message) == (
        "x: value is None but type is not Optional; "
        "micro_models.mtp: dim=100 is not divisible by n_heads=8"
    )
    assert describe_parameter_errors("something else") == "something else"


def test_runner_name():
    assert (
        runner_name("<kedro.runner.sequential_runner.SequentialRunner object at 0x7f3a2c1d5e10>")
        == "SequentialRunner"
    )
    assert runner_name("ParallelRunner") == "ParallelRunner"
    assert runner_name("None") == runner_name(None) == "SequentialRunner"  # session's default


RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


@pytest.mark.slow
def test_a_redirected_run_is_quiet_plain_and_tagged(tmp_path):
    project = copy_project(tmp_path / "project")  # with the raw MBPP file
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = (
        "data_engineering.synthetic.n_train_tasks=12,data_engineering.synthetic.n_valid_tasks=3,"
        "data_engineering.synthetic.n_test_tasks=3,data_engineering.tokenizer.vocab_size=400"
    )
    proc = _kedro(
        "run",
        "--pipelines",
        "data_engineering",
        "--params",
        params,
        cwd=project,
        MLFLOW_TRACKING_URI=tracking_uri,
        PYTHONPATH=str(project / "src"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # stderr: at most MLflow's note that it created the new sqlite store.
    assert all("mlflow.store.db.utils" in line for line in proc.stderr.splitlines()), proc.stderr
    assert not [word for word in NOISE if word in proc.stdout]
    # Not a terminal: one record per line, not Rich's columns wrapped at 80 characters.
    lines = proc.stdout.splitlines()
    assert lines and all(RECORD.match(line) for line in lines), [
        line for line in lines if not RECORD.match(line)
    ][:5]
    assert max(len(line) for line in lines) > 120
    assert "Completed 12 out of 12 tasks" in proc.stdout
    # The file log went to the tests' log folder (tests/conftest.py), not the project.
    assert not (project / "info.log").exists()

    client = mlflow.MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments)
    assert run.data.tags["runner"] == "SequentialRunner"
