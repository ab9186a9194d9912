"""``benchmarks/gpu_training.py``: its parts, and the whole script on CPU at a tiny shape.

The script is meant for a bare GPU image without Kedro or MLflow, so the end-to-end run puts
packages named ``kedro``, ``mlflow``, ... that refuse to import first on the path of the
script and of its torchrun workers: a stray import of either fails the test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.models import ModelArgs, MTPTransformer

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_training.py"
ABSENT_ON_GPU_IMAGE = ("kedro", "kedro_datasets", "kedro_mlflow", "mlflow", "s3fs", "boto3")


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_training_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_script()


def _refusing_packages(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed on the GPU image')\n"
        )
    return root


def _run_script(tmp_path: Path, refused: tuple[str, ...], *args: str):
    path = _refusing_packages(tmp_path / "refused", refused)
    env = dict(os.environ, PYTHONPATH=f"{path}{os.pathsep}{ROOT / 'src'}", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_padded_tokenizer_has_the_model_vocabulary_and_encodes_alike():
    texts = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(300)]
    trained = train_tokenizer(texts, vocab_size=400)
    padded = Tokenizer(bench.pad_vocabulary(trained.model_proto, 1000))
    assert padded.vocab_size == 1000
    assert (padded.bos_id, padded.eos_id) == (trained.bos_id, trained.eos_id)
    for text in [*texts[:50], "<unused_900> not a piece", "\u00e9\u4e2d bytes"]:
        assert padded.encode(text) == trained.encode(text)
        assert padded.decode(padded.encode(text)) == text
    with pytest.raises(ValueError, match="more than"):
        bench.pad_vocabulary(trained.model_proto, 300)


def test_flops_per_token_counts_the_real_model_weights():
    """6 N + 12 L d T with N the matmul weights one token passes through (every block once,
    the unembedding once per head), counted here from the model's own parameters."""
    shape = bench.TINY
    args = ModelArgs(
        dim=shape.dim,
        n_layers=shape.n_layers,
        n_heads=shape.n_heads,
        vocab_size=shape.vocab,
        multiple_of=shape.multiple_of,
        n_future_tokens=shape.n_future,
    )
    model = MTPTransformer(args)
    block_weights = sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.startswith(("layers.", "extra_heads.")) and "norm" not in name
    )
    n = block_weights + shape.n_future * model.output.weight.numel()
    t = shape.seq_len
    expected = 6 * n + 12 * shape.n_layers * shape.dim * t
    assert bench.flops_per_token("baseline", shape, args.ffn_hidden_dim, 0) == expected
    assert bench.flops_per_token("verifiable", shape, args.ffn_hidden_dim, 0) == expected
    trunk_and_head0 = shape.n_layers - shape.n_future + 1
    critic = trunk_and_head0 * (2 * block_weights / shape.n_layers + 4 * shape.dim * t)
    assert bench.flops_per_token("critic", shape, args.ffn_hidden_dim, 0) == critic
    rho1 = bench.flops_per_token("rho1", shape, args.ffn_hidden_dim, 48)
    assert rho1 > expected


def test_throughput_skips_the_first_step():
    history = [
        {"step": 1, "train/tokens_seen": 100.0, "train/tokens_per_s": 1.0},
        {"step": 2, "train/tokens_seen": 200.0, "train/tokens_per_s": 100.0},  # 1 s
        {"step": 2, "val/loss": 3.0},
        {"step": 3, "train/tokens_seen": 300.0, "train/tokens_per_s": 50.0},  # 2 s
    ]
    tokens_per_s, counted, per_step = bench.timed_throughput(history)
    assert tokens_per_s == pytest.approx(200 / 3)
    assert (counted, per_step) == (2, 100)


def test_missing_packages_are_named_with_the_carry_recipe(tmp_path):
    result = _run_script(tmp_path, ("pydantic",), "--device", "cpu", "--tiny")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "pydantic" in result.stdout
    assert "pip download --no-deps" in result.stdout
    assert "PYTHONPATH=/tmp/site:src" in result.stdout


@pytest.mark.slow
@pytest.mark.distributed
def test_every_method_runs_on_cpu_without_kedro_or_mlflow(tmp_path):
    out = tmp_path / "out"
    result = _run_script(
        tmp_path,
        ABSENT_ON_GPU_IMAGE,
        *("--device", "cpu", "--tiny", "--steps", "2", "--ac", "blocks", "--out", str(out)),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("| method |") :].splitlines()
    rows = [line for line in table if line.startswith("| ") and "method" not in line]
    assert [r.split("|")[1].strip() for r in rows] == list(bench.METHODS)
    for line in rows:
        assert "n/a on CPU" in line and "failed" not in line
    summary = json.loads((out / "results.json").read_text())
    shape = bench.TINY
    for row in summary["rows"]:
        assert row["ac"] == "blocks" and row["timed_steps"] == 1
        # Every sequence fills the sequence length: the attention FLOPs assume it.
        assert row["tokens_per_step"] == shape.batch_size * shape.grad_accum * shape.seq_len
        assert row["tokens_per_s"] > 0 and row["peak_memory_gib"] is None
    assert not (out / "work").exists()  # scratch removed after a run without failures
