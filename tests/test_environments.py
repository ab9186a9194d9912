"""The configuration environments resolve as users rely on them (no run, config only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DatasetError

PROJECT = Path(__file__).resolve().parents[1]


def _context(env: str | None):
    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT, env=env) as session:
        return session.load_context()


def test_a100_overrides_single_knobs_and_keeps_the_rest_of_base():
    base = _context(None).params["runtime"]
    a100 = _context("a100").params["runtime"]
    assert (a100["device"], a100["nproc_per_node"], a100["strategy"]) == ("cuda", 4, "fsdp")
    assert a100["rdzv_endpoint"] == base["rdzv_endpoint"]  # merged, not replaced
    assert _context("mps").params["runtime"]["device"] == "mps"


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
