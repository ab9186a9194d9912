"""A copy of the project and a tiny version of the whole experiment, for end-to-end tests.

One place for the settings that shrink the default `kedro run` (every pipeline, a few steps per
training job, a few problems per dataset) so that the tests that need its outputs (the run
itself, the notebook, kedro viz, MLflow) agree on what "tiny" means.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).parent / "kedro")

#: Parameter groups of the training jobs of the default run (TrainingParams each).
TRAINING_GROUPS = (
    "micro_models.pretraining",
    "baseline",
    "critic",
    "verifiable",
    "rho1",
    "rho1.reference_tuning",
)


def tiny_settings(**overrides: Any) -> dict[str, Any]:
    """Dotted parameter -> value: the whole experiment in a minute or two on 2 cores, large
    enough that every node has real work (several solutions per task, both classes)."""
    settings: dict[str, Any] = {
        "data_engineering.synthetic.n_train_tasks": 40,
        "data_engineering.synthetic.n_valid_tasks": 8,
        "data_engineering.synthetic.n_test_tasks": 8,
        "data_engineering.tokenizer.vocab_size": 512,
        "micro_models.mtp.dim": 64,
        "micro_models.mtp.n_heads": 4,
        "micro_models.reference.dim": 32,
        "micro_models.reference.n_heads": 2,
        "evaluation.datasets.humaneval.max_problems": 2,
        "evaluation.datasets.mbpp.max_problems": 2,
        "evaluation.datasets.codecontests.max_problems": 4,
        "evaluation.generation.n_samples": 2,
        "evaluation.generation.max_new_tokens": 24,
    }
    for group in TRAINING_GROUPS:
        settings.update(
            {
                f"{group}.max_steps": 3,
                f"{group}.batch_size": 2,
                f"{group}.max_seq_len": 256,
                f"{group}.eval_every": 3,
                f"{group}.val_samples": 4,
                f"{group}.warmup_steps": 1,
                f"{group}.save_every": 3,
            }
        )
    settings.update(overrides)
    return settings


def params_arg(settings: dict[str, Any]) -> str:
    """``settings`` as the value of ``kedro run --params``."""
    return ",".join(f"{key}={value}" for key, value in settings.items())


def copy_project(root: Path, *, notebooks: bool = False) -> Path:
    """A runnable copy of the project under ``root``: its pyproject, conf (without local),
    sources and the raw MBPP file; everything else is produced by the runs."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT / name, root / name)
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    # Kedro insists on the package living under the project's own source_dir.
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    if notebooks:
        shutil.copytree(PROJECT / "notebooks", root / "notebooks")
    raw_mbpp = root / "data" / "01_raw" / "mbpp"
    raw_mbpp.mkdir(parents=True)
    shutil.copy(PROJECT / "data" / "01_raw" / "mbpp" / "mbpp.jsonl", raw_mbpp / "mbpp.jsonl")
    return root


def kedro_env(tracking_uri: str) -> dict[str, str]:
    """The environment of a `kedro` subprocess: offline, one thread, its own MLflow store."""
    return {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "OMP_NUM_THREADS": "1",
    }


def run_kedro(
    project: Path, *args: str, tracking_uri: str, timeout: float = 900
) -> subprocess.CompletedProcess:
    """`kedro run *args` in ``project``; fails the test with the output's tail on error."""
    proc = subprocess.run(
        [KEDRO, "run", *args],
        cwd=project,
        env=kedro_env(tracking_uri),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"kedro run {args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc
