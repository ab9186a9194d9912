"""Collectives on the training device, metrics on the device until a host-sync step.

A CUDA run is not available here, so the distributed tests run the real worker and loop on 2
gloo processes under ``tests.training.collective_check_worker`` (its docstring says how):
every tensor collective must receive a tensor on the training device that no ``.cpu()`` host
copy produced (what NCCL needs), and the host reads of device values are counted per
optimizer step; between host-sync steps (logged, validated, saved, last) there must be none.
The loop before issue 15 fails both: it all-reduced ``counts.cpu()`` each step, and read
``bool(isfinite(loss))`` per micro-batch and ``float(grad_norm)`` per step.
"""

from __future__ import annotations

import json
import math
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from weighted_mtp.losses.metric_values import MetricValues
from weighted_mtp.training import distributed, worker
from weighted_mtp.training.config import PARAMS_BY_METHOD, RuntimeParams
from weighted_mtp.training.data_plan import build_data_plan
from weighted_mtp.training.launcher import launch
from weighted_mtp.training.spec import JobSpec
from weighted_mtp.training.step_metrics import FiniteGuard as _FiniteGuard
from weighted_mtp.training.step_metrics import NonFiniteLossError

from .corpus import Corpus, build_corpus

ROOT = Path(__file__).resolve().parents[2]
CHECK_WORKER = "tests.training.collective_check_worker"


# --------------------------------------------------------------------------- process group
class _Captured(Exception):
    pass


def _capture_init(monkeypatch, device: torch.device) -> dict:
    seen: dict = {}

    def fake_init(**kwargs):
        seen.update(kwargs)

    monkeypatch.setattr(distributed, "resolve_device", lambda requested, local_rank: device)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", fake_init)
    return seen


def test_cuda_group_is_device_mapped_and_gets_the_timeout(monkeypatch):
    """NCCL alone has no CPU path: the CUDA group maps cpu to gloo and cuda to nccl, and every
    group waits ``collective_timeout_s``, not NCCL's ten-minute default."""
    seen = _capture_init(monkeypatch, torch.device("cuda", 0))
    world = distributed.init_distributed("cuda", timeout_s=5400.0)
    assert seen["backend"] == "cpu:gloo,cuda:nccl"
    assert seen["timeout"] == timedelta(seconds=5400)
    assert seen["device_id"] == torch.device("cuda", 0)
    assert world.device == torch.device("cuda", 0)

    seen = _capture_init(monkeypatch, torch.device("cpu"))
    distributed.init_distributed("cpu", timeout_s=30.0)
    assert seen["backend"] == "gloo" and seen["timeout"] == timedelta(seconds=30)
    with pytest.raises(ValueError, match="timeout"):
        distributed.init_distributed("cpu", timeout_s=0.0)


def test_worker_passes_runtime_collective_timeout(monkeypatch, tmp_path):
    spec = JobSpec(
        method="baseline",
        run_dir=str(tmp_path / "run"),
        init_model="unused",
        train_jsonl="unused",
        params={},
        runtime=RuntimeParams(collective_timeout_s=4321.0),
    )
    (tmp_path / "run").mkdir()
    path = spec.write()
    calls = []

    def fake_init(device, timeout_s=None):
        calls.append((device, timeout_s))
        raise _Captured

    monkeypatch.setattr(worker, "init_distributed", fake_init)
    with pytest.raises(_Captured):
        worker.main([str(path)])
    assert calls == [("cpu", 4321.0)]


# --------------------------------------------------------------------------- on the device
def test_metric_values_never_read_the_device():
    """Meta tensors have no data: any host read (``.cpu()``, ``float()``, ``.item()``)
    raises. Reporting and merging must work on them, leaving the values on the device."""
    meta = torch.device("meta")
    x = torch.randn(7, device=meta)
    mask = torch.ones(7, dtype=torch.bool, device=meta)
    metrics = MetricValues()
    for _ in range(2):  # the second round merges into the first
        part = MetricValues()
        part.add_sum("train/loss", x.sum())
        part.add_mean("acc", x.sum(), mask.sum())
        part.add_min("w/min", x.min())
        part.add_max("w/max", x.max())
        part.add_moments("td", x)
        part.add_pearson("corr", x, x * 2)
        metrics.merge(part)
    for name, (_, stats, _count) in metrics.items.items():
        assert stats.device == meta, name
    assert metrics.items["acc"][2].device == meta


def test_metric_values_reach_the_host_in_one_transfer(monkeypatch):
    metrics = MetricValues()
    x = torch.tensor([1.0, 2.0, 4.0])
    metrics.add_sum("loss", x.sum())
    metrics.add_mean("acc", x.sum(), torch.tensor(3))
    metrics.add_moments("td", x)
    metrics.add_mean("fixed", 1.0, 1.0)  # Python numbers: no transfer at all
    transfers = []
    original = torch.Tensor.tolist

    def counting(self):
        transfers.append(self.shape)
        return original(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    out = metrics.finalize()
    assert len(transfers) == 1
    assert out["loss"] == 7.0 and out["acc"] == pytest.approx(7 / 3) and out["fixed"] == 1.0
    assert out["td/mean"] == pytest.approx(7 / 3)


def test_extremes_and_means_over_nothing_are_left_out():
    """A loss reports min/max over an empty mask as +inf/-inf and a mean with count 0, with no
    host read to find out it is empty; merged with real values they vanish, alone they are
    left out like an empty mean."""
    empty = torch.zeros(3, dtype=torch.bool)
    w = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    metrics = MetricValues()
    for mask in (empty, torch.tensor([True, True, False])):
        metrics.add_min("w/min", torch.where(mask, w, torch.inf).amin())
        metrics.add_max("w/max", torch.where(mask, w, -torch.inf).amax())
        metrics.add_mean("frac", torch.nan_to_num(torch.tensor(math.nan)) * mask.sum(), mask.sum())
    out = metrics.finalize()
    assert out["w/min"] == 0.5 and out["w/max"] == 2.0 and out["frac"] == 0.0
    alone = MetricValues()
    alone.add_min("w/min", torch.where(empty, w, torch.inf).amin())
    alone.add_max("w/max", torch.where(empty, w, -torch.inf).amax())
    alone.add_mean("frac", torch.tensor(0.0), empty.sum())
    assert alone.finalize() == {}


def test_finite_guard_reads_nothing_until_checked():
    guard = _FiniteGuard("baseline")
    meta = torch.device("meta")
    for step in range(3):
        guard.record_loss(torch.randn((), device=meta))
        guard.record_loss(torch.randn((), device=meta))
        guard.end_step(step, MetricValues(), torch.randn((), device=meta))
    with pytest.raises(NotImplementedError):  # the first read of a meta tensor
        guard.check()


def _step(guard: _FiniteGuard, step: int, loss: float, norm: float = 1.0) -> None:
    metrics = MetricValues()
    metrics.add_sum("train/head_0_loss", 0.5)
    metrics.add_sum("train/head_1_loss", torch.tensor(loss))
    guard.record_loss(torch.tensor(0.5))
    guard.record_loss(torch.tensor(loss))
    guard.end_step(step, metrics, torch.tensor(norm))


def test_finite_guard_names_the_first_bad_step():
    guard = _FiniteGuard("baseline")
    _step(guard, 0, 1.0)
    guard.check()  # all finite
    _step(guard, 1, 1.0)
    _step(guard, 2, math.nan)
    _step(guard, 3, math.inf)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3: train/head_1_loss"):
        guard.check()
    _step(guard, 4, 1.0, norm=math.inf)
    with pytest.raises(NonFiniteLossError, match=r"gradient norm \(inf\) at step 5"):
        guard.check()


def test_nan_loss_stops_the_loop_at_the_next_sync_step_naming_its_step(
    corpus, tmp_path, monkeypatch, restore_excepthook
):
    """The real loop in this process (one rank): step 2's loss turns NaN; steps 1, 3 and 4 are
    host-sync steps (``log_every: 3``, ``save_every: 3``). The run raises at step 3 naming step
    2 and the part, before step 3 is logged or its checkpoint written."""
    from weighted_mtp.data.collator import PromptOutputCollator
    from weighted_mtp.losses import BaselineMethod
    from weighted_mtp.model_io import load_model
    from weighted_mtp.training.distributed import WorldInfo
    from weighted_mtp.training.loop import train
    from weighted_mtp.training.module import MTPTrainingModule

    params = PARAMS_BY_METHOD["baseline"](
        max_steps=4,
        batch_size=2,
        grad_accum_steps=1,
        lr=2e-3,
        warmup_steps=1,
        log_every=3,
        save_every=3,
        eval_every=100,
        max_seq_len=256,
        chunk_size=100,
    )
    spec = JobSpec(
        method="baseline",
        run_dir=str(tmp_path / "run"),
        params=params.model_dump(),
        runtime=RuntimeParams(omp_threads=1),
        init_model=str(corpus.model_dir),
        train_jsonl=str(corpus.train_jsonl),
    )
    spec.run_path.mkdir(parents=True)
    build_data_plan("baseline", params, corpus.train_metadata, None, world_size=1).save(
        spec.plan_path
    )
    calls = []
    original = BaselineMethod.loss

    def poisoned(self, module, batch, ctx):
        loss, metrics = original(self, module, batch, ctx)
        calls.append(1)
        if len(calls) == 2:
            metrics.add_sum("train/head_1_loss", torch.tensor(math.nan))
            loss = loss * math.nan
        return loss, metrics

    monkeypatch.setattr(BaselineMethod, "loss", poisoned)
    module = MTPTrainingModule(load_model(corpus.model_dir), None, BaselineMethod())
    world = WorldInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    collator = PromptOutputCollator(corpus.tokenizer, 256)
    # DDP needs a process group: one gloo rank.
    distributed.dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        with pytest.raises(
            NonFiniteLossError, match=r"non-finite loss at step 2: train/head_1_loss"
        ):
            train(spec, world, module, collator)
    finally:
        distributed.shutdown()
    assert len(calls) == 3  # it ran on to step 3, the next sync step, and stopped there
    logged = [json.loads(line)["step"] for line in spec.history_path.read_text().splitlines()]
    assert logged == [1]
    assert not list(spec.checkpoint_path.rglob("*step*3*"))


# --------------------------------------------------------------------------- torchrun


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}


def _spec(corpus: Corpus, run_dir: Path, method: str, strategy: str, **overrides) -> JobSpec:
    settings = dict(
        max_steps=6,
        batch_size=2,
        grad_accum_steps=2,
        lr=2e-3,
        warmup_steps=1,
        log_every=3,
        eval_every=6,
        val_samples=4,
        max_seq_len=256,
        chunk_size=100,
    )
    settings.update(overrides)
    params = PARAMS_BY_METHOD[method](**settings)
    spec = JobSpec(
        method=method,
        run_dir=str(run_dir),
        params=params.model_dump(),
        runtime=RuntimeParams(nproc_per_node=2, strategy=strategy, omp_threads=1),
        init_model=str(corpus.model_dir),
        reference_model=str(corpus.reference_dir),
        train_jsonl=str(corpus.train_jsonl),
        valid_jsonl=str(corpus.valid_jsonl),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    build_data_plan(
        method, params, corpus.train_metadata, corpus.valid_metadata, world_size=2
    ).save(spec.plan_path)
    return spec


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "method"), [("ddp", "baseline"), ("fsdp", "verifiable")])
def test_collectives_get_device_tensors_and_steps_do_not_sync(corpus, tmp_path, strategy, method):
    """6 steps of 2 micro-batches on 2 ranks, logging every 3rd step: every tensor collective
    (the loop's and FSDP2's) gets a training-device tensor that no ``.cpu()`` produced, and
    the windows of steps that neither log, validate nor save read nothing from the device
    (verifiable: its TD-weight metrics included)."""
    spec = _spec(corpus, tmp_path / strategy, method, strategy)
    launch(spec, worker_module=CHECK_WORKER, extra_env=_env(), show_progress=False)
    sync_steps = {0, 2, 5}  # 0-based: the first step, every 3rd, the last
    for rank in (0, 1):
        report = json.loads((spec.run_path / f"collective_report_rank{rank}.json").read_text())
        assert report["windows"] == 6 and not report["violations"]
        assert report["collectives"].get("all_reduce", 0) >= 6  # the step denominators
        if strategy == "fsdp":
            sharded = {"all_gather_single", "all_gather_into_tensor"} & set(report["collectives"])
            assert sharded, report["collectives"]  # FSDP2's own collectives were checked
        reads = {int(k): v for k, v in report["reads"].items()}
        quiet = {w: reads.get(w, {}) for w in range(6) if w not in sync_steps}
        assert all(not r for r in quiet.values()), quiet
    history = [json.loads(line) for line in spec.history_path.read_text().splitlines()]
    logged = [h for h in history if "train/loss" in h]
    assert [h["step"] for h in logged] == [1, 3, 6]
    assert all(math.isfinite(h["train/grad_norm"]) for h in logged)
    assert all(h["train/tokens_per_s"] > 0 for h in logged)
    if method == "verifiable":
        assert all(0.1 - 1e-9 <= h["weights/min"] <= h["weights/max"] <= 5 + 1e-9 for h in logged)
        assert all(0.0 <= h["weights/clipped_fraction"] <= 1.0 for h in logged)
