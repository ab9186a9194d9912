"""The training pipelines (baseline, critic, verifiable, rho1) without torchrun: their wiring,
the shared node on a temporary catalog with a stand-in launcher, the datasets they read, and
Kedro sessions that must stop before any worker starts (bad parameters, missing inputs, a model
that does not ship the data's tokenizer)."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, DatasetError
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner
from kedro.validation.exceptions import ParameterValidationError
from omegaconf import OmegaConf

from weighted_mtp.data.records import dumps_line
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.datasets import JsonlDataset, JsonlLocation, RunDirectoryDataset
from weighted_mtp.hooks import MissingPrerequisiteError, flatten_params, missing_prerequisites
from weighted_mtp.model_io.reference import HFModelDirectory
from weighted_mtp.model_io.tokenizer_check import TokenizerMismatchError
from weighted_mtp.pipelines import baseline, critic, rho1, verifiable
from weighted_mtp.pipelines.job_environment import (
    RunNameError,
    RuntimeParamsError,
    absolute_tracking_uri,
    new_run_dir,
    public_storage_options,
    runtime_params,
)
from weighted_mtp.pipelines.rho1.nodes import tune_reference
from weighted_mtp.training.config import (
    BaselineParams,
    CriticParams,
    Rho1Params,
    VerifiableParams,
)
from weighted_mtp.training.data_plan import DataPlan
from weighted_mtp.training.run_identity import model_fingerprint
from weighted_mtp.training.spec import JobSpec

PROJECT = Path(__file__).resolve().parents[2]
METHODS = ("baseline", "critic", "verifiable", "rho1")
PIPELINES = {
    "baseline": baseline.create_pipeline,
    "critic": critic.create_pipeline,
    "verifiable": verifiable.create_pipeline,
    "rho1": rho1.create_pipeline,
}
DATA_INPUTS = {
    "training_runs",
    "codecontests_train_jsonl@location",
    "codecontests_train_metadata",
    "codecontests_valid_jsonl@location",
    "codecontests_valid_metadata",
    "tokenizer",
    "params:runtime",
}
SMALL = {"max_steps": 3, "batch_size": 2, "warmup_steps": 1, "val_samples": 4, "max_seq_len": 64}
RUNTIME = {"device": "cpu", "nproc_per_node": 1, "strategy": "ddp", "dtype": "float32"}


# --------------------------------------------------------------------------- fixtures
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def data_tokenizer(vocab_size: int = 300) -> Tokenizer:
    """A small trained tokenizer (the data's, by default; another size is another tokenizer)."""
    texts = ["def f(x):\n    return x + 1\n", "print(1)\n", "problem statement"] * 50
    return train_tokenizer(texts, vocab_size=vocab_size)


TOKENIZER_FILE = Path("data") / "06_models" / "tokenizer" / "tokenizer.model"


def write_tokenizer(root: Path, tokenizer: Tokenizer | None = None) -> Path:
    """The data's tokenizer where conf/base/catalog.yml's ``tokenizer`` entry reads it."""
    path = root / TOKENIZER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((tokenizer or data_tokenizer()).model_proto)
    return path


def write_model_dir(
    path: Path,
    *,
    hf: bool = False,
    extra: dict[str, Any] | None = None,
    tokenizer: bytes | None = None,
) -> Path:
    """A stand-in model directory: the files the datasets and the node look at, no weights;
    ``tokenizer.model`` is the data's unless ``tokenizer`` (b"": none) says otherwise."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.safetensors").write_bytes(b"weights of " + path.name.encode())
    proto = data_tokenizer().model_proto if tokenizer is None else tokenizer
    if proto:
        (path / "tokenizer.model").write_bytes(proto)
    if hf:
        (path / "config.json").write_text('{"model_type": "llama"}')
        return path
    (path / "params.json").write_text('{"dim": 8}')
    files = {name: _sha256(path / name) for name in ("model.safetensors", "params.json")}
    (path / "metadata.json").write_text(json.dumps({"files": files, **(extra or {})}))
    return path


def write_training_data(root: Path, split: str, n: int = 24) -> None:
    """A JSONL corpus and its metadata table (offsets, labels, difficulties, token counts)."""
    folder = root / "data" / "05_model_input" / "codecontests"
    folder.mkdir(parents=True, exist_ok=True)
    rows, offset = [], 0
    with (folder / f"{split}.jsonl").open("wb") as handle:
        for i in range(n):
            record = {
                "instruction": f"problem {i}",
                "input": "",
                "output": "print(1)\n",
                "task_id": f"codecontests/{split}/{i // 2}",
                "is_correct": i % 2 == 0,
                "metadata": {
                    "source": "synthetic",
                    "difficulty": (7, 9, 12)[i % 3],
                    "has_tests": True,
                },
            }
            line = dumps_line(record) + b"\n"
            handle.write(line)
            rows.append(
                {
                    "row": i,
                    "offset": offset,
                    "length": len(line),
                    "is_correct": record["is_correct"],
                    "difficulty": record["metadata"]["difficulty"],
                    "task_id": record["task_id"],
                    "n_prompt_tokens": 20,
                    "n_output_tokens": 10,
                }
            )
            offset += len(line)
    pd.DataFrame(rows).to_parquet(folder / f"{split}.metadata.parquet", index=False)


class FakeLauncher:
    """Stands in for ``weighted_mtp.training.launcher``: records each job, writes the spec and
    what the workers would write (final model directory, step history)."""

    def __init__(self) -> None:
        self.calls: list[tuple[JobSpec, dict[str, str] | None]] = []

    def launch(self, spec: JobSpec, *, worker_module: str = "", extra_env=None, show_progress=True):
        self.calls.append((spec, extra_env))
        spec.write()
        out = spec.final_model_dir
        if spec.method == "reference":
            write_model_dir(out, hf=True)
        else:
            write_model_dir(out, extra={**spec.extra_metadata, "method": spec.method})
        with spec.history_path.open("w") as handle:
            for step in (1, 2, 3):
                handle.write(json.dumps({"step": step, "train/loss": 3.0 / step}) + "\n")
        return types.SimpleNamespace(
            run_dir=spec.run_path,
            returncode=0,
            wall_seconds=0.5,
            first_step_seconds=0.1,
            last_event={"phase": "done"},
        )

    @property
    def specs(self) -> list[JobSpec]:
        return [spec for spec, _ in self.calls]


@pytest.fixture
def fake_launcher(monkeypatch) -> FakeLauncher:
    # A module in sys.modules: the node imports the launcher lazily, by name.
    fake = FakeLauncher()
    module = types.ModuleType("weighted_mtp.training.launcher")
    module.launch = fake.launch
    monkeypatch.setitem(sys.modules, "weighted_mtp.training.launcher", module)
    return fake


def training_catalog(root: Path) -> DataCatalog:
    """conf/base/catalog.yml's training entries with ``data/`` under ``root``; histories as
    plain CSV (no MLflow run is open here)."""
    conf = yaml.safe_load((PROJECT / "conf" / "base" / "catalog.yml").read_text())
    names = {
        "base_model",
        "reference_model",
        "tuned_reference_model",
        "training_runs",
        "codecontests_train_jsonl@location",
        "codecontests_train_metadata",
        "codecontests_valid_jsonl@location",
        "codecontests_valid_metadata",
        "tokenizer",
        *(f"{method}_model" for method in METHODS),
    }
    entries: dict[str, Any] = {}
    for name in names:
        entry = dict(conf[name])
        key = "filepath" if "filepath" in entry else "path"
        assert entry[key].startswith("data/"), name
        entry[key] = str(root / entry[key])
        entries[name] = entry
    history = conf["{method}_training_history"]["dataset"]
    checkpoints = conf["{method}_checkpoints"]
    for job in (*METHODS, "reference"):
        entries[f"{job}_checkpoints"] = {
            **checkpoints,
            "path": str(root / checkpoints["path"].format(method=job)),
        }
    for method in METHODS:
        entries[f"{method}_training_history"] = {
            **history,
            "filepath": str(root / history["filepath"].format(method=method)),
        }
    catalog = DataCatalog.from_config(entries)
    catalog["params:runtime"] = RUNTIME
    catalog["params:baseline"] = BaselineParams(**SMALL)
    catalog["params:critic"] = CriticParams(**SMALL)
    catalog["params:verifiable"] = VerifiableParams(**SMALL)
    catalog["params:rho1"] = Rho1Params(**SMALL, reference_tuning={**SMALL, "enabled": True})
    return catalog


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    write_training_data(tmp_path, "train")
    write_training_data(tmp_path, "valid", n=12)
    write_model_dir(tmp_path / "data" / "06_models" / "micro-mtp")
    write_model_dir(tmp_path / "data" / "06_models" / "micro-ref", hf=True)
    write_tokenizer(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- wiring
@pytest.mark.parametrize("method", ["baseline", "critic"])
def test_base_model_pipelines(method: str) -> None:
    pipeline = PIPELINES[method]()
    assert pipeline.inputs() == {
        "base_model",
        f"params:{method}",
        f"{method}_checkpoints",
        *DATA_INPUTS,
    }
    assert pipeline.outputs() == {f"{method}_model", f"{method}_training_history"}
    assert [node.name for node in pipeline.nodes] == [f"train_{method}"]


def test_critic_model_feeds_verifiable() -> None:
    critic_pipeline, verifiable_pipeline = critic.create_pipeline(), verifiable.create_pipeline()
    assert verifiable_pipeline.inputs() == {
        "critic_model",
        "params:verifiable",
        "verifiable_checkpoints",
        *DATA_INPUTS,
    }
    assert verifiable_pipeline.outputs() == {"verifiable_model", "verifiable_training_history"}
    assert critic_pipeline.outputs() & verifiable_pipeline.inputs() == {"critic_model"}
    # Together, Kedro orders them: the critic first.
    together = critic_pipeline + verifiable_pipeline
    assert [n.name for n in together.nodes] == ["train_critic", "train_verifiable"]


def test_tuned_reference_feeds_train_rho1() -> None:
    pipeline = rho1.create_pipeline()
    assert [node.name for node in pipeline.nodes] == ["tune_reference", "train_rho1"]
    tune, train = pipeline.nodes
    assert tune.outputs == ["tuned_reference_model"]
    assert "tuned_reference_model" in train.inputs and "base_model" in train.inputs
    assert "reference_model" in tune.inputs and "params:rho1" in tune.inputs
    assert "tokenizer" in tune.inputs and "tokenizer" in train.inputs
    assert pipeline.inputs() == {
        "base_model",
        "reference_model",
        "params:rho1",
        "rho1_checkpoints",
        "reference_checkpoints",
        *DATA_INPUTS,
    }
    assert pipeline.outputs() == {"rho1_model", "rho1_training_history"}


def test_the_default_run_is_the_whole_experiment() -> None:
    bootstrap_project(PROJECT)
    from kedro.framework.project import pipelines

    pipelines.set_requested(None)
    assert set(METHODS) | {"data_engineering", "micro_models", "evaluation"} <= set(pipelines)
    default = pipelines["__default__"]
    names = {node.name for node in default.nodes}
    assert {
        "baseline.train_baseline",
        "critic.train_critic",
        "verifiable.train_verifiable",
        "rho1.train_rho1",
    } <= names
    assert {
        "rho1.tune_reference",
        "micro_models.pretrain_micro_mtp_model",
        "data_engineering.train_tokenizer",
    } <= names
    assert {
        "report.render_evaluation_report",
        "evaluation.verifiable_model.generate_completions",
    } <= names
    # Kedro orders by data: the hand-offs come before the jobs that read them.
    order = [node.name for node in default.nodes]
    assert order.index("critic.train_critic") < order.index("verifiable.train_verifiable")
    assert order.index("rho1.tune_reference") < order.index("rho1.train_rho1")
    assert order.index("micro_models.pretrain_micro_mtp_model") < order.index(
        "baseline.train_baseline"
    )
    assert order.index("rho1.train_rho1") < order.index(
        "evaluation.rho1_model.generate_completions"
    )


# --------------------------------------------------------------------------- datasets
def test_jsonl_location(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "train.jsonl"
    records = [{"a": 1}, {"a": 2}]
    JsonlDataset(filepath=str(path)).save(records)
    dataset = JsonlDataset(filepath=str(path), load_as="location", fs_args={"key": "secret"})
    location = dataset.load()
    assert location == JsonlLocation(str(path), {"key": "secret"})
    assert "secret" not in repr(location)
    assert JsonlDataset(filepath=location.url).load() == records
    # Relative paths become absolute: the workers start elsewhere.
    monkeypatch.chdir(tmp_path)
    assert JsonlDataset(filepath="train.jsonl", load_as="location").load().url == str(path)
    with pytest.raises(DatasetError, match="does not exist"):
        JsonlDataset(filepath=str(tmp_path / "missing.jsonl"), load_as="location").load()
    with pytest.raises(ValueError, match="load_as must be one of"):
        JsonlDataset(filepath=str(path), load_as="rows")


def test_run_directory_dataset(tmp_path: Path) -> None:
    dataset = RunDirectoryDataset(path=str(tmp_path / "runs"))
    assert dataset.load() == str(tmp_path / "runs") and dataset.exists()
    assert not (tmp_path / "runs").exists()  # created by the node, not by loading
    with pytest.raises(DatasetError):
        dataset.save(None)
    with pytest.raises(ValueError, match="local directory"):
        RunDirectoryDataset(path="s3://bucket/runs")


# --------------------------------------------------------------------------- shared node
def test_critic_then_verifiable_write_specs_matching_the_catalog(workspace, fake_launcher):
    catalog = training_catalog(workspace)
    models = workspace / "data" / "06_models"
    SequentialRunner().run(critic.create_pipeline(), catalog)
    SequentialRunner().run(verifiable.create_pipeline(), catalog)

    critic_spec, verifiable_spec = fake_launcher.specs
    assert (critic_spec.method, verifiable_spec.method) == ("critic", "verifiable")
    assert critic_spec.init_model == str(models / "micro-mtp")
    # The hand-off: verifiable starts from the published critic model, not its run directory.
    assert verifiable_spec.init_model == str(models / "critic")
    data = workspace / "data" / "05_model_input" / "codecontests"
    for spec in (critic_spec, verifiable_spec):
        run_dir = Path(spec.run_dir)
        assert run_dir.parent == models / "training" / spec.method
        assert JobSpec.read(run_dir / "spec.json") == spec
        assert spec.train_jsonl == str(data / "train.jsonl")
        assert spec.valid_jsonl == str(data / "valid.jsonl")
        assert spec.reference_model is None and spec.storage_options == {}
        assert spec.mlflow_run_id is None and spec.runtime.nproc_per_node == 1
        plan = DataPlan.load(spec.plan_path)
        assert len(plan.train_rows) == SMALL["max_steps"] * SMALL["batch_size"]
        assert len(plan.valid_rows) == SMALL["val_samples"]
    assert verifiable_spec.training_params() == VerifiableParams(**SMALL)
    assert critic_spec.params["correct_fraction"] == 0.5

    base_sha = {"model.safetensors": _sha256(models / "micro-mtp" / "model.safetensors")}
    assert critic_spec.extra_metadata["init_model_sha256"] == base_sha
    critic_sha = {"model.safetensors": _sha256(models / "critic" / "model.safetensors")}
    assert verifiable_spec.extra_metadata["init_model_sha256"] == critic_sha
    # ...and the chain still names the release it started from.
    assert verifiable_spec.extra_metadata["base_model_sha256"] == base_sha
    assert verifiable_spec.extra_metadata["method"] == "verifiable"
    # The node computed each job's run identity once: the data plan and the model it starts
    # from (the published critic's recorded SHA256s) are in it.
    identity = verifiable_spec.identity
    assert identity is not None
    assert (
        identity.components["data_plan"] == DataPlan.load(verifiable_spec.plan_path).fingerprint()
    )
    assert identity.components["models"]["init_model"] == model_fingerprint(models / "critic")
    assert verifiable_spec.extra_metadata["run_identity"] == identity.digest

    published = json.loads((models / "verifiable" / "metadata.json").read_text())
    assert published["method"] == "verifiable"
    history = pd.read_csv(workspace / "data/08_reporting/training/verifiable_history.csv")
    assert list(history["step"]) == [1, 2, 3]


def test_rho1_tunes_the_reference_then_trains_against_it(workspace, fake_launcher):
    catalog = training_catalog(workspace)
    SequentialRunner().run(rho1.create_pipeline(), catalog)
    reference_spec, rho1_spec = fake_launcher.specs
    models = workspace / "data" / "06_models"
    assert reference_spec.method == "reference"
    assert reference_spec.init_model == str(models / "micro-ref")
    assert reference_spec.params == {**SMALL, **reference_spec.params, "enabled": True}
    assert reference_spec.training_params() == catalog.load("params:rho1").reference_tuning
    assert rho1_spec.method == "rho1" and rho1_spec.init_model == str(models / "micro-mtp")
    assert rho1_spec.reference_model == str(models / "micro-ref-tuned")
    assert (models / "micro-ref-tuned" / "config.json").is_file()
    assert (models / "rho1" / "metadata.json").is_file()


def test_reference_passes_through_when_tuning_is_disabled(workspace, fake_launcher) -> None:
    handle = HFModelDirectory(str(workspace / "data" / "06_models" / "micro-ref"))
    params = Rho1Params(**SMALL, reference_tuning={"enabled": False})
    runs = str(workspace / "runs")
    out = tune_reference(
        params,
        init_model=handle,
        training_runs=runs,
        train_jsonl=None,
        train_metadata=None,
        valid_jsonl=None,
        valid_metadata=None,
        runtime={},
        tokenizer=data_tokenizer(),
    )
    assert out is handle
    assert fake_launcher.calls == [] and not (workspace / "runs").exists()


def _cause(info: pytest.ExceptionInfo) -> BaseException:
    # The runner may wrap a node's exception; the node's own is the cause then.
    error = info.value
    return error if isinstance(error, TokenizerMismatchError) else error.__cause__ or error


@pytest.mark.parametrize("method", ["baseline", "critic"])
def test_node_refuses_a_model_shipping_another_tokenizer(workspace, fake_launcher, method) -> None:
    models = workspace / "data" / "06_models"
    other = data_tokenizer(290)
    write_model_dir(models / "micro-mtp", tokenizer=other.model_proto)
    with pytest.raises(Exception, match="tokenizer mismatch") as info:
        SequentialRunner().run(PIPELINES[method](), training_catalog(workspace))
    error = _cause(info)
    assert isinstance(error, TokenizerMismatchError)
    message = str(error)
    # Both files, both sizes, and what to do.
    assert str(workspace / TOKENIZER_FILE) in message and "(300 tokens" in message
    assert f"{models / 'micro-mtp'}/tokenizer.model (290 tokens" in message
    assert "catalog entry `tokenizer`" in message
    assert "data_engineering.tokenizer.pretrained_path" in message
    assert fake_launcher.calls == [] and not (models / "training").exists()


def test_node_refuses_a_model_without_its_tokenizer(workspace, fake_launcher) -> None:
    models = workspace / "data" / "06_models"
    write_model_dir(models / "micro-mtp", tokenizer=b"")
    (models / "micro-mtp" / "tokenizer.model").unlink()
    with pytest.raises(Exception, match=r"micro-mtp/tokenizer\.model does not exist"):
        SequentialRunner().run(baseline.create_pipeline(), training_catalog(workspace))
    assert fake_launcher.calls == []


def test_rho1_refuses_a_reference_shipping_another_tokenizer(workspace, fake_launcher) -> None:
    models = workspace / "data" / "06_models"
    write_model_dir(models / "micro-ref", hf=True, tokenizer=data_tokenizer(290).model_proto)
    catalog = training_catalog(workspace)
    catalog["params:rho1"] = Rho1Params(**SMALL, reference_tuning={"enabled": False})
    with pytest.raises(Exception, match="tokenizer mismatch") as info:
        SequentialRunner().run(rho1.create_pipeline(), catalog)
    message = str(_cause(info))
    assert f"{models / 'micro-mtp'}/tokenizer.model (the policy's) (300 tokens" in message
    assert f"{models / 'micro-ref-tuned'}/tokenizer.model (the Rho-1 reference's) (290" in message
    assert "Rho-1 subtracts the reference's token loss" in message
    assert fake_launcher.calls == []


def test_rho1_accepts_a_reference_without_tokenizer_file(workspace, fake_launcher) -> None:
    # Its vocabulary size is checked by the workers (load_reference_model).
    models = workspace / "data" / "06_models"
    write_model_dir(models / "micro-ref", hf=True, tokenizer=b"")
    catalog = training_catalog(workspace)
    catalog["params:rho1"] = Rho1Params(**SMALL, reference_tuning={"enabled": False})
    SequentialRunner().run(rho1.create_pipeline(), catalog)
    assert [spec.method for spec in fake_launcher.specs] == ["rho1"]


def test_reference_tuning_refuses_a_reference_shipping_another_tokenizer(
    workspace, fake_launcher
) -> None:
    models = workspace / "data" / "06_models"
    write_model_dir(models / "micro-ref", hf=True, tokenizer=data_tokenizer(290).model_proto)
    with pytest.raises(Exception, match="tokenizer mismatch") as info:
        SequentialRunner().run(rho1.create_pipeline(), training_catalog(workspace))
    message = str(_cause(info))
    assert f"{models / 'micro-ref'}/tokenizer.model (290 tokens" in message
    assert fake_launcher.calls == []


def test_node_rejects_bad_runtime_before_writing_anything(workspace, fake_launcher) -> None:
    catalog = training_catalog(workspace)
    catalog["params:runtime"] = {**RUNTIME, "nproc_per_node": 0}
    with pytest.raises(Exception, match=r"runtime\.nproc_per_node") as info:
        SequentialRunner().run(baseline.create_pipeline(), catalog)
    assert isinstance(info.value, RuntimeParamsError) or isinstance(
        info.value.__cause__, RuntimeParamsError
    )
    assert fake_launcher.calls == []
    assert not (workspace / "data" / "06_models" / "training").exists()
    with pytest.raises(RuntimeParamsError, match=r"runtime\.strategy"):
        runtime_params({"strategy": "zero3"})


def test_helpers(tmp_path: Path, monkeypatch) -> None:
    options = public_storage_options(
        {
            "key": "AKIA",
            "secret": "s",
            "token": None,
            "client_kwargs": {"endpoint_url": "http://x"},
        },
        {"client_kwargs": {"region_name": "eu", "aws_secret_access_key": "s"}, "anon": False},
    )
    assert options == {
        "client_kwargs": {"endpoint_url": "http://x", "region_name": "eu"},
        "anon": False,
    }
    monkeypatch.chdir(tmp_path)
    assert absolute_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert absolute_tracking_uri("mlruns") == (tmp_path / "mlruns").as_uri()
    assert absolute_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    first, second = new_run_dir(tmp_path, "critic"), new_run_dir(tmp_path, "critic")
    assert first.parent == second.parent == tmp_path / "critic" and first != second
    assert first.name.endswith("Z") and second.name.startswith(first.name)
    # Multi-node: every node names the run alike (the rendezvous id comes from the name).
    named = new_run_dir(tmp_path, "critic", name="critic-2node")
    assert (
        named
        == new_run_dir(tmp_path, "critic", name="critic-2node")
        == named.parent / ("critic-2node")
    )
    with pytest.raises(RunNameError, match=r"WMTP_RUN_NAME='\.\./x': expected a directory name"):
        new_run_dir(tmp_path, "critic", name="../x")


def test_run_name_from_the_environment(workspace, fake_launcher, monkeypatch) -> None:
    monkeypatch.setenv("WMTP_RUN_NAME", "baseline-two-nodes")
    SequentialRunner().run(baseline.create_pipeline(), training_catalog(workspace))
    (spec,) = fake_launcher.specs
    assert spec.run_path == workspace / "data/06_models/training/baseline/baseline-two-nodes"


# --------------------------------------------------------------------------- hooks
def test_pydantic_params_are_flattened_for_mlflow() -> None:
    flat = flatten_params(Rho1Params(), "rho1")
    assert flat["rho1.lr"] == str(Rho1Params().lr)
    assert flat["rho1.reference_tuning.enabled"] == "True"
    assert flatten_params(VerifiableParams(), "verifiable")["verifiable.curriculum.phase_ends"] == (
        "[0.3, 0.7, 1.0]"
    )


def test_missing_prerequisites_name_the_pipeline_to_run_first(tmp_path: Path) -> None:
    catalog = training_catalog(tmp_path)
    registered = {name: create() for name, create in PIPELINES.items()}
    registered["data_engineering"] = Pipeline([])  # produces nothing here: data is "raw"
    lines = missing_prerequisites(
        verifiable.create_pipeline(), catalog, registered, project_path=str(tmp_path)
    )
    assert lines == [
        "critic_model does not exist yet (data/06_models/critic): run `kedro run --pipeline "
        "critic` first"
    ]
    write_model_dir(tmp_path / "data" / "06_models" / "critic")
    assert missing_prerequisites(verifiable.create_pipeline(), catalog, registered) == []


# --------------------------------------------------------------------------- sessions
@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    """The project's conf and package in an empty directory (no data, no models)."""
    root = tmp_path_factory.mktemp("training_project")
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _run(project: Path, pipeline: str, params: str | None = None) -> None:
    # runtime_params exactly as `kedro run --params "..."` parses them.
    runtime = OmegaConf.to_container(OmegaConf.from_dotlist(params.split(","))) if params else {}
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=runtime) as session:
        session.run(pipeline_names=[pipeline])


@pytest.fixture
def tracking(monkeypatch, tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("baseline.lr=-1", "lr"),
        ("baseline.max_steps=abc", "max_steps"),
        ("baseline.learning_rate=0.1", "learning_rate"),
    ],
)
def test_bad_parameter_stops_the_session_naming_group_and_field(
    project_copy, fake_launcher, tracking, override, field
) -> None:
    with pytest.raises(ParameterValidationError) as info:
        _run(project_copy, "baseline", override)
    message = str(info.value)
    assert "'baseline'" in message and "BaselineParams" in message and field in message
    assert fake_launcher.calls == []


def test_missing_inputs_stop_the_session_naming_what_to_run(
    project_copy, fake_launcher, tracking
) -> None:
    with pytest.raises(MissingPrerequisiteError) as info:
        _run(project_copy, "verifiable")
    message = str(info.value)
    assert (
        "critic_model does not exist yet (data/06_models/critic): run `kedro run --pipeline "
        "critic` first" in message
    )
    assert "codecontests_train_metadata does not exist yet" in message
    assert "run `kedro run --pipeline data_engineering` first" in message
    assert fake_launcher.calls == []


def test_session_run_passes_the_mlflow_run_to_the_workers(
    project_copy, fake_launcher, tracking, tmp_path
) -> None:
    import mlflow

    project = tmp_path / "project"
    shutil.copytree(project_copy, project)
    write_training_data(project, "train")
    write_training_data(project, "valid", n=12)
    write_model_dir(project / "data" / "06_models" / "micro-mtp")
    write_tokenizer(project)
    _run(project, "baseline", "baseline.max_steps=3,baseline.batch_size=2,baseline.warmup_steps=1")

    ((spec, extra_env),) = fake_launcher.calls
    assert spec.run_path.parent == project / "data" / "06_models" / "training" / "baseline"
    assert spec.mlflow_run_id is not None and spec.mlflow_tracking_uri == tracking
    assert extra_env == {"MLFLOW_RUN_ID": spec.mlflow_run_id, "MLFLOW_TRACKING_URI": tracking}
    # The workers log into a run of their own, named after the job and nested in the one
    # kedro-mlflow opened (which holds the parameters): the jobs of one kedro run stay apart.
    client = mlflow.MlflowClient(tracking)
    job = client.get_run(spec.mlflow_run_id)
    assert job.info.run_name == "baseline"
    run = client.get_run(job.data.tags["mlflow.parentRunId"])
    assert run.data.params["baseline.max_steps"] == "3"
    assert run.data.params["runtime.nproc_per_node"] == "1"
    assert (project / "data" / "06_models" / "baseline" / "metadata.json").is_file()
    assert (project / "data" / "08_reporting" / "training" / "baseline_history.csv").is_file()
