"""Training through the real launcher and torchrun workers (gloo, 2 CPU processes).

The same global batches on 1 process (accumulation 2), 2 DDP processes and 2 FSDP2 processes
must give the same loss trajectory and the same final weights; every method's loss falls;
the written model directory reloads to the model that was validated; errors in a worker reach
the caller with the worker's message; metrics land once, in the parent's MLflow run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from weighted_mtp.alignment import head_valid_counts, shift_labels
from weighted_mtp.data.collator import PromptOutputCollator
from weighted_mtp.data.offset_reader import read_lines_at
from weighted_mtp.losses import BaselineMethod, LossContext
from weighted_mtp.model_io import load_model
from weighted_mtp.training.config import PARAMS_BY_METHOD, RuntimeParams
from weighted_mtp.training.data_plan import DataPlan, build_data_plan
from weighted_mtp.training.launcher import TrainingJobError, launch
from weighted_mtp.training.module import MTPTrainingModule
from weighted_mtp.training.spec import JobSpec

from .corpus import Corpus, build_corpus

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def _run(
    corpus: Corpus,
    run_dir: Path,
    method: str = "baseline",
    *,
    nproc: int = 1,
    strategy: str = "ddp",
    init_model: Path | None = None,
    mlflow: tuple[str, str] | None = None,
    **overrides,
) -> JobSpec:
    settings = dict(
        max_steps=6,
        batch_size=2,
        grad_accum_steps=2 if nproc == 1 else 1,
        lr=2e-3,
        warmup_steps=1,
        eval_every=3,
        val_samples=8,
        max_seq_len=256,
        chunk_size=100,
    )
    settings.update(overrides)
    params = PARAMS_BY_METHOD[method](**settings)
    spec = JobSpec(
        method=method,
        run_dir=str(run_dir),
        params=params.model_dump(),
        runtime=RuntimeParams(nproc_per_node=nproc, strategy=strategy, omp_threads=1),
        init_model=str(init_model or corpus.model_dir),
        reference_model=str(corpus.reference_dir),
        train_jsonl=str(corpus.train_jsonl),
        valid_jsonl=str(corpus.valid_jsonl),
        mlflow_tracking_uri=mlflow[0] if mlflow else None,
        mlflow_run_id=mlflow[1] if mlflow else None,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = build_data_plan(
        method, params, corpus.train_metadata, corpus.valid_metadata, world_size=nproc
    )
    plan.save(spec.plan_path)
    launch(spec, show_progress=False)
    return spec


def _history(spec: JobSpec) -> list[dict]:
    return [json.loads(line) for line in spec.history_path.read_text().splitlines()]


def _series(spec: JobSpec, key: str) -> list[float]:
    return [h[key] for h in _history(spec) if key in h]


def _weights(spec: JobSpec) -> dict[str, torch.Tensor]:
    model = load_model(spec.final_model_dir)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_ddp_and_fsdp_match_one_process(corpus, tmp_path):
    """Same global batch (2 sequences x 2): 1 process with accumulation 2, 2 DDP processes,
    2 FSDP2 processes. fp32 on CPU: trajectories agree to 1e-5 relative, weights to 2e-5."""
    one = _run(corpus, tmp_path / "one", nproc=1)
    ddp = _run(corpus, tmp_path / "ddp", nproc=2, strategy="ddp")
    fsdp = _run(corpus, tmp_path / "fsdp", nproc=2, strategy="fsdp")
    reference = _series(one, "train/loss")
    assert len(reference) == 6
    for other in (ddp, fsdp):
        np.testing.assert_allclose(_series(other, "train/loss"), reference, rtol=1e-5)
        np.testing.assert_allclose(_series(other, "val/loss"), _series(one, "val/loss"), rtol=1e-5)
    base = _weights(one)
    for other in (ddp, fsdp):
        for name, tensor in _weights(other).items():
            torch.testing.assert_close(tensor, base[name], rtol=1e-4, atol=2e-5, msg=name)
    # Training moved the weights (the comparison above is not between untouched copies).
    start = load_model(corpus.model_dir).state_dict()
    assert not torch.equal(start["output.weight"], base["output.weight"])


def test_saved_model_reloads_to_the_validated_model(corpus, tmp_path):
    """The final validation loss the worker logged equals the validation loss of the model
    directory it wrote, recomputed here from the plan's validation rows."""
    spec = _run(corpus, tmp_path / "run", nproc=2, strategy="fsdp")
    logged = _series(spec, "val/loss")[-1]
    plan = DataPlan.load(spec.plan_path)
    records = read_lines_at(
        spec.valid_jsonl, plan.valid_offsets, plan.valid_lengths, rows=plan.valid_rows
    )
    model = load_model(spec.final_model_dir)
    module = MTPTrainingModule(model, None, BaselineMethod())
    batch = PromptOutputCollator(corpus.tokenizer, 256)(records)
    targets = shift_labels(batch["labels"])
    ctx = LossContext(denominators=head_valid_counts(targets, 4).double())
    with torch.no_grad():
        metrics, _ = module(batch["input_ids"], targets, ctx=ctx, mode="validate")
    assert metrics.finalize()["val/loss"] == pytest.approx(logged, rel=1e-5)
    meta = json.loads((spec.final_model_dir / "metadata.json").read_text())
    assert meta["method"] == "baseline" and meta["steps"] == 6 and meta["tokens_seen"] > 0


@pytest.mark.parametrize("method", ["baseline", "critic", "rho1", "reference"])
def test_each_method_loss_falls(corpus, tmp_path, method):
    init = corpus.reference_dir if method == "reference" else None
    lr = 1e-2 if method == "critic" else 3e-3
    spec = _run(corpus, tmp_path / method, method, init_model=init, max_steps=10, lr=lr)
    losses = _series(spec, "train/loss")
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 1e-3, losses
    assert (
        spec.final_model_dir / ("config.json" if method == "reference" else "params.json")
    ).exists()


def test_critic_to_verifiable_hand_off(corpus, tmp_path):
    critic = _run(corpus, tmp_path / "critic", "critic", lr=1e-2)
    critic_model, critic_head = load_model(critic.final_model_dir, with_value_head=True)
    start = load_model(corpus.model_dir)
    # The critic trained the value head only.
    for name, tensor in critic_model.state_dict().items():
        assert torch.equal(tensor, start.state_dict()[name]), name
    verifiable = _run(
        corpus,
        tmp_path / "verifiable",
        "verifiable",
        init_model=critic.final_model_dir,
        nproc=2,
        strategy="fsdp",
        max_steps=8,
    )
    history = _history(verifiable)
    train = [h for h in history if "train/loss" in h]
    assert np.mean([h["train/mtp_loss"] for h in train[-3:]]) < np.mean(
        [h["train/mtp_loss"] for h in train[:3]]
    )
    for key in (
        "td/mean",
        "td/std",
        "weights/mean",
        "weights/std",
        "weights/min",
        "weights/max",
        "weights/entropy",
        "weights/clipped_fraction",
    ):
        assert key in train[-1], key
    assert 0.1 - 1e-9 <= train[-1]["weights/min"] <= train[-1]["weights/max"] <= 5.0 + 1e-9
    _, head = load_model(verifiable.final_model_dir, with_value_head=True)
    assert not torch.equal(head.weight, critic_head.weight)  # the critic kept learning


def test_worker_error_reaches_the_caller(corpus, tmp_path):
    """A model directory whose tokenizer does not fit the model's vocabulary: the worker's
    own error message comes back in the launcher's exception."""
    import shutil

    from tests.model_fixtures import train_sentencepiece

    broken = tmp_path / "broken-model"
    shutil.copytree(corpus.model_dir, broken)
    (broken / "tokenizer.model").write_bytes(
        train_sentencepiece([f"line {i} of text" for i in range(200)], 300)
    )
    (broken / "metadata.json").unlink()  # no checksums to trip over first
    with pytest.raises(TrainingJobError, match="tokenizer.model has 300 tokens"):
        _run(corpus, tmp_path / "run", init_model=broken, nproc=2)


def test_metrics_land_once_in_the_parent_run(corpus, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("training-test")
    run_id = client.create_run(experiment).info.run_id
    _run(corpus, tmp_path / "run", nproc=2, mlflow=(uri, run_id))
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]
    assert [m.step for m in client.get_metric_history(run_id, "val/loss")] == [3, 6]
    assert len(client.search_runs([experiment])) == 1  # no extra runs


def test_plan_splits_ranks_without_duplicates_or_gaps(corpus):
    """Each epoch's rows are seen once across ranks and micro-batches, and a step's rows do
    not depend on the world size."""
    params = PARAMS_BY_METHOD["baseline"](
        max_steps=12, batch_size=2, grad_accum_steps=1, max_seq_len=256, n_samples=16
    )
    plan2 = build_data_plan("baseline", params, corpus.train_metadata, None, world_size=2)
    seen = [
        plan2.train_rows[plan2.micro_batch_positions(s, 0, r, batch_size=2, grad_accum=1, world=2)]
        for s in range(12)
        for r in range(2)
    ]
    flat = np.concatenate(seen)
    assert len(flat) == 48
    for epoch in range(3):
        rows = flat[epoch * 16 : (epoch + 1) * 16]
        assert len(set(rows.tolist())) == 16
    params1 = params.model_copy(update={"grad_accum_steps": 2})
    plan1 = build_data_plan("baseline", params1, corpus.train_metadata, None, world_size=1)
    for s in range(12):
        one = plan1.train_rows[plan1.step_rows(s, 4)]
        two = plan2.train_rows[plan2.step_rows(s, 4)]
        assert sorted(one.tolist()) == sorted(two.tolist())


def test_pretraining_plan_reads_every_row_and_baseline_only_correct_ones(corpus):
    """The micro base model's pretraining sees the rows as they come, correct or not; with a
    correct_fraction it draws that share; the baseline sees correct solutions only."""
    meta = corpus.train_metadata
    correct = set(meta.loc[meta["is_correct"], "row"].tolist())
    n_rows = len(meta)
    common = {"max_steps": 2, "warmup_steps": 0, "batch_size": n_rows, "max_seq_len": 4096}
    pretrain = build_data_plan(
        "pretrain", PARAMS_BY_METHOD["pretrain"](**common), meta, None, world_size=1
    )
    epoch = pretrain.train_rows[:n_rows].tolist()
    assert sorted(epoch) == sorted(meta["row"].tolist())  # every row once per epoch
    assert epoch != sorted(epoch)  # in a seeded random order
    balanced = build_data_plan(
        "pretrain",
        PARAMS_BY_METHOD["pretrain"](**common, correct_fraction=0.5, n_samples=8),
        meta,
        None,
        world_size=1,
    )
    first = balanced.train_rows[:8].tolist()
    assert sum(row in correct for row in first) == 4
    baseline = build_data_plan(
        "baseline", PARAMS_BY_METHOD["baseline"](**common), meta, None, world_size=1
    )
    assert set(baseline.train_rows.tolist()) == correct


def test_two_nodes_match_one_node(corpus, tmp_path):
    """Two torchrun agents on 127.0.0.1 (nnodes=2, one process each, c10d rendezvous) train
    to the same losses as one node with two processes."""
    import threading

    from tests.conftest import free_port

    one_node = _run(corpus, tmp_path / "single", nproc=2, strategy="fsdp")
    endpoint = f"127.0.0.1:{free_port()}"
    specs, errors = [], []
    params = PARAMS_BY_METHOD["baseline"](**json.loads(one_node.spec_path.read_text())["params"])
    for node in (0, 1):
        # Every node runs the same spec apart from its node_rank; the run name is shared.
        run_dir = tmp_path / f"node{node}" / "run"
        spec = one_node.model_copy(
            update={
                "run_dir": str(run_dir),
                "runtime": RuntimeParams(
                    nproc_per_node=1,
                    nnodes=2,
                    node_rank=node,
                    rdzv_endpoint=endpoint,
                    strategy="fsdp",
                    omp_threads=1,
                ),
                "checkpoint_dir": str(tmp_path / "shared-checkpoints"),
            }
        )
        run_dir.mkdir(parents=True)
        build_data_plan(
            "baseline", params, corpus.train_metadata, corpus.valid_metadata, world_size=2
        ).save(spec.plan_path)
        specs.append(spec)

    def run(spec: JobSpec) -> None:
        try:
            launch(spec, show_progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    # node_rank 0 holds global rank 0: it alone logs and writes the model.
    assert specs[0].history_path.exists() and not specs[1].history_path.exists()
    assert (specs[0].final_model_dir / "model.safetensors").exists()
    np.testing.assert_allclose(
        _series(specs[0], "train/loss"), _series(one_node, "train/loss"), rtol=1e-5
    )
