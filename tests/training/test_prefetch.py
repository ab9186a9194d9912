"""The step's micro-batches prepared in background threads (training/batches.py): the same
batches as the synchronous reader, failures named by step, reads overlapping but bounded, no
thread left after the loop whichever way the loop ends, resume from any step."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from weighted_mtp.data.collator import PromptOutputCollator
from weighted_mtp.data.offset_reader import LineBoundaryError
from weighted_mtp.losses.methods import BaselineMethod
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.micro import build_micro_mtp
from weighted_mtp.training.batches import (
    BatchReader,
    BatchReadError,
    StepPrefetcher,
    start_prefetch,
)
from weighted_mtp.training.config import PARAMS_BY_METHOD, RuntimeParams
from weighted_mtp.training.data_plan import DataPlan, build_data_plan
from weighted_mtp.training.distributed import WorldInfo
from weighted_mtp.training.loop import train
from weighted_mtp.training.module import MTPTrainingModule
from weighted_mtp.training.spec import JobSpec

from .corpus import Corpus, build_corpus

CPU = torch.device("cpu")
SHAPE = {"batch_size": 2, "grad_accum": 2, "world": 2}  # 8 rows a step, two ranks


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def _plan(corpus: Corpus, rows: np.ndarray) -> DataPlan:
    meta = corpus.train_metadata.set_index("row")
    valid = corpus.valid_metadata
    return DataPlan(
        train_rows=rows,
        train_offsets=meta.loc[rows, "offset"].to_numpy(np.int64, copy=True),
        train_lengths=meta.loc[rows, "length"].to_numpy(np.int64),
        valid_rows=valid["row"].to_numpy(np.int64),
        valid_offsets=valid["offset"].to_numpy(np.int64),
        valid_lengths=valid["length"].to_numpy(np.int64),
        epoch_size=len(rows),
    )


MAX_LEN = 160  # cuts the corpus roughly in half: outputs of up to 158 tokens fit


def _short_long_plan(corpus: Corpus) -> tuple[DataPlan, int]:
    """Rows alternating short (fit MAX_LEN) and long (skipped by the collator), so that every
    micro-batch of 2 keeps one row and skips one; returns the plan and the rows it skips."""
    meta = corpus.train_metadata
    fits = (meta["n_output_tokens"] + 1) <= MAX_LEN - 1
    short = meta.loc[fits, "row"].to_numpy(np.int64)
    long = meta.loc[~fits, "row"].to_numpy(np.int64)
    n = min(len(short), len(long), 16)
    assert n >= 8, "the synthetic corpus no longer has both kinds of rows"
    rows = np.stack([short[:n], long[:n]], axis=1).reshape(-1)
    return _plan(corpus, rows), n


def _same(a, b) -> None:
    assert a.step == b.step and a.skipped == b.skipped and len(a.micro) == len(b.micro)
    for x, y in zip(a.micro, b.micro, strict=True):
        assert torch.equal(x.input_ids, y.input_ids)
        assert torch.equal(x.targets, y.targets)
        assert (x.is_correct is None) == (y.is_correct is None)
        if x.is_correct is not None:
            assert torch.equal(x.is_correct, y.is_correct)
        assert x.extras.keys() == y.extras.keys()
        assert all(torch.equal(x.extras[k], y.extras[k]) for k in x.extras)


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("batch-prefetch")]


@pytest.mark.parametrize("rank", [0, 1])
def test_prefetched_batches_equal_the_synchronous_reader(corpus, rank):
    plan, _ = _short_long_plan(corpus)
    n_steps = len(plan.train_rows) // 8
    reader = BatchReader(PromptOutputCollator(corpus.tokenizer, MAX_LEN), CPU)
    path = str(corpus.train_jsonl)
    expected = [
        reader.read_step(path, plan, s, rank=rank, world=2, batch_size=2, grad_accum=2)
        for s in range(n_steps)
    ]
    with start_prefetch(reader, path, plan, range(n_steps), rank=rank, **SHAPE) as prefetch:
        got = [prefetch.get(s) for s in range(n_steps)]
    for a, b in zip(expected, got, strict=True):
        _same(a, b)
    # Each micro-batch skipped exactly its one long row, in the workers as in the reader.
    assert sum(g.skipped for g in got) == n_steps * 2
    assert all(len(b.input_ids) == 1 for g in got for b in g.micro)
    assert reader.collator.stats.records == n_steps * 4  # the workers used their own collators


def test_resume_starts_at_the_given_step(corpus):
    plan, _ = _short_long_plan(corpus)
    reader = BatchReader(PromptOutputCollator(corpus.tokenizer, MAX_LEN), CPU)
    path = str(corpus.train_jsonl)
    with (
        start_prefetch(reader, path, plan, range(2, 4), rank=0, **SHAPE) as prefetch,
        pytest.raises(RuntimeError, match="step 0 asked, the next prepared step is 2"),
    ):
        prefetch.get(0)
    with start_prefetch(reader, path, plan, range(2, 4), rank=0, **SHAPE) as prefetch:
        for s in (2, 3):
            _same(
                prefetch.get(s),
                reader.read_step(path, plan, s, rank=0, world=2, batch_size=2, grad_accum=2),
            )
        with pytest.raises(RuntimeError, match="next prepared step is None"):
            prefetch.get(4)


def test_a_bad_row_fails_at_its_step_naming_step_and_file(corpus):
    plan, _ = _short_long_plan(corpus)
    plan.train_offsets[8 * 2 + 2] += 1  # step 3, rank 1's first micro-batch: not a line start
    reader = BatchReader(PromptOutputCollator(corpus.tokenizer, MAX_LEN), CPU)
    path = str(corpus.train_jsonl)
    with start_prefetch(reader, path, plan, range(4), rank=1, **SHAPE) as prefetch:
        prefetch.get(0)
        prefetch.get(1)  # the steps before the bad one arrive as usual
        with pytest.raises(BatchReadError, match=r"step 3, rows of .*train\.jsonl") as info:
            prefetch.get(2)
        assert isinstance(info.value.__cause__, LineBoundaryError)
        assert "is not the start of a line" in str(info.value)
        for thread in prefetch.threads:  # no step after the failure is started
            thread.join(5)
            assert not thread.is_alive()


def test_reads_overlap_up_to_depth_and_come_back_in_step_order():
    together = threading.Barrier(3, timeout=20)  # broken unless three reads run at once

    def produce(step: int) -> int:
        if step < 3:
            together.wait()
        time.sleep(0.01 * (3 - step % 3))  # later steps finish first
        return step

    with StepPrefetcher(produce, range(9), depth=3) as prefetch:
        assert [prefetch.get(s) for s in range(9)] == list(range(9))


def test_reading_ahead_is_bounded_and_close_stops_every_worker():
    produced: list[int] = []

    def fast(step: int) -> int:
        produced.append(step)
        return step

    prefetch = StepPrefetcher(fast, range(1000), depth=2)
    assert prefetch.get(0) == 0
    time.sleep(0.3)
    assert sorted(produced) == [0, 1, 2]  # step 0 taken, at most 2 ahead of it
    prefetch.close()
    assert not any(t.is_alive() for t in prefetch.threads)

    def slow(step: int) -> int:
        time.sleep(0.5)
        return step

    prefetch = StepPrefetcher(slow, range(10), depth=2)
    prefetch.close()  # each worker finishes the step in hand, then stops
    assert not any(t.is_alive() for t in prefetch.threads)
    with pytest.raises(RuntimeError, match="threads ended before step 0"):
        prefetch.get(0)


# --------------------------------------------------------------------------- the loop
@pytest.fixture
def process_group(tmp_path, restore_excepthook):
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


class _InterruptedMethod(BaselineMethod):
    """Ctrl-C in the middle of the second step."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def prepare(self, batch) -> None:
        self.calls += 1
        if self.calls == 3:  # 2 micro-batches a step
            raise KeyboardInterrupt


def _train(corpus: Corpus, run_dir: Path, method: BaselineMethod, corrupt_step: int | None):
    params = PARAMS_BY_METHOD["baseline"](
        max_steps=4,
        warmup_steps=1,
        batch_size=2,
        grad_accum_steps=2,
        eval_every=2,
        val_samples=4,
        max_seq_len=256,
        chunk_size=64,
        resume="never",
    )
    spec = JobSpec(
        method="baseline",
        run_dir=str(run_dir),
        params=params.model_dump(),
        runtime=RuntimeParams(nproc_per_node=1, strategy="ddp", omp_threads=1),
        init_model=str(corpus.model_dir),
        train_jsonl=str(corpus.train_jsonl),
        valid_jsonl=str(corpus.valid_jsonl),
    )
    run_dir.mkdir(parents=True)
    plan = build_data_plan(
        "baseline", params, corpus.train_metadata, corpus.valid_metadata, world_size=1
    )
    if corrupt_step is not None:
        plan.train_offsets = plan.train_offsets.copy()
        plan.train_offsets[corrupt_step * 4 + 1] += 1
    plan.save(spec.plan_path)
    args = ModelDirectory(str(corpus.model_dir)).read_args()
    module = MTPTrainingModule(build_micro_mtp(args, seed=0), None, method)
    world = WorldInfo(rank=0, local_rank=0, world_size=1, device=CPU)
    collator = PromptOutputCollator(corpus.tokenizer, params.max_seq_len)
    return train(spec, world, module, collator)


def test_the_loop_leaves_no_thread_behind(corpus, tmp_path, process_group):
    _, summary = _train(corpus, tmp_path / "ok", BaselineMethod(), None)
    assert summary.steps == 4 and "val/loss" in summary.final_metrics
    assert _prefetch_threads() == []

    with pytest.raises(BatchReadError, match=r"step 3, rows of .*train\.jsonl"):
        _train(corpus, tmp_path / "bad_row", BaselineMethod(), corrupt_step=2)
    assert _prefetch_threads() == []

    with pytest.raises(KeyboardInterrupt):
        _train(corpus, tmp_path / "interrupted", _InterruptedMethod(), None)
    assert _prefetch_threads() == []
