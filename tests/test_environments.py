"""The configuration environments resolve as users rely on them (no run, config only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DatasetError

from weighted_mtp import hooks
from weighted_mtp.training.config import METHODS

PROJECT = Path(__file__).resolve().parents[1]
A100_GPUS = 4


@pytest.fixture(autouse=True)
def _forget_sessions() -> Iterator[None]:
    # A session records its environment for pipeline creation; later tests expect base.
    previous = hooks.session_config()
    yield
    hooks.record_session(previous)


def _context(env: str | None):
    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT, env=env) as session:
        return session.load_context()


def test_a100_overrides_single_knobs_and_keeps_the_rest_of_base():
    base = _context(None).params["runtime"]
    a100 = _context("a100").params["runtime"]
    assert (a100["device"], a100["nproc_per_node"], a100["strategy"]) == ("cuda", 4, "fsdp")
    assert a100["dtype"] == "bfloat16"
    assert a100["rdzv_endpoint"] == base["rdzv_endpoint"]  # merged, not replaced
    assert (a100["nnodes"], a100["node_rank"]) == (1, 0)  # multi-node: --params runtime.*
    mps = _context("mps").params["runtime"]
    assert (mps["device"], mps["nproc_per_node"], mps["dtype"]) == ("mps", 1, "float32")


def test_a100_training_is_sized_for_7b_on_four_gpus():
    params = _context("a100").params
    for method in METHODS:
        group = params[method]
        global_batch = group.batch_size * group.grad_accum_steps * A100_GPUS
        assert global_batch == 64, method
        assert group.max_seq_len == 2048 and group.save_every is not None, method
        assert group.resume == "auto", method
    # With activation checkpointing every method takes the global batch in one micro-batch per
    # GPU within the estimate's limit (kedro estimate; docs/vessl.md, "Memory").
    assert {(params[m].batch_size, params[m].grad_accum_steps) for m in METHODS} == {(16, 1)}
    assert params["rho1"].reference_tuning.enabled is False


def test_a100_evaluates_its_own_model_list():
    base = _context(None).params["evaluation"]
    a100 = _context("a100").params["evaluation"]
    # The embedded default evaluates the untrained model and every trained one.
    assert base.models == [
        "base_model",
        "baseline_model",
        "verifiable_model",
        "verifiable_uniform_model",
        "rho1_model",
    ]
    assert a100.models == ["base_model", "baseline_model", "verifiable_model"]


def test_a100_data_and_tokenizer_live_on_s3_beside_the_base_model(monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    context = _context("a100")
    catalog = context.catalog
    tokenizer = context.params["data_engineering"]["tokenizer"]
    base_model = catalog.get("base_model")._describe()["path"]
    assert tokenizer.pretrained_path == f"{base_model}/tokenizer.model"
    for name in (
        "codecontests_raw_train",
        "codecontests_train_jsonl",
        "codecontests_train_jsonl@location",
        "codecontests_train_metadata",
        "codecontests_valid_jsonl@location",
        "codecontests_valid_metadata",
        "eval_problems_codecontests",
        "tokenizer",
    ):
        described = catalog.get(name)._describe()
        assert described["protocol"] == "s3", name
        assert str(described["filepath"]).startswith("wmtp-artifacts/data/"), name
    assert catalog.get("codecontests_train_jsonl@location")._describe()["load_as"] == "location"
    # Source data and released models: no pipeline of this environment writes them.
    for name in ("codecontests_raw_train", "base_model", "reference_model"):
        assert catalog.get(name).metadata["protected"] is True, name
    assert "protected" not in catalog.get("tuned_reference_model").metadata
    reference = catalog.get("reference_model")._describe()["path"]
    assert catalog.get("tuned_reference_model")._describe()["path"] == reference
    assert catalog.get("critic_checkpoints")._describe()["path"].startswith("s3://")


def test_a100_bucket_is_a_runtime_parameter(monkeypatch):
    bootstrap_project(PROJECT)
    runtime = {"s3_bucket": "my-bucket"}
    with KedroSession.create(project_path=PROJECT, env="a100", runtime_params=runtime) as session:
        context = session.load_context()
    assert context.catalog.get("critic_model")._describe()["path"].startswith("s3://my-bucket/")
    tokenizer = context.params["data_engineering"]["tokenizer"]
    assert tokenizer.pretrained_path.startswith("s3://my-bucket/models/")


def test_a100_models_live_on_s3_and_cannot_be_overwritten(monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    catalog = _context("a100").catalog
    model = catalog.get("base_model")
    assert "s3://" in str(model)
    with pytest.raises(DatasetError, match="read.only|read_only"):
        catalog.save("base_model", object())


def test_base_points_mlflow_at_the_project_sqlite_store(monkeypatch):
    # MLFLOW_TRACKING_URI pointing at a live server is covered end to end in test_kedro_run.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = _context(None).config_loader["mlflow"]["server"]["mlflow_tracking_uri"]
    assert uri == "sqlite:///mlflow.db"


def test_a100_mlflow_follows_the_environment_variable(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    # The loader alone: a session would have kedro-mlflow contact that server at once.
    from kedro.framework.project import settings

    bootstrap_project(PROJECT)
    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(PROJECT / "conf"), env="a100", **settings.CONFIG_LOADER_ARGS
    )
    loader.config_patterns["mlflow"] = ["mlflow*", "mlflow*/**", "**/mlflow*"]
    assert loader["mlflow"]["server"]["mlflow_tracking_uri"] == "http://127.0.0.1:5000"
