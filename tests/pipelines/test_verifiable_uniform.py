"""The control ``verifiable_uniform``: verifiable's parameters, rows and starting model, its own
name, checkpoints, run identity and outputs; wired into the default run after the critic, known
to the catalogs and to ``kedro estimate``. The loss itself: tests/losses/test_verifiable_uniform.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

from tests.pipelines.test_training_pipelines import (
    DATA_INPUTS,
    PIPELINES,
    PROJECT,
    SMALL,
    fake_launcher,  # noqa: F401  (fixture)
    training_catalog,
    workspace,  # noqa: F401  (fixture)
)
from tests.test_estimate_cli import PEAK, _micro_params
from weighted_mtp import hooks
from weighted_mtp.cli import cli
from weighted_mtp.hooks import missing_prerequisites
from weighted_mtp.pipelines import critic, verifiable, verifiable_uniform
from weighted_mtp.training.config import VerifiableParams
from weighted_mtp.training.data_plan import DataPlan, build_data_plan
from weighted_mtp.training.spec import JobSpec

CONTROL = "verifiable_uniform"


def _metadata(n: int, seed: int) -> pd.DataFrame:
    """A metadata table with every curriculum bin and both classes, unevenly mixed."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "row": np.arange(n),
            "offset": np.arange(n) * 100,
            "length": np.full(n, 100),
            "is_correct": rng.random(n) < 0.6,
            "difficulty": rng.choice([3, 7, 9, 11, 12, 15], size=n),
            "task_id": [f"t/{i // 3}" for i in range(n)],
            "n_prompt_tokens": np.full(n, 20),
            "n_output_tokens": rng.integers(5, 80, size=n),
        }
    )


def _plan_arrays(plan: DataPlan) -> dict[str, Any]:
    return {k: np.asarray(v) for k, v in plan.__dict__.items()}


# --------------------------------------------------------------------------- data plan
@pytest.mark.parametrize(
    ("world_size", "extra"),
    [
        (1, {}),
        # Fewer rows drawn than the run needs: later epochs repeat the curriculum's order.
        (2, {"n_samples": 30, "grad_accum_steps": 2}),
    ],
)
def test_the_control_draws_verifiables_exact_rows_in_order(world_size: int, extra: dict) -> None:
    train, valid = _metadata(400, seed=1), _metadata(60, seed=2)
    params = VerifiableParams(
        max_steps=12, batch_size=4, warmup_steps=1, val_samples=16, max_seq_len=64, **extra
    )
    plans = {
        method: build_data_plan(method, params, train, valid, world_size=world_size)
        for method in ("verifiable", CONTROL, "baseline")
    }
    ours, theirs = _plan_arrays(plans[CONTROL]), _plan_arrays(plans["verifiable"])
    assert ours.keys() == theirs.keys()
    for name, values in ours.items():
        np.testing.assert_array_equal(values, theirs[name], err_msg=name)
    assert plans[CONTROL].fingerprint() == plans["verifiable"].fingerprint()
    # Verifiable's rows are its own (incorrect solutions too), not the correct-only default.
    rows = plans[CONTROL].train_rows
    assert not train.set_index("row").loc[rows, "is_correct"].all()
    assert plans["baseline"].fingerprint() != plans[CONTROL].fingerprint()


# --------------------------------------------------------------------------- wiring
def test_the_control_reads_verifiables_parameters_and_the_critics_model() -> None:
    pipeline = verifiable_uniform.create_pipeline()
    assert pipeline.inputs() == {
        "critic_model",
        "params:verifiable",
        f"{CONTROL}_checkpoints",
        *DATA_INPUTS,
    }
    assert pipeline.outputs() == {f"{CONTROL}_model", f"{CONTROL}_training_history"}
    assert [node.name for node in pipeline.nodes] == [f"train_{CONTROL}"]
    # Beside verifiable it shares nothing but its inputs: both can run in one kedro run.
    assert not verifiable.create_pipeline().outputs() & pipeline.all_outputs()
    together = critic.create_pipeline() + pipeline
    assert [n.name for n in together.nodes] == ["train_critic", f"train_{CONTROL}"]


def test_the_default_run_trains_the_control_after_the_critic() -> None:
    bootstrap_project(PROJECT)
    from kedro.framework.project import pipelines

    pipelines.set_requested(None)
    assert CONTROL in pipelines
    order = [node.name for node in pipelines["__default__"].nodes]
    assert order.index("critic.train_critic") < order.index(f"{CONTROL}.train_{CONTROL}")


def test_a_run_before_the_critic_names_the_critic_pipeline(tmp_path: Path) -> None:
    catalog = _control_catalog(tmp_path)
    registered = {name: create() for name, create in PIPELINES.items()}
    registered[CONTROL] = verifiable_uniform.create_pipeline()
    registered["data_engineering"] = Pipeline([])  # produces nothing here: data is "raw"
    lines = missing_prerequisites(
        verifiable_uniform.create_pipeline(), catalog, registered, project_path=str(tmp_path)
    )
    assert lines == [
        "critic_model does not exist yet (data/06_models/critic): run `kedro run --pipeline "
        "critic` first"
    ]


# --------------------------------------------------------------------------- the node
def _control_catalog(root: Path) -> DataCatalog:
    """The training catalog plus conf/base's entries of the control, with ``data/`` under
    ``root`` (history as plain CSV: no MLflow run is open here)."""
    catalog = training_catalog(root)
    conf = yaml.safe_load((PROJECT / "conf" / "base" / "catalog.yml").read_text())
    model = dict(conf[f"{CONTROL}_model"])
    history = conf["{method}_training_history"]["dataset"]
    checkpoints = conf["{method}_checkpoints"]
    control = DataCatalog.from_config(
        {
            f"{CONTROL}_model": {**model, "path": str(root / model["path"])},
            f"{CONTROL}_training_history": {
                **history,
                "filepath": str(root / history["filepath"].format(method=CONTROL)),
            },
            f"{CONTROL}_checkpoints": {
                **checkpoints,
                "path": str(root / checkpoints["path"].format(method=CONTROL)),
            },
        }
    )
    for name in control:
        catalog[name] = control.get(name)
    return catalog


def test_the_control_job_is_verifiables_job_under_its_own_name(workspace, fake_launcher):  # noqa: F811
    catalog = _control_catalog(workspace)
    models = workspace / "data" / "06_models"
    runner = SequentialRunner()
    runner.run(critic.create_pipeline(), catalog)
    runner.run(verifiable.create_pipeline(), catalog)
    runner.run(verifiable_uniform.create_pipeline(), catalog)

    _, weighted, control = fake_launcher.specs
    assert (weighted.method, control.method) == ("verifiable", CONTROL)
    # The same starting model, parameters and data plan...
    assert control.init_model == weighted.init_model == str(models / "critic")
    assert control.params == weighted.params
    assert control.training_params() == VerifiableParams(**SMALL)
    ours, theirs = DataPlan.load(control.plan_path), DataPlan.load(weighted.plan_path)
    for name, values in _plan_arrays(ours).items():
        np.testing.assert_array_equal(values, _plan_arrays(theirs)[name], err_msg=name)
    assert (
        control.extra_metadata["init_model_sha256"] == weighted.extra_metadata["init_model_sha256"]
    )
    # ...under another run identity, run directory and checkpoint location: the two jobs never
    # resume from each other's checkpoints.
    assert control.identity is not None and weighted.identity is not None
    assert control.identity.components["data_plan"] == weighted.identity.components["data_plan"]
    assert control.identity.digest != weighted.identity.digest
    assert control.identity.short != weighted.identity.short
    assert control.extra_metadata["run_identity"] == control.identity.digest
    assert Path(control.run_dir).parent == models / "training" / CONTROL
    assert control.checkpoint_dir == str(models / "checkpoints" / CONTROL)
    assert weighted.checkpoint_dir == str(models / "checkpoints" / "verifiable")
    assert JobSpec.read(control.spec_path) == control

    published = json.loads((models / CONTROL / "metadata.json").read_text())
    assert published["method"] == CONTROL
    history = pd.read_csv(workspace / "data/08_reporting/training" / f"{CONTROL}_history.csv")
    assert list(history["step"]) == [1, 2, 3]


# --------------------------------------------------------------------------- configuration
@pytest.fixture
def _forget_sessions():
    # A session records its environment for pipeline creation; later tests expect base.
    previous = hooks.session_config()
    yield
    hooks.record_session(previous)


@pytest.mark.usefixtures("_forget_sessions")
@pytest.mark.parametrize(
    ("env", "model_path"),
    [
        (None, str(PROJECT / "data" / "06_models" / CONTROL)),
        ("a100", f"s3://wmtp-artifacts/models/{CONTROL}"),
    ],
)
def test_the_catalogs_give_the_control_its_own_locations(monkeypatch, env, model_path) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT, env=env) as session:
        context = session.load_context()
    catalog = context.catalog
    assert catalog.get(f"{CONTROL}_model")._describe()["path"].rstrip("/") == model_path
    checkpoints = catalog.get(f"{CONTROL}_checkpoints")._describe()["path"]
    assert checkpoints.rstrip("/").endswith(f"checkpoints/{CONTROL}")
    history = str(catalog.get(f"{CONTROL}_training_history")._describe())
    assert f"{CONTROL}_history.csv" in history
    # No parameter group of its own: the control cannot be configured apart from verifiable.
    assert CONTROL not in context.params and "verifiable" in context.params


def test_kedro_estimate_knows_the_control_and_reads_verifiables_group() -> None:
    metadata = bootstrap_project(PROJECT)
    result = CliRunner().invoke(
        cli,
        [
            "estimate",
            "--env",
            "a100",
            "--pipelines",
            CONTROL,
            "--params",
            _micro_params("verifiable"),
        ],
        obj=metadata,
    )
    assert result.exit_code == 0, result.output
    lines = [m for m in map(PEAK.fullmatch, result.output.splitlines()) if m]
    assert [m.group(1) for m in lines] == [CONTROL]
