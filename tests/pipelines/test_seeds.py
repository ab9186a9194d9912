"""Fine-tuning seeds (``experiment.seeds``): one namespaced copy of the method pipelines per
seed, built from the session's ``--params``; seed 1 keeps every plain name; each seed trains
with shifted seeds, in its own MLflow run, into its own entries."""

from __future__ import annotations

import inspect
import shutil
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.pipeline import Pipeline
from kedro.validation.type_extractor import TypeExtractor

from tests.pipelines import test_training_pipelines as training
from weighted_mtp import hooks
from weighted_mtp.pipeline_registry import method_pipelines
from weighted_mtp.pipelines.baseline.nodes import train_baseline
from weighted_mtp.pipelines.training_pipeline import (
    SEED_STRIDE,
    ExperimentParamsError,
    SeededJob,
    experiment_params,
    seed_copy,
    shift_seeds,
)
from weighted_mtp.training.config import BaselineParams, Rho1Params, RuntimeParams

PROJECT = Path(__file__).resolve().parents[2]
# The training pipelines' fixtures: a project copy, a stand-in launcher, an MLflow store.
project_copy = training.project_copy
fake_launcher = training.fake_launcher
tracking = training.tracking
METHOD_MODELS = {
    "baseline_model",
    "critic_model",
    "verifiable_model",
    "verifiable_uniform_model",
    "rho1_model",
}


@pytest.fixture(autouse=True)
def _forget_sessions() -> Iterator[None]:
    # A session records its configuration (and --params) for pipeline creation.
    previous = hooks.session_config()
    yield
    hooks.record_session(previous)
    bootstrap_project(PROJECT)  # drops the registry cached for this test's seeds


def _registry(seeds: int | None) -> dict[str, Pipeline]:
    """The project's pipelines as a session with ``--params experiment.seeds=<seeds>`` builds
    them (None: no --params)."""
    bootstrap_project(PROJECT)  # resets Kedro's per-process pipeline cache
    runtime = {"experiment": {"seeds": seeds}} if seeds is not None else None
    with KedroSession.create(project_path=PROJECT, runtime_params=runtime) as session:
        session.load_context()
        return dict(pipelines.items())


def _datasets(pipeline: Pipeline) -> set[str]:
    return set(pipeline.datasets())


def test_one_seed_keeps_every_name() -> None:
    registry = _registry(None)
    default = registry["__default__"]
    assert not any(n.name.startswith("seed_") for n in default.nodes)
    assert not any(d.startswith("seed_") for d in _datasets(default))
    assert _datasets(default) >= METHOD_MODELS
    assert [n.name for n in registry["baseline"].nodes] == ["baseline.train_baseline"]
    # Seed 1 alone is the method pipeline as its module creates it (no wrapper).
    assert registry["baseline"].nodes[0].func is train_baseline
    assert {"evaluation.baseline_model.generate_completions", "report.compare_models"} <= {
        n.name for n in default.nodes
    }


def test_two_seeds_namespace_every_method_pipeline_of_seed_two() -> None:
    registry = _registry(2)
    default = registry["__default__"]
    names = {n.name for n in default.nodes}
    datasets = _datasets(default)
    # Every method pipeline of DEFAULT_PIPELINES, generically: rho1 with its reference tuning.
    assert set(method_pipelines()) == {
        "baseline",
        "critic",
        "verifiable",
        "verifiable_uniform",
        "rho1",
    }
    expected_nodes = {
        "baseline.train_baseline",
        "critic.train_critic",
        "verifiable.train_verifiable",
        "verifiable_uniform.train_verifiable_uniform",
        "rho1.tune_reference",
        "rho1.train_rho1",
    }
    assert expected_nodes | {f"seed_2.{n}" for n in expected_nodes} <= names
    assert not any(n.startswith("seed_3.") for n in names)
    # Pretraining and data engineering once.
    assert sum(n.name == "micro_models.build_micro_mtp_model" for n in default.nodes) == 1
    assert not any(n.startswith("seed_2.") and "micro" in n for n in names)
    # Each seed owns its models, histories, checkpoints and run root; shares the rest.
    assert METHOD_MODELS | {f"seed_2.{m}" for m in METHOD_MODELS} <= datasets
    by_name = {n.name: n for n in default.nodes}
    verifiable = set(by_name["seed_2.verifiable.train_verifiable"].inputs)
    assert {"seed_2.critic_model", "seed_2.verifiable_checkpoints", "seed_2.training_runs"} <= (
        verifiable
    )
    assert {"params:verifiable", "params:runtime", "tokenizer"} <= verifiable
    assert "critic_model" not in verifiable
    assert "seed_2.tuned_reference_model" in by_name["seed_2.rho1.train_rho1"].inputs
    assert "reference_model" in by_name["seed_2.rho1.tune_reference"].inputs  # shared
    assert "base_model" in by_name["seed_2.baseline.train_baseline"].inputs
    assert set(by_name["seed_2.baseline.train_baseline"].outputs) == {
        "seed_2.baseline_model",
        "seed_2.baseline_training_history",
    }
    # Both seeds' nodes run under their seed (seed 1 offsets by 0, in its MLflow run).
    for name in (
        "baseline.train_baseline",
        "seed_2.baseline.train_baseline",
        "seed_2.rho1.tune_reference",
    ):
        assert isinstance(by_name[name].func, SeededJob), name
    assert by_name["seed_2.baseline.train_baseline"].func.seed == 2
    # A method pipeline requested alone holds all its seeds.
    assert {n.name for n in registry["critic"].nodes} == {
        "critic.train_critic",
        "seed_2.critic.train_critic",
    }
    # Evaluation: every seed of every trained model, base_model once, seeds' histories read.
    assert {
        "evaluation.seed_2.baseline_model.generate_completions",
        "evaluation.seed_2.verifiable_uniform_model.generate_completions",
        "evaluation.base_model.generate_completions",
    } <= names
    assert not any(n.startswith("evaluation.seed_2.base_model.") for n in names)
    compare = set(by_name["report.compare_models"].inputs)
    assert {"seed_2.rho1_model_evaluation_result", "training_diagnostics"} <= compare
    diagnose = by_name["report.diagnose_training"]
    assert "seed_2.verifiable_uniform_training_history" in diagnose.inputs
    assert "seed_2.critic_training_history" in by_name["report.render_evaluation_report"].inputs


def test_seeded_nodes_keep_their_typed_parameters_for_kedro() -> None:
    registry = _registry(2)
    node = next(n for n in registry["baseline"].nodes if n.name == "seed_2.baseline.train_baseline")
    # Kedro builds params:baseline from the annotation it finds through the wrapper: its own
    # type extractor, which binds the node's dict inputs to the function's signature.
    extracted = TypeExtractor({"baseline": registry["baseline"]}).extract_types_from_pipelines()
    assert extracted == {"baseline": BaselineParams}
    assert typing.get_type_hints(node.func)["params"] is BaselineParams
    assert list(inspect.signature(node.func, follow_wrapped=False).parameters) == [
        "params",
        "inputs",
    ]


def test_shift_seeds_moves_every_seed_field_and_nothing_else() -> None:
    params = Rho1Params(seed=3, reference_tuning={"seed": 5, "max_steps": 70})
    shifted = shift_seeds(params, 2000)
    assert (shifted.seed, shifted.reference_tuning.seed) == (2003, 2005)
    assert shifted.reference_tuning.max_steps == 70 and shifted.lr == params.lr
    assert isinstance(shifted, Rho1Params)
    assert shift_seeds({"seed": 42, "device": "cpu"}, 1000) == {"seed": 1042, "device": "cpu"}
    assert shift_seeds(RuntimeParams(), 1000).seed == 1042
    assert shift_seeds(params, 0) is params


def test_seed_copy_with_one_seed_is_the_pipeline_itself() -> None:
    from weighted_mtp.pipelines.baseline import create_pipeline

    pipeline = create_pipeline()
    assert seed_copy(pipeline, 1, set(), seeds=1) is pipeline
    with pytest.raises(ValueError, match="not one of 1..2"):
        seed_copy(create_pipeline(), 3, set(), seeds=2)


@pytest.mark.parametrize(
    ("raw", "field"), [({"seeds": 0}, "seeds"), ({"seeds": "3"}, "seeds"), ({"n": 2}, "n")]
)
def test_bad_experiment_parameters_name_the_field(raw, field) -> None:
    with pytest.raises(ExperimentParamsError, match=f"experiment.{field}"):
        experiment_params(raw)


def test_bad_seeds_stop_the_session_before_anything_runs(
    project_copy, fake_launcher, tracking
) -> None:
    with pytest.raises(ExperimentParamsError, match="experiment.seeds=0"):
        training._run(project_copy, "baseline", "experiment.seeds=0")
    assert fake_launcher.calls == []


def test_two_seeds_train_apart_and_nest_in_mlflow(
    project_copy, fake_launcher, tracking, tmp_path
) -> None:
    import mlflow

    project = tmp_path / "project"
    shutil.copytree(project_copy, project)
    training.write_training_data(project, "train")
    training.write_training_data(project, "valid", n=12)
    training.write_model_dir(project / "data" / "06_models" / "micro-mtp")
    training.write_tokenizer(project)
    # As `kedro run --pipelines baseline --params experiment.seeds=2,...` parses them.
    training._run(
        project,
        "baseline",
        "experiment.seeds=2,baseline.max_steps=3,baseline.batch_size=2,baseline.warmup_steps=1",
    )

    first, second = sorted(fake_launcher.specs, key=lambda spec: spec.runtime.seed)
    data = project / "data"
    assert (first.runtime.seed, second.runtime.seed) == (42, 42 + SEED_STRIDE)
    assert second.params["seed"] == first.params["seed"] + SEED_STRIDE
    assert first.identity.digest != second.identity.digest
    assert first.run_path.parent == data / "06_models" / "training" / "baseline"
    assert second.run_path.parent == data / "06_models" / "training" / "seed_2" / "baseline"
    assert Path(second.checkpoint_dir) == data / "06_models" / "checkpoints" / "seed_2" / "baseline"
    assert (data / "06_models" / "baseline" / "metadata.json").is_file()
    assert (data / "06_models" / "seed_2" / "baseline" / "metadata.json").is_file()
    assert (data / "08_reporting" / "training" / "baseline_history.csv").is_file()
    assert (data / "08_reporting" / "training" / "seed_2" / "baseline_history.csv").is_file()

    # kedro run -> seed_<s> (nested) -> the job's run (nested in its seed's).
    client = mlflow.MlflowClient(tracking)
    parents = set()
    for spec, seed in ((first, 1), (second, 2)):
        job = client.get_run(spec.mlflow_run_id)
        assert job.info.run_name == "baseline"
        seed_run = client.get_run(job.data.tags["mlflow.parentRunId"])
        assert seed_run.info.run_name == f"seed_{seed}"
        assert seed_run.data.tags["seed"] == str(seed)
        assert seed_run.data.params["runtime.seed"] == str(spec.runtime.seed)
        assert seed_run.data.params["baseline.seed"] == str(spec.params["seed"])
        assert seed_run.info.status == "FINISHED"
        parents.add(seed_run.data.tags["mlflow.parentRunId"])
    (kedro_run,) = parents
    assert client.get_run(kedro_run).data.params["baseline.seed"] == str(first.params["seed"])


def test_the_jobs_of_one_seed_share_its_mlflow_run(tracking) -> None:
    import mlflow

    from weighted_mtp.pipelines.training_pipeline import seed_mlflow_run

    # A kedro-mlflow session earlier in this process leaves its run active, its tracking URI
    # and experiment set (none of them this test's): start clean, in this test's store.
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("seeds")
    with seed_mlflow_run(2, {"a": "1"}) as none:
        assert none is None  # no kedro run open: nothing logged
    with mlflow.start_run(run_name="kedro") as parent:
        with (
            seed_mlflow_run(2, {"runtime.seed": "1042", "baseline.seed": "1000"}) as first,
            mlflow.start_run(run_name="baseline", nested=True) as job,
        ):
            pass
        with seed_mlflow_run(3, {"runtime.seed": "2042"}) as other:
            pass
        with seed_mlflow_run(2, {"runtime.seed": "1042", "critic.seed": "1000"}) as again:
            assert mlflow.active_run().info.run_id == first
        assert mlflow.active_run().info.run_id == parent.info.run_id
    client = mlflow.MlflowClient(tracking)
    assert again == first != other
    seed_run = client.get_run(first)
    assert seed_run.info.run_name == "seed_2" and seed_run.data.tags["seed"] == "2"
    assert seed_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert seed_run.data.params == {
        "runtime.seed": "1042",
        "baseline.seed": "1000",
        "critic.seed": "1000",
    }
    assert seed_run.info.status == "FINISHED"
    assert client.get_run(job.info.run_id).data.tags["mlflow.parentRunId"] == first
