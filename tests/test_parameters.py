"""Every parameter group is validated when the run starts, before any node runs, and a bad
value is reported with the parameter, the value and what is allowed.

The runs use the project's configuration in a copy whose data folder starts empty: a check
that let a run through would show up as files written there.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.validation.exceptions import ParameterValidationError
from omegaconf import OmegaConf
from pydantic import ValidationError

from weighted_mtp import hooks
from weighted_mtp.cli import describe_parameter_errors
from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.pipelines.data_engineering.params import (
    ConversionParams,
    SyntheticParams,
    TokenizerParams,
)
from weighted_mtp.pipelines.evaluation.params import EVALUATION_DATASETS, EvaluationParams
from weighted_mtp.pipelines.evaluation.pipeline import PROBLEM_SETS
from weighted_mtp.pipelines.micro_models.params import MicroMTPParams, MicroReferenceParams

PROJECT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).parent / "kedro")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """pyproject.toml and conf/ of the project; the package is the installed one."""
    root = tmp_path_factory.mktemp("params_project")
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT / name, root / name)
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()  # Kedro requires the source folder to exist
    return root


@pytest.fixture(autouse=True)
def _isolated(monkeypatch) -> Iterator[None]:
    # kedro-mlflow opens the project's sqlite store (inside the copy) unless told otherwise.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous = hooks.session_config()
    yield
    hooks.record_session(previous)


def _run(project: Path, dotlist: str, pipelines: list[str] | None) -> Exception:
    """Run ``pipelines`` (None: the default) with ``--params dotlist``; the error it raised."""
    # What `kedro run --params` builds from its option.
    runtime = OmegaConf.to_container(OmegaConf.from_dotlist(dotlist.split(",")))
    bootstrap_project(project)
    with (
        pytest.raises((ParameterValidationError, hooks.ParameterError)) as raised,
        KedroSession.create(project_path=project, runtime_params=runtime) as session,
    ):
        session.run(pipeline_names=pipelines)
    assert not (project / "data").exists(), "a node ran before the parameters were checked"
    return raised.value


def _shown(error: Exception) -> str:
    """The text `kedro run` prints for ``error`` (src/weighted_mtp/cli.py)."""
    if isinstance(error, ParameterValidationError):
        return describe_parameter_errors(str(error))
    return str(error)


# The cases of issue 10: each was accepted or failed obscurely deep in the run.
@pytest.mark.parametrize(
    ("dotlist", "pipelines", "expected"),
    [
        (
            "evaluation.datasets.humaneval.max_problems=-1",
            ["evaluation"],
            "evaluation.datasets.humaneval.max_problems=-1: Input should be greater than or "
            "equal to 1",
        ),
        (
            "evaluation.generation.temperature=-1",
            ["evaluation"],
            "evaluation.generation: temperature must be >= 0 (0: greedy, one sample per "
            "problem), got -1.0",
        ),
        (
            "data_engineering.synthetic.n_train_tasks=0",
            ["data_engineering"],
            "data_engineering.synthetic.n_train_tasks=0: Input should be greater than or equal "
            "to 1",
        ),
        (
            "evaluation.generation.n_samples=two",
            ["evaluation"],
            "evaluation.generation.n_samples='two': Input should be a valid integer",
        ),
        (
            "evaluation.datasets.mbpp.max_problems=ten",
            ["evaluation"],
            "evaluation.datasets.mbpp.max_problems='ten': Input should be a valid integer",
        ),
        (
            "micro_models.mtp.dim=102",
            ["micro_models"],
            "micro_models.mtp: dim=102 is not divisible by n_heads=4",
        ),
        (
            "runtime.nproc_per_node=0",
            ["baseline"],
            "runtime.nproc_per_node=0: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_parameters_stop_the_run_before_any_node(project, dotlist, pipelines, expected):
    assert expected in _shown(_run(project, dotlist, pipelines))


@pytest.mark.parametrize("pipelines", [None, ["data_engineering", "evaluation"]])
def test_evaluation_is_checked_before_the_pipelines_that_run_first(project, pipelines):
    # The whole experiment (None) or data_engineering first: their first nodes write into
    # data/, and the evaluation comes last; nothing may run.
    error = _run(project, "evaluation.generation.n_samples=two", pipelines)
    assert "evaluation.generation.n_samples='two'" in _shown(error)


@pytest.mark.slow
def test_kedro_run_reports_a_bad_parameter_in_one_line(project):
    proc = subprocess.run(
        [KEDRO, "run", "--pipelines", "evaluation", "--params", "evaluation.ks=[0]"],
        cwd=project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    error = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert error == [
        "Error: Invalid parameters (conf/*/parameters*.yml or --params): "
        "evaluation.ks.0=0: Input should be greater than or equal to 1"
    ]
    # Besides it, at most MLflow's note that it created the (new) sqlite store.
    others = [line for line in proc.stderr.splitlines() if line not in error]
    assert all("mlflow.store.db.utils" in line for line in others), others
    assert not (project / "data").exists()


# --------------------------------------------------------------------------- the models alone
def test_the_project_configuration_fits_every_model():
    from kedro.framework.project import settings

    bootstrap_project(PROJECT)
    for env in ("base", "a100", "mps"):
        params = settings.CONFIG_LOADER_CLASS(
            conf_source=str(PROJECT / "conf"), env=env, **settings.CONFIG_LOADER_ARGS
        )["parameters"]
        group = params["data_engineering"]
        SyntheticParams(**group["synthetic"])
        ConversionParams(**group["conversion"])
        TokenizerParams(**group["tokenizer"])
        EvaluationParams(**params["evaluation"])
        MicroMTPParams(**params["micro_models"]["mtp"])
        MicroReferenceParams(**params["micro_models"]["reference"])


def test_evaluation_datasets_are_the_pipelines_problem_sets():
    assert set(EVALUATION_DATASETS) == set(PROBLEM_SETS)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"datasets": {"humanevl": {}}}, "unknown datasets ['humanevl']"),
        ({"generation": {"temprature": 0.5}}, "generation.temprature"),
        ({"generation": {"temperature": math.nan}}, "temperature must be >= 0"),
        ({"ks": []}, "ks"),
        ({"execution": {"workers": 0}}, "execution.workers"),
        ({"execution": {"limits": {"wall_seconds": 0}}}, "'wall_seconds': 0"),
        ({"models": ["base_model", "base_model"]}, "listed more than once"),
        ({"models": ["canonical"]}, "reserved"),
        ({"datasets": {"mbpp": {"prompt": {"style": "chat"}}}}, "style must be one of"),
    ],
)
def test_evaluation_params_refuse(raw, message):
    base = {"models": ["base_model"], "datasets": {"mbpp": {"max_problems": 3}}}
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("(", r"\(")):
        EvaluationParams(**{**base, **raw})


def test_evaluation_params_fill_each_datasets_prompt_format():
    params = EvaluationParams(models=["m"], datasets={"humaneval": None, "mbpp": {}})
    assert params.formats["humaneval"].style == "as_is"
    assert params.formats["mbpp"].style == "instruction_with_tests"
    assert params.datasets["mbpp"].max_problems is None  # all problems


@pytest.mark.parametrize(
    ("model", "raw", "message"),
    [
        (SyntheticParams, {"n_valid_tasks": 0}, "n_valid_tasks"),
        (ConversionParams, {"on_bad_record": "skip"}, "'raise' or 'quarantine'"),
        (ConversionParams, {"mbpp_splits": {"train": [1, 2]}}, "needs exactly the splits"),
        (
            ConversionParams,
            {
                "mbpp_splits": {
                    "prompt": [1, 10],
                    "test": [10, 20],
                    "validation": [21, 30],
                    "train": [31, 40],
                }
            },
            "overlap",
        ),
        (TokenizerParams, {"model_type": "wordpiece"}, "'bpe' or 'unigram'"),
        (TokenizerParams, {"space_runs": [1, 4]}, "runs of spaces must be >= 2"),
        (MicroMTPParams, {"n_future_tokens": 7}, "n_future_tokens=7 must be in"),
        (MicroMTPParams, {"dtype": "int8"}, "dtype"),
        (MicroMTPParams, {"n_layer": 3}, "n_layer"),
        (MicroReferenceParams, {"n_heads": 3}, "not divisible by n_heads=3"),
        (MicroReferenceParams, {"n_kv_heads": 3}, "not divisible by n_kv_heads=3"),
    ],
)
def test_pipeline_params_refuse(model, raw, message):
    with pytest.raises(ValidationError, match=message):
        model(**raw)


def test_tokenizer_vocab_floor_is_the_trainers():
    runs = [2, 4]
    sizes = range(200, 400)
    smallest = min(v for v in sizes if _accepted(TokenizerParams, vocab_size=v, space_runs=runs))
    corpus = ["def f():\n    return 1\n"]
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(corpus, vocab_size=smallest - 1, space_runs=runs)
    try:
        train_tokenizer(corpus, vocab_size=smallest, space_runs=runs)
    except Exception as exc:  # SentencePiece may refuse a tiny corpus, but not for this
        assert "too small" not in str(exc)
    # A pretrained tokenizer brings its own vocabulary: the size is not checked then.
    assert TokenizerParams(vocab_size=1, pretrained_path="tok.model").vocab_size == 1


def _accepted(model, **raw) -> bool:
    try:
        model(**raw)
    except ValidationError:
        return False
    return True
