"""The evaluation pipeline end to end on a tiny real model directory and hand-written problems."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import CSVDataset
from kedro_datasets.text import TextDataset

from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.datasets import JsonlDataset, ModelDirectoryDataset
from weighted_mtp.evaluation.comparison import SEED_SPREAD_COLUMNS
from weighted_mtp.evaluation.prompts import SamplingSettings, complete_problems
from weighted_mtp.evaluation.scoring import summarise
from weighted_mtp.model_io.model_dir import save_model_dir
from weighted_mtp.models import MTPTransformer, debug_args
from weighted_mtp.pipeline_registry import configured_models
from weighted_mtp.pipelines.evaluation.nodes import (
    EvaluationParams,
    compare_models,
    diagnose_training,
    render_report,
)
from weighted_mtp.pipelines.evaluation.pipeline import create_pipeline

PROJECT = Path(__file__).resolve().parents[2]

HUMANEVAL_PROMPT = 'def add(a, b):\n    """Return the sum of a and b."""\n'
HUMANEVAL = [
    {
        "task_id": f"HumanEval/{i}",
        "dataset": "humaneval",
        "prompt": HUMANEVAL_PROMPT,
        "entry_point": "add",
        "kind": "function",
        "tests": f"def check(candidate):\n    assert candidate(2, {i}) == {2 + i}\n\ncheck(add)\n",
        "execution_prefix": HUMANEVAL_PROMPT,
        "canonical_solution": "    return a + b\n",
        "difficulty": None,
        "split": "test",
        "time_limit": None,
    }
    for i in range(3)
]
MBPP = [
    {
        "task_id": f"mbpp/{i}",
        "dataset": "mbpp",
        "prompt": f"Write a function to multiply two numbers.\nYour code should pass these tests:\nassert mul(3, {i}) == {3 * i}",
        "entry_point": "mul",
        "kind": "function",
        "tests": f"assert mul(3, {i}) == {3 * i}\n",
        "execution_prefix": "",
        "canonical_solution": "def mul(a, b):\n    return a * b\n",
        "difficulty": None,
        "split": "test",
        "time_limit": None,
    }
    for i in range(3)
]
CODECONTESTS = [
    {
        "task_id": f"cc/{i}",
        "dataset": "codecontests",
        "prompt": "Read two integers and print their sum.",
        "entry_point": None,
        "kind": "stdio",
        "tests": [
            {"input": f"1 {i}\n", "output": f"{1 + i}\n"},
            {"input": "5 5\n", "output": "10\n"},
        ],
        "execution_prefix": "",
        "canonical_solution": "a, b = map(int, input().split())\nprint(a + b)\n",
        "difficulty": 1 + i % 2,
        "split": "test",
        "time_limit": 2.0,
    }
    for i in range(3)
]

RAW_PARAMS = {
    "models": ["model_a", "model_b"],
    "datasets": {
        "humaneval": {"max_problems": 2},  # default prompt format for humaneval
        "mbpp": {
            "max_problems": 2,
            "prompt": {"style": "instruction_with_tests", "stop": ["\nassert "]},
        },
        "codecontests": {"max_problems": 2, "prompt": {"style": "instruction", "stop": ["\n### "]}},
    },
    "generation": {
        "n_samples": 2,
        "temperature": 0.8,
        "top_p": 0.95,
        "max_new_tokens": 16,
        "batch_size": 3,
        "seed": 7,
    },
    "ks": [1, 2, 5],
    "execution": {"workers": 2, "limits": {"cpu_seconds": 2.0, "wall_seconds": 5.0}},
    # rho1_model is not evaluated here: its contrast is set aside, not tested.
    "comparison": {
        "contrasts": [["model_b", "model_a"], ["rho1_model", "model_a"]],
        "n_permutations": 999,
    },
}


@pytest.fixture(scope="module")
def tokenizer():
    texts = [p["prompt"] + (p["canonical_solution"] or "") for p in HUMANEVAL + MBPP + CODECONTESTS]
    return train_tokenizer(texts * 20, vocab_size=400)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tokenizer) -> dict[str, str]:
    dirs = {}
    for seed, name in enumerate(["model_a", "model_b"]):
        torch.manual_seed(seed)
        args = debug_args(vocab_size=tokenizer.vocab_size, max_seq_len=256)
        out = tmp_path_factory.mktemp("models") / name
        dirs[name] = save_model_dir(MTPTransformer(args), args, tokenizer, out, origin="test")
    return dirs


def test_pipeline_runs_and_writes_every_output(tmp_path, tokenizer, model_dirs, caplog):
    params = EvaluationParams(**RAW_PARAMS)  # what Kedro builds from the typed node signature
    out = tmp_path / "out"
    datasets = {
        "eval_problems_humaneval": MemoryDataset(HUMANEVAL),
        "eval_problems_mbpp": MemoryDataset(MBPP),
        "eval_problems_codecontests": MemoryDataset(CODECONTESTS),
        "tokenizer": MemoryDataset(tokenizer, copy_mode="assign"),
        "params:evaluation": MemoryDataset(params, copy_mode="assign"),
        "params:runtime": MemoryDataset({"device": "cpu", "dtype": "float32"}),
        "evaluation_runs": MemoryDataset(str(tmp_path / "runs")),
        "evaluation_results": JSONDataset(filepath=str(out / "results.json")),
        "evaluation_table": CSVDataset(
            filepath=str(out / "pass_at_k.csv"), save_args={"index": False}
        ),
        "evaluation_contrasts": CSVDataset(
            filepath=str(out / "contrasts.csv"), save_args={"index": False}
        ),
        "evaluation_metrics": MemoryDataset(),
        "evaluation_report_png": MatplotlibDataset(filepath=str(out / "pass_at_k.png")),
        "evaluation_training_png": MatplotlibDataset(filepath=str(out / "training.png")),
        "evaluation_report_html": TextDataset(filepath=str(out / "report.html")),
    }
    for name, path in model_dirs.items():
        datasets[name] = ModelDirectoryDataset(path=path)
        datasets[f"{name}.evaluation_samples"] = JsonlDataset(
            filepath=str(out / name / "samples.jsonl")
        )
    catalog = DataCatalog(datasets=datasets)
    with caplog.at_level(logging.INFO):
        SequentialRunner().run(create_pipeline(models=["model_a", "model_b"]), catalog)

    for name in model_dirs:
        samples = JsonlDataset(filepath=str(out / name / "samples.jsonl")).load()
        assert len(samples) == 6 * 2  # 2 problems x 3 datasets x n_samples
        assert {s["status"] for s in samples} <= {"passed", "failed", "timeout", "error"}
        assert all(
            isinstance(s["completion"], str) and s["n_generated_tokens"] <= 16 for s in samples
        )
        assert {s["dataset"] for s in samples} == {"humaneval", "mbpp", "codecontests"}

    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"model_a", "model_b", "canonical"}
    canonical = results["models"]["canonical"]["summary"]["per_dataset"]
    assert all(group["pass@1"] == 1.0 for group in canonical.values()), "harness check failed"
    model_a = results["models"]["model_a"]
    assert set(model_a["summary"]["per_dataset"]["mbpp"]) >= {"pass@1", "pass@2"}
    assert "pass@5" not in model_a["summary"]["per_dataset"]["mbpp"]  # n = 2 < 5
    assert model_a["generation"]["per_dataset"]["humaneval"]["n_samples"] == 4

    table = pd.read_csv(out / "pass_at_k.csv")
    assert {
        "model",
        "dataset",
        "difficulty",
        "k",
        "pass_at_k",
        "ci_low",
        "ci_high",
        "n_problems",
        "n_samples",
    } <= set(table.columns)
    assert set(table["model"]) == {"model_a", "model_b", "canonical"}
    assert (table["ci_low"] <= table["pass_at_k"] + 1e-12).all()
    assert (table["pass_at_k"] <= table["ci_high"] + 1e-12).all()
    whole = table[table["difficulty"].isna() & (table["k"] == 1)]
    assert set(whole.loc[whole["model"] == "model_a", "n_samples"]) == {4}  # 2 problems x 2

    # One row per pre-registered contrast, dataset and k, with exactly the agreed columns
    # first; two problems per dataset detect nothing at 80% power (mde inf).
    contrasts = pd.read_csv(out / "contrasts.csv")
    assert list(contrasts.columns[:9]) == [
        "contrast",
        "dataset",
        "k",
        "diff",
        "p_value",
        "p_holm",
        "mde",
        "n_problems",
        "n_seeds",
    ]
    assert {"only_a", "only_b", "diff_low", "diff_high", "status"} <= set(contrasts.columns)
    assert set(contrasts["contrast"]) == {"model_b-model_a"}
    assert sorted(zip(contrasts["dataset"], contrasts["k"], strict=True)) == [
        (d, k) for d in ("codecontests", "humaneval", "mbpp") for k in (1, 2)
    ]
    assert (contrasts["n_problems"] == 2).all() and (contrasts["n_seeds"] == 1).all()
    assert (contrasts["p_holm"] == contrasts["p_value"]).all()  # one contrast per family
    assert contrasts["mde"].map(math.isinf).all()
    assert (contrasts["status"] == "not distinguishable at this scale").all()
    verdict = json.loads((out / "results.json").read_text())["verdict"]
    assert "Not tested (a model not evaluated in this run): rho1_model-model_a." in str(verdict)
    assert [c["contrast"] for c in results["contrasts"]] == list(contrasts["contrast"])
    assert {"only_a_tasks", "only_b_tasks"} <= set(results["contrasts"][0])

    # The verdict on codecontests pass@1: every model's Wilson estimate and the contrast.
    verdict = results["verdict"]
    assert (verdict["dataset"], verdict["k"]) == ("codecontests", 1)
    assert set(verdict["estimates"]) == {"model_a", "model_b"}
    assert verdict["estimates"]["model_a"]["n_problems"] == 2
    assert "codecontests pass@1" in verdict["text"]
    assert "model_b - model_a" in verdict["text"]
    assert "not distinguishable at this scale" in verdict["text"]
    assert "training variance is not in these intervals" in verdict["text"]

    metrics = catalog.load("evaluation_metrics")
    assert metrics["canonical.codecontests.pass_at_1"] == {"value": 1.0, "step": 0}
    assert 0.0 <= metrics["model_b.humaneval.pass_at_2"]["value"] <= 1.0
    assert metrics["model_a.mbpp.mean_generated_tokens"]["value"] > 0
    # Per difficulty: the two codecontests problems are difficulty 1 and 2 (and the canonical
    # solutions pass both).
    assert metrics["canonical.codecontests.difficulty_1.pass_at_1"] == {"value": 1.0, "step": 0}
    assert metrics["canonical.codecontests.difficulty_2.pass_at_1"] == {"value": 1.0, "step": 0}
    assert {
        "model_a.codecontests.difficulty_1.pass_at_2",
        "model_b.codecontests.difficulty_2.pass_at_1",
    } <= set(metrics)
    assert not any("humaneval.difficulty" in key for key in metrics)  # no difficulty there
    assert "contrast.model_b-model_a.codecontests.pass_at_1.p_holm" in metrics
    assert "contrast.model_b-model_a.codecontests.pass_at_1.mde" not in metrics  # inf

    png = (out / "pass_at_k.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "model_b" in page and "canonical" in page and "<td>1.000</td>" in page
    assert "<p class='verdict'>" in page and verdict["text"].split(" (")[0] in page
    assert "harness check: all 6 canonical solutions pass" in caplog.text


def test_speculative_completions_equal_batched_greedy(tokenizer, model_dirs):
    model = ModelDirectoryDataset(path=model_dirs["model_a"]).load().load()
    params = EvaluationParams(**RAW_PARAMS)
    problems = HUMANEVAL + CODECONTESTS
    greedy = SamplingSettings(max_new_tokens=20, batch_size=4)
    spec = SamplingSettings(max_new_tokens=20, speculative=True)
    plain, _ = complete_problems(model, tokenizer, problems, params.formats, greedy)
    fast, stats = complete_problems(model, tokenizer, problems, params.formats, spec)
    assert [s["completion"] for s in fast] == [s["completion"] for s in plain]
    assert [s["n_generated_tokens"] for s in fast] == [s["n_generated_tokens"] for s in plain]
    for dataset in ("humaneval", "codecontests"):
        assert 0.0 <= stats[dataset]["acceptance_rate"] <= 1.0
        assert 1.0 <= stats[dataset]["tokens_per_forward"] <= 4.0


def test_params_are_validated():
    with pytest.raises(ValueError, match="temperature"):
        EvaluationParams(**{**RAW_PARAMS, "generation": {"speculative": True, "temperature": 0.5}})
    with pytest.raises(ValueError, match="style"):
        EvaluationParams(**{**RAW_PARAMS, "datasets": {"mbpp": {"prompt": {"style": "chat"}}}})
    greedy = EvaluationParams(**{**RAW_PARAMS, "generation": {"n_samples": 5, "temperature": 0}})
    assert greedy.generation.samples_per_problem == 1


def test_contrasts_are_checked_and_narrowed_to_the_models_before_the_run():
    def params(contrasts, models=("model_a", "model_b")):
        return EvaluationParams(
            **{**RAW_PARAMS, "models": list(models), "comparison": {"contrasts": contrasts}}
        )

    assert params([["model_a", "model_b"]]).comparison.contrasts == [("model_a", "model_b")]
    assert params([]).comparison.contrasts == []
    # A contrast naming a model this run does not evaluate is set aside, by configuration,
    # before any result exists: the tested family is the rest.
    subset = params([["model_a", "model_b"], ["rho1_model", "model_a"]])
    assert subset.tested_contrasts == [("model_a", "model_b")]
    assert subset.untested_contrasts == [("rho1_model", "model_a")]
    with pytest.raises(ValueError, match="compares a model with itself"):
        params([["model_a", "model_a"]])
    with pytest.raises(ValueError, match="listed twice"):
        params([["model_a", "model_b"], ["model_b", "model_a"]])
    with pytest.raises(ValueError, match="alpha"):
        EvaluationParams(**{**RAW_PARAMS, "comparison": {"alpha": 1.5}})


def test_report_reads_the_histories_of_the_evaluated_methods():
    def report_inputs(models):
        pipeline = create_pipeline(models=models)
        return set(
            next(n for n in pipeline.nodes if n.name == "report.render_evaluation_report").inputs
        )

    assert report_inputs(["model_a"]) == {"evaluation_results"}
    assert report_inputs(["base_model", "verifiable_model", "rho1_model"]) == {
        "evaluation_results",
        "critic_training_history",  # verifiable starts from the critic
        "verifiable_training_history",
        "rho1_training_history",
    }


def test_project_configuration_shapes_the_pipeline():
    assert configured_models(PROJECT) == [
        "base_model",
        "baseline_model",
        "verifiable_model",
        "verifiable_uniform_model",
        "rho1_model",
    ]
    loader = OmegaConfigLoader(
        conf_source=str(PROJECT / "conf"), base_env="base", default_run_env="local"
    )
    params = EvaluationParams(**loader["parameters"]["evaluation"])
    assert set(params.datasets) == {"humaneval", "mbpp", "codecontests"}
    # The pre-registered contrasts: each weighted method against baseline, baseline against
    # base; conf/a100 evaluates no rho1_model, so it states its own list without it.
    assert params.comparison.contrasts == [
        ("verifiable_model", "baseline_model"),
        ("rho1_model", "baseline_model"),
        ("baseline_model", "base_model"),
        ("verifiable_model", "verifiable_uniform_model"),  # the TD weighting's own effect
    ]
    a100 = OmegaConfigLoader(
        conf_source=str(PROJECT / "conf"), base_env="base", default_run_env="a100"
    )["parameters"]["evaluation"]
    assert EvaluationParams(**a100).comparison.contrasts == [
        ("verifiable_model", "baseline_model"),
        ("baseline_model", "base_model"),
    ]
    names = {n.name for n in create_pipeline(models=params.models).nodes}
    assert {
        "evaluation.base_model.generate_completions",
        "report.compare_models",
        "report.render_evaluation_report",
    } <= names
    # Every output of the pipeline that is persisted resolves in the project catalog.
    catalog = DataCatalog.from_config(loader["catalog"])
    samples = catalog.get("base_model.evaluation_samples")
    assert isinstance(samples, JsonlDataset)
    assert "base_model" in samples._describe()["filepath"]
    result = catalog.get("base_model_evaluation_result")
    assert "base_model/result.json" in str(result._describe()["filepath"])
    for name in (
        "evaluation_results",
        "evaluation_table",
        "evaluation_contrasts",
        "evaluation_metrics",
        "evaluation_report_png",
        "evaluation_training_png",
        "evaluation_report_html",
        "baseline_training_history",
        "critic_training_history",
    ):
        assert name in catalog
    # The results and the table are MLflow artifacts of the run, beside the report.
    for name in (
        "evaluation_results",
        "evaluation_table",
        "evaluation_contrasts",
        "evaluation_report_html",
    ):
        # MlflowArtifactDataset makes a subclass of the wrapped dataset that logs on save.
        assert getattr(catalog.get(name), "artifact_path", None) == "evaluation", name
    assert str(catalog.get("evaluation_contrasts")._describe()["filepath"]).endswith(
        "data/08_reporting/evaluation/contrasts.csv"
    )


# --------------------------------------------------------------------------- seeds
def _result(passed: list[int]) -> dict[str, Any]:
    """A model's result on len(passed) CodeContests problems, one greedy sample each."""
    problems = {
        f"cc/{i}": {"task_id": f"cc/{i}", "dataset": "codecontests", "difficulty": 1 + i % 2}
        for i in range(len(passed))
    }
    verdicts = [{"task_id": f"cc/{i}", "passed": bool(p)} for i, p in enumerate(passed)]
    return {"summary": summarise(problems, verdicts, ks=[1]), "generation": {}}


def test_seeded_models_are_pooled_reported_and_diagnosed(tmp_path) -> None:
    params = EvaluationParams(
        **{
            **RAW_PARAMS,
            "models": ["base_model", "baseline_model", "verifiable_model"],
            "ks": [1],
            "comparison": {
                "contrasts": [
                    ["verifiable_model", "baseline_model"],
                    ["baseline_model", "base_model"],
                ]
            },
        }
    )
    results = {
        "base_model": _result([0, 0, 0, 0, 0, 0]),
        "baseline_model": _result([1, 0, 0, 1, 0, 0]),
        "seed_2.baseline_model": _result([1, 1, 0, 0, 0, 0]),
        "verifiable_model": _result([1, 1, 1, 0, 0, 0]),
        "seed_2.verifiable_model": _result([1, 1, 0, 0, 0, 1]),
    }
    canonical = _result([1] * 6)
    history = pd.DataFrame(
        [{"step": s, "weights/std": 0.2} for s in range(1, 11)]
        + [{"step": 10, "val/value_auc_low": 0.61, "val/value_auc": 0.7}]
    )
    diagnostics = diagnose_training(verifiable=history, **{"seed_2.verifiable": pd.DataFrame()})
    document, table, contrasts, seeds, _ = compare_models(
        canonical, params, diagnostics=diagnostics, **results
    )
    # Per-model rows keep every seed, with method and seed columns and Wilson intervals.
    whole = table[table["difficulty"].isna()]
    assert set(whole["model"]) == {*results, "canonical"}
    row = whole[whole["model"] == "seed_2.verifiable_model"].iloc[0]
    assert (row["method"], row["seed"], row["pass_at_k"]) == ("verifiable_model", 2, 0.5)
    assert row["ci_low"] < 0.5 < row["ci_high"]
    # The spread over seeds, one row per model, dataset and k.
    spread = seeds.set_index("model")
    assert list(seeds.columns) == list(SEED_SPREAD_COLUMNS)
    assert spread.loc["verifiable_model", "n_seeds"] == 2
    assert spread.loc["verifiable_model", "per_seed"] == "0.5;0.5"
    assert spread.loc["baseline_model", "mean"] == pytest.approx(2 / 6)
    assert spread.loc["base_model", "n_seeds"] == 1 and pd.isna(spread.loc["base_model", "sd"])
    # Contrasts on the seed means: verifiable [1, 1, .5, 0, 0, .5] vs baseline [1, .5, 0, .5,
    # 0, 0]; n_seeds is the trained side's.
    by_name = contrasts.set_index("contrast")
    assert by_name.loc["verifiable_model-baseline_model", "diff"] == pytest.approx(1 / 6)
    assert by_name.loc["verifiable_model-baseline_model", "n_seeds"] == 2
    assert by_name.loc["baseline_model-base_model", "n_seeds"] == 2
    assert (by_name["n_problems"] == 6).all()
    assert by_name.loc["verifiable_model-baseline_model", "test"] == "sign_flip_permutation"
    # The verdict: the seeds, and the critic's and the weights' state beside verifiable.
    text = document["verdict"]["text"]
    assert document["n_seeds"] == 2 and document["verdict"]["n_seeds"] == 2
    assert "2 fine-tuning seeds per trained method" in text
    assert "verifiable_model 0.500 [" in text and "(seeds 0.500/0.500, sd 0.000)" in text
    assert "verifiable: critic better than chance: yes (val/value_auc_low 0.610 > 0.5" in text
    assert "TD weights non-uniform: yes" in text
    assert "seed_2.verifiable: critic better than chance: not logged" in text
    assert set(document["diagnostics"]) == {"verifiable", "seed_2.verifiable"}
    json.dumps(document)  # results.json
    # The report draws and lists it all.
    _, _, page = render_report(document, verifiable=history)
    assert "Spread over fine-tuning seeds" in page and "Training diagnostics" in page
    assert "seed_2.verifiable: critic better than chance: not logged" in page
    gap = {name: r for name, r in results.items() if name != "seed_2.baseline_model"}
    with pytest.raises(ValueError, match=r"baseline_model: seeds \[1, 3\] evaluated"):
        compare_models(canonical, params, **gap, **{"seed_3.baseline_model": results["base_model"]})
    with pytest.raises(ValueError, match="evaluation.models"):
        compare_models(canonical, params, **{"rho1_model": results["base_model"], **results})


def test_seeded_pipeline_evaluates_every_seed_and_base_once() -> None:
    pipeline = create_pipeline(models=["base_model", "verifiable_model", "model_a"], seeds=3)
    names = {n.name for n in pipeline.nodes}
    assert {
        "evaluation.verifiable_model.generate_completions",
        "evaluation.seed_2.verifiable_model.generate_completions",
        "evaluation.seed_3.verifiable_model.generate_completions",
        "evaluation.base_model.generate_completions",
        "evaluation.model_a.generate_completions",
    } <= names
    assert not any(
        n.startswith(("evaluation.seed_2.base_model", "evaluation.seed_2.model_a")) for n in names
    )
    diagnose = next(n for n in pipeline.nodes if n.name == "report.diagnose_training")
    assert set(diagnose.inputs) == {
        f"{prefix}{job}_training_history"
        for prefix in ("", "seed_2.", "seed_3.")
        for job in ("critic", "verifiable")
    }
    one = create_pipeline(models=["base_model", "verifiable_model"], seeds=1)
    assert not any(d.startswith("seed_") for d in one.datasets())
