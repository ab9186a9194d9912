"""`kedro estimate`: the configuration `kedro run` would read, no credentials, the shapes
checked against a readable model directory, one summary line per method."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from kedro.framework.startup import bootstrap_project

from weighted_mtp.cli import _shapes, cli
from weighted_mtp.training.estimate import EstimateParams

PROJECT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).parent / "kedro")
PEAK = re.compile(r"peak per GPU: \d+\.\d GiB of 80 GiB \((\w+), 4 ranks\)")

MICRO_MODEL = {
    "dim": 64,
    "n_layers": 4,
    "n_heads": 4,
    "vocab_size": 256,
    "multiple_of": 16,
    "max_seq_len": 256,
}
MICRO_REFERENCE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 256,
}


def _micro_params(*methods: str, **extra: object) -> str:
    """``--params`` that shrink conf/a100's 7B estimate to a micro model (same code path)."""
    items = {f"estimate.model.{k}": v for k, v in MICRO_MODEL.items()}
    items.update({f"estimate.reference.{k}": v for k, v in MICRO_REFERENCE.items()})
    for method in methods:
        items.update({f"{method}.batch_size": 2, f"{method}.max_seq_len": 64})
    items.update(extra)
    return ",".join(f"{k}={v}" for k, v in items.items())


class _Loader(dict):
    """What ``_shapes`` reads of Kedro's config loader: the catalog (and credentials)."""


def test_a_local_model_directory_is_read_and_checked(tmp_path: Path):
    model_dir = tmp_path / "base"
    model_dir.mkdir()
    (model_dir / "params.json").write_text(json.dumps({**MICRO_MODEL, "n_future_tokens": 4}))
    loader = _Loader(catalog={"base_model": {"path": str(model_dir)}}, credentials={})

    args, reference, notes = _shapes(loader, tmp_path, EstimateParams(), False, False)
    assert args.dim == 64 and reference is None
    assert notes == [f"model shape: {model_dir}/params.json"]

    same = EstimateParams(model=MICRO_MODEL)
    assert "the same as" in _shapes(loader, tmp_path, same, False, False)[2][0]

    other = EstimateParams(model={**MICRO_MODEL, "dim": 128})
    with pytest.raises(click.ClickException, match=r"dim: 128 here, 64 in the file"):
        _shapes(loader, tmp_path, other, False, False)


def test_check_model_reads_a_remote_params_json_with_the_catalogs_credentials(
    moto_s3_endpoint: str, tmp_path: Path
):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_s3_endpoint})
    bucket = f"estimate-{tmp_path.name[-8:].lower().replace('_', '-')}"
    fs.mkdir(bucket)
    fs.pipe(f"{bucket}/base/params.json", json.dumps({**MICRO_MODEL, "dim": 128}).encode())
    credentials = {"client_kwargs": {"endpoint_url": moto_s3_endpoint}}
    loader = _Loader(
        catalog={"base_model": {"path": f"s3://{bucket}/base", "credentials": "s3"}},
        credentials={"s3": credentials},
    )
    configured = EstimateParams(model=MICRO_MODEL)
    # Without --check-model nothing remote is read.
    notes = _shapes(loader, tmp_path, configured, False, False)[2]
    assert notes == [
        f"model shape: estimate.model (s3://{bucket}/base/params.json not read (remote; "
        "--check-model reads it))"
    ]
    with pytest.raises(click.ClickException, match=r"dim: 64 here, 128 in the file"):
        _shapes(loader, tmp_path, configured, False, True)


def test_no_shape_anywhere_says_what_to_add(tmp_path: Path):
    loader = _Loader(catalog={"base_model": {"path": "s3://bucket/model"}}, credentials={})
    with pytest.raises(click.ClickException, match=r"add estimate.model"):
        _shapes(loader, tmp_path, EstimateParams(), False, False)


def test_a_method_over_the_limit_exits_1_after_its_report():
    metadata = bootstrap_project(PROJECT)
    result = CliRunner().invoke(
        cli,
        [
            "estimate",
            "--env",
            "a100",
            "--pipelines",
            "baseline",
            "--params",
            _micro_params("baseline", **{"estimate.gpu_memory_gib": 0.001}),
        ],
        obj=metadata,
    )
    assert result.exit_code == 1, result.output
    assert "baseline needs more than 0.0009 GiB" in result.output
    assert "peak per GPU:" in result.output


def test_unknown_pipelines_are_refused_naming_the_training_ones():
    metadata = bootstrap_project(PROJECT)
    result = CliRunner().invoke(cli, ["estimate", "--pipelines", "evaluation"], obj=metadata)
    assert result.exit_code == 1
    assert "the training pipelines are baseline, critic, verifiable, rho1" in result.output


@pytest.mark.slow
def test_kedro_estimate_env_a100_needs_no_credentials(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_TRACKING"))}
    env.update(
        {
            "KEDRO_DISABLE_TELEMETRY": "1",
            "OMP_NUM_THREADS": "1",
            "HOME": str(tmp_path),  # no ~/.aws either
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    proc = subprocess.run(
        [
            KEDRO,
            "estimate",
            "--env",
            "a100",
            "--pipelines",
            "critic,rho1",
            "--params",
            _micro_params("critic", "rho1"),
        ],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert PEAK.fullmatch(lines[-1]) and PEAK.fullmatch(lines[-1]).group(1) == "rho1", lines
    assert [m.group(1) for m in map(PEAK.fullmatch, lines) if m] == ["critic", "rho1"]
    # The shapes came from conf/a100; the S3 model directories were not touched.
    assert "params.json not read (remote; --check-model reads it)" in proc.stdout
    assert "activation_checkpointing blocks" in proc.stdout  # runtime.* of conf/a100
