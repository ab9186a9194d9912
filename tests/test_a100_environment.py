"""`--env a100` as a user runs it, offline: Kedro sessions in a copy of the project, S3 served by
moto on 127.0.0.1, and nothing else reachable (no AWS endpoint, no instance metadata).

- the evaluation pipeline is built from conf/a100's model list, not base's;
- a run that needs S3 without credentials stops at once, before any worker or network call;
- a run that would overwrite protected source data stops before its first node;
- data_engineering takes the 7B model's tokenizer.model from S3, and the metadata's token
  counts are that tokenizer's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from weighted_mtp import hooks
from weighted_mtp.data.prompt import format_prompt
from weighted_mtp.data.synthetic import generate_codecontests_rows
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.datasets import RawRowsDataset
from weighted_mtp.hooks import (
    MissingPrerequisiteError,
    MissingS3CredentialsError,
    ProtectedOutputError,
    S3Location,
    missing_s3_credentials,
)
from weighted_mtp.pipelines.data_engineering.nodes import TokenizerParams
from weighted_mtp.pipelines.data_engineering.nodes import train_tokenizer as node

PROJECT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).parent / "kedro")
BASE_MODEL_TOKENIZER = "models/meta-llama-mtp-7b_1t_4/tokenizer.model"
RAW_INPUTS = [
    "codecontests_raw_test",
    "codecontests_raw_train",
    "codecontests_raw_valid",
    "humaneval_raw",
    "mbpp_raw",
]
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The project's conf, package and raw MBPP file in an empty directory."""
    root = tmp_path_factory.mktemp("a100_project")
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    mbpp = root / "data" / "01_raw" / "mbpp"
    mbpp.mkdir(parents=True)
    shutil.copy(PROJECT / "data" / "01_raw" / "mbpp" / "mbpp.jsonl", mbpp / "mbpp.jsonl")
    return root


@pytest.fixture(autouse=True)
def _isolate_sessions(monkeypatch) -> Iterator[None]:
    import mlflow

    # Sessions here record conf/a100 for the process; later tests build pipelines from base.
    previous = hooks.session_config()
    monkeypatch.delenv("KEDRO_ENV", raising=False)
    yield
    hooks.record_session(previous)
    # kedro-mlflow (nested runs) reopens the run before every node and closes it once, so an
    # in-process run leaves it on MLflow's stack; later tests must not log into it.
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path: Path) -> dict[str, str]:
    """An environment where boto finds no credentials and never asks the metadata service."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    settings = {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return settings


@pytest.fixture
def moto_credentials(moto_s3_endpoint: str, monkeypatch, tmp_path: Path) -> str:
    """The environment a VESSL user sets, pointed at moto; returns a fresh bucket name."""
    import s3fs

    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    settings = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": moto_s3_endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    bucket = f"wmtp-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_s3_endpoint}).mkdir(bucket)
    return bucket


def _session(project: Path, env: str | None, **runtime: object) -> KedroSession:
    bootstrap_project(project)
    return KedroSession.create(project_path=project, env=env, runtime_params=runtime or None)


def _fs(endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)


# --------------------------------------------------------------------------- pipeline shape
def test_env_a100_builds_the_evaluation_pipeline_from_its_own_model_list(project: Path) -> None:
    from kedro.framework.project import pipelines

    def evaluated(env: str | None, **runtime: object) -> list[str]:
        with _session(project, env, **runtime) as session:
            session.load_context()  # what session.run does before it reads the pipelines
            nodes = pipelines["evaluation"].nodes
            # Each model's chain is a box inside the evaluation box: evaluation.<model>.
            boxes = {n.namespace for n in nodes if (n.namespace or "").startswith("evaluation.")}
            return sorted(box.removeprefix("evaluation.") for box in boxes)

    assert evaluated("a100") == ["base_model", "baseline_model", "verifiable_model"]
    assert evaluated(None) == [
        "base_model",
        "baseline_model",
        "rho1_model",
        "verifiable_model",
        "verifiable_uniform_model",
    ]
    # --params experiment.seeds=2 reaches pipeline creation in a100 too: each trained model
    # is evaluated in each seed, base_model once.
    assert evaluated("a100", experiment={"seeds": 2}) == [
        "base_model",
        "baseline_model",
        "seed_2.baseline_model",
        "seed_2.verifiable_model",
        "verifiable_model",
    ]


def test_env_a100_run_uses_the_a100_models(project: Path, no_aws_credentials) -> None:
    # session.run builds the pipeline itself; the S3 check lists what the built pipeline reads.
    with _session(project, "a100") as session, pytest.raises(MissingS3CredentialsError) as info:
        session.run(pipeline_names=["evaluation"])
    message = str(info.value)
    assert "baseline_model" in message and "verifiable_model" in message


# --------------------------------------------------------------------------- fail fast
def test_a100_run_without_credentials_stops_within_seconds(project: Path, tmp_path: Path) -> None:
    """`kedro run --env a100 --pipeline verifiable` on a machine without AWS credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            "KEDRO_DISABLE_TELEMETRY": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "COLUMNS": "200",
        }
    )
    started = time.monotonic()
    proc = subprocess.run(
        [KEDRO, "run", "--env", "a100", "--pipeline", "verifiable"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    output = " ".join((proc.stdout + proc.stderr).split())  # rich wraps long lines
    assert proc.returncode != 0, output[-3000:]
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert "MissingS3CredentialsError: Cannot run pipeline verifiable" in output, output[-3000:]
    for advice in (
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        "conf/a100/credentials.yml",
        "AWS_ENDPOINT_URL_S3",
        "kedro run --env a100 --params s3_bucket=<bucket>",
        "critic_model",
    ):
        assert advice in output, advice
    # No worker, no run directory, no launcher.
    assert not (project / "data" / "06_models" / "training").exists()
    assert "torchrun" not in output and "launcher" not in output


def test_credentials_in_the_catalog_or_the_environment_are_enough(
    no_aws_credentials, monkeypatch
) -> None:
    url = "s3://bucket/models/critic"
    bare = [S3Location("critic_model", url, {"key": None, "secret": None})]
    keyed = [S3Location("critic_model", url, {"key": "AKIA", "secret": "s"})]
    assert missing_s3_credentials(keyed, env="a100") is None
    message = missing_s3_credentials(bare, env="a100")
    assert message is not None and "instance metadata disabled" in message
    assert "bucket bucket: critic_model" in message
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    assert missing_s3_credentials(bare, env="a100") is None


def test_a100_tokenizer_parameter_counts_as_an_s3_location(
    project: Path, no_aws_credentials
) -> None:
    from kedro.framework.project import pipelines

    with _session(project, "a100") as session:
        catalog = session.load_context().catalog
        pipeline = pipelines["data_engineering"].from_inputs(*RAW_INPUTS)
        found = {loc.name: loc.url for loc in hooks.s3_locations(pipeline, catalog)}
    assert found["data_engineering.tokenizer.pretrained_path"] == (
        f"s3://wmtp-artifacts/{BASE_MODEL_TOKENIZER}"
    )
    assert found["tokenizer"] == "s3://wmtp-artifacts/data/06_models/tokenizer/tokenizer.model"
    assert "mbpp_raw" not in found  # the shipped local file


def test_with_credentials_the_run_goes_on_to_check_inputs_on_s3(
    project: Path, moto_credentials: str
) -> None:
    with (
        _session(project, "a100", s3_bucket=moto_credentials) as session,
        pytest.raises(MissingPrerequisiteError) as info,
    ):
        session.run(pipeline_names=["verifiable"])
    message = str(info.value)
    assert (
        f"critic_model does not exist yet (s3://{moto_credentials}/models/critic): run "
        "`kedro run --pipeline critic` first" in message
    )
    assert "codecontests_train_metadata does not exist yet" in message


# --------------------------------------------------------------------------- protected data
def test_data_engineering_cannot_overwrite_the_raw_files(project: Path, no_aws_credentials) -> None:
    with _session(project, "a100") as session, pytest.raises(ProtectedOutputError) as info:
        session.run(pipeline_names=["data_engineering"])
    message = str(info.value)
    assert "it would overwrite codecontests_raw_test (s3://wmtp-artifacts/data/01_raw/" in message
    assert (
        "`kedro run --env a100 --pipeline data_engineering --from-inputs "
        + ",".join(RAW_INPUTS)
        + "`"
    ) in message
    with _session(project, "a100") as session, pytest.raises(ProtectedOutputError) as info:
        session.run(pipeline_names=["micro_models"])
    assert "base_model" in str(info.value) and "not run in this environment" in str(info.value)


def test_missing_source_data_says_upload_it(project: Path, moto_credentials: str) -> None:
    with (
        _session(project, "a100", s3_bucket=moto_credentials) as session,
        pytest.raises(MissingPrerequisiteError) as info,
    ):
        session.run(pipeline_names=["data_engineering"], from_inputs=RAW_INPUTS)
    assert (
        f"codecontests_raw_train does not exist (s3://{moto_credentials}/data/01_raw/"
        "codecontests/train.parquet): it is source data in this environment, upload it there"
    ) in str(info.value)


# --------------------------------------------------------------------------- tokenizer from S3
def _pretrained() -> Tokenizer:
    """Stands in for LLaMA's tokenizer.model: another tokenizer than a trained micro one (byte
    fallback, so it encodes anything)."""
    texts = [format_prompt(f"Read {i} numbers and print their sum.", "") for i in range(30)]
    return train_tokenizer([*texts, "print(sum(map(int, input().split())))\n"] * 5, vocab_size=420)


def test_pretrained_path_reads_s3_with_explicit_options(moto_credentials: str, monkeypatch):
    endpoint = os.environ["AWS_ENDPOINT_URL_S3"]
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")  # only the parameter names the endpoint
    proto = _pretrained().model_proto
    _fs(endpoint).pipe(f"{moto_credentials}/{BASE_MODEL_TOKENIZER}", proto)
    url = f"s3://{moto_credentials}/{BASE_MODEL_TOKENIZER}"
    params = TokenizerParams(
        pretrained_path=url, storage_options={"client_kwargs": {"endpoint_url": endpoint}}
    )
    assert node([], [], params).model_proto == proto
    missing = TokenizerParams(
        pretrained_path=url + ".missing", storage_options=params.storage_options
    )
    with pytest.raises(FileNotFoundError, match=r"data_engineering\.tokenizer\.pretrained_path"):
        node([], [], missing)
    with pytest.raises(ValueError, match=r"storage_options\.secret: parameters are logged"):
        TokenizerParams(pretrained_path=url, storage_options={"secret": "s"})


def test_a100_data_engineering_counts_tokens_with_the_base_models_tokenizer(
    project: Path, moto_credentials: str, moto_s3_endpoint: str
) -> None:
    """The a100 catalog and parameters end to end against moto: raw parquet on S3 in, JSONL,
    metadata and the data's tokenizer on S3 out."""
    bucket = moto_credentials
    pretrained = _pretrained()
    fs = _fs(moto_s3_endpoint)
    fs.pipe(f"{bucket}/{BASE_MODEL_TOKENIZER}", pretrained.model_proto)
    options = {"client_kwargs": {"endpoint_url": moto_s3_endpoint}}
    for split, seed in (("train", 1), ("valid", 2), ("test", 3)):
        RawRowsDataset(
            filepath=f"s3://{bucket}/data/01_raw/codecontests/{split}.parquet", credentials=options
        ).save(generate_codecontests_rows(4, seed, split=split))

    with _session(project, "a100", s3_bucket=bucket) as session:
        session.run(pipeline_names=["data_engineering"], from_inputs=RAW_INPUTS)

    data = f"{bucket}/data"
    assert fs.cat(f"{data}/06_models/tokenizer/tokenizer.model") == pretrained.model_proto
    with fs.open(f"{data}/05_model_input/codecontests/train.metadata.parquet", "rb") as handle:
        meta = pd.read_parquet(handle)
    records = [
        json.loads(line)
        for line in fs.cat(f"{data}/05_model_input/codecontests/train.jsonl").splitlines()
    ]
    assert len(meta) == len(records) > 0
    expected_prompt = [
        len(pretrained.encode(format_prompt(r["instruction"], r["input"]))) for r in records
    ]
    expected_output = [len(pretrained.encode(r["output"])) + 1 for r in records]
    assert list(meta["n_prompt_tokens"]) == expected_prompt
    assert list(meta["n_output_tokens"]) == expected_output
    # The micro tokenizer (vocab_size 1024 in base) would count differently.
    assert pretrained.vocab_size == 420
