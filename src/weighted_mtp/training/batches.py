"""The micro-batches of each step: read by byte offset, tokenised and collated ahead of time.

Per optimizer step the plan fixes every row (``DataPlan.micro_batch_positions``); this module
turns them into :class:`~weighted_mtp.losses.methods.Batch` objects. :class:`BatchReader` does
it synchronously: one ranged read of the step's rows (``read_lines_at``: on S3 one HEAD and a few
concurrent range GETs, each tens of milliseconds), then tokenisation and collation to CPU
tensors. :class:`StepPrefetcher` runs that in background threads, a bounded number of steps
(``PREFETCH_STEPS``) ahead of the training thread, so that the reads and the tokenisation
overlap the forward and backward of the current step instead of preceding it. The batches and
their order are the same either way (the plan fixes every row; the workers only run the same
function early, and results are handed over by step), and a failure reaches the training
thread at the step it concerns, with that step in its message. The training thread moves the
CPU tensors to the device (pinned memory and ``non_blocking`` copies on CUDA).

Thread safety: each worker owns a copy of the collator (its own SentencePiece processor and
counters); the training thread's collator serves validation. Skipped sequences are counted
from the collated shapes, not from the collator's running counters.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from weighted_mtp.alignment import shift_labels
from weighted_mtp.data.collator import CollatorStats, PromptOutputCollator
from weighted_mtp.data.offset_reader import read_lines_at
from weighted_mtp.losses.methods import Batch
from weighted_mtp.training.data_plan import DataPlan

logger = logging.getLogger(__name__)

#: Steps prepared ahead of the one training, each by its own worker thread, so up to this many
#: reads are in flight at once. A step's S3 read is two round trips (the object's size, then
#: the ranged GETs): three keep up with steps down to about two thirds of that read, and ride
#: out a slow or retried request, while holding only the token ids of three steps.
PREFETCH_STEPS = 3
#: How long ``close`` waits for the thread to finish the read it is in; past that the daemon
#: thread is abandoned (it ends with the process) rather than holding up a failing run.
JOIN_TIMEOUT_S = 30.0
#: How often ``get`` checks, while it waits, that the workers are still alive.
_POLL_S = 0.1


class BatchReadError(RuntimeError):
    """Reading or collating the micro-batches of a step failed; the message names the step
    and the file, the original exception is the ``__cause__``."""


@dataclass
class StepBatches:
    """The micro-batches of one optimizer step on the CPU, in plan order."""

    step: int
    micro: list[Batch]
    skipped: int  # sequences of the step dropped by the collator (output longer than allowed)


class BatchReader:
    """Reads plan positions from a JSONL (local or fsspec URL) and collates them.

    Args:
        collator: the model's collator; used by the calling thread only (see
            :meth:`for_thread`).
        device: the training device; on CUDA the collated tensors are pinned so that
            :meth:`to_device` copies them asynchronously.
        storage_options: fsspec options for URLs (endpoint, credentials).
    """

    def __init__(
        self,
        collator: PromptOutputCollator,
        device: torch.device,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.collator = collator
        self.device = device
        self.storage_options = storage_options or None
        self._pin = device.type == "cuda"
        self._validation: dict[tuple, list[Batch]] = {}

    def for_thread(self) -> BatchReader:
        """A reader for another thread: same settings, its own collator (SentencePiece
        processor and counters), so no state is shared with this one."""
        collator = copy.deepcopy(self.collator)
        collator.stats = CollatorStats()
        return BatchReader(collator, self.device, self.storage_options)

    def read(
        self, path: str, rows: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
    ) -> list[dict]:
        return read_lines_at(
            path, offsets, lengths, rows=rows, storage_options=self.storage_options
        )

    def collate(self, records: list[dict], where: str) -> tuple[Batch, int]:
        """``records`` -> (a CPU ``Batch``, the number of records the collator skipped)."""
        raw = self.collator(records)
        kept = raw["input_ids"].shape[0]
        if kept == 0:
            raise ValueError(
                f"{where}: every sequence of the micro-batch was skipped (output longer than "
                f"max_seq_len={self.collator.max_length}); the metadata's token counts disagree "
                "with the model's tokenizer"
            )
        batch = Batch(
            input_ids=raw["input_ids"],
            targets=shift_labels(raw["labels"]),
            is_correct=raw.get("is_correct"),
        )
        batch.extras["n_tokens"] = raw["attention_mask"].sum()
        if "bug_mask" in raw:  # target alignment, like the targets (validation diagnostics)
            batch.extras["bug_mask"] = shift_labels(raw["bug_mask"].long(), 0).bool()
        if self._pin:
            batch = _map_tensors(batch, lambda t: t.pin_memory())
        return batch, len(records) - kept

    def read_step(
        self,
        path: str,
        plan: DataPlan,
        step: int,
        *,
        rank: int,
        world: int,
        batch_size: int,
        grad_accum: int,
    ) -> StepBatches:
        """This rank's micro-batches of optimizer step ``step`` (0-based), in one ranged read.

        Raises:
            BatchReadError: the read or the collation failed (message: step and file).
        """
        try:
            flat = np.concatenate(
                [
                    plan.micro_batch_positions(
                        step, m, rank, batch_size=batch_size, grad_accum=grad_accum, world=world
                    )
                    for m in range(grad_accum)
                ]
            )
            records = self.read(
                path, plan.train_rows[flat], plan.train_offsets[flat], plan.train_lengths[flat]
            )
            micro, skipped = [], 0
            for m in range(grad_accum):
                batch, n = self.collate(
                    records[m * batch_size : (m + 1) * batch_size], f"micro-batch {m}"
                )
                micro.append(batch)
                skipped += n
        except Exception as exc:
            raise BatchReadError(
                f"step {step + 1}, rows of {path}: {type(exc).__name__}: {exc}"
            ) from exc
        return StepBatches(step, micro, skipped)

    def validation_batches(
        self,
        path: str,
        plan: DataPlan,
        *,
        rank: int,
        world: int,
        batch_size: int,
        panel: str = "loss",
    ) -> list[Batch]:
        """This rank's micro-batches of validation panel ``panel`` (``loss`` or ``value``,
        :meth:`DataPlan.panel`) on the CPU. The validation rows never change during a run, so
        they are read and collated once and kept (token ids only)."""
        key = (path, rank, world, batch_size, panel)
        if key not in self._validation:
            positions = plan.valid_positions(rank, world, panel)
            rows, offsets, lengths = plan.panel(panel)
            try:
                records = self.read(path, rows[positions], offsets[positions], lengths[positions])
                batches = [
                    self.collate(records[i : i + batch_size], "validation")[0]
                    for i in range(0, len(records), batch_size)
                ]
            except Exception as exc:
                raise BatchReadError(
                    f"validation rows of {path}: {type(exc).__name__}: {exc}"
                ) from exc
            self._validation[key] = batches
        return self._validation[key]

    def to_device(self, batch: Batch) -> Batch:
        """``batch`` on the training device (asynchronous copies from pinned memory on CUDA;
        the same object on the CPU)."""
        if self.device.type == "cpu":
            return batch
        return _map_tensors(batch, lambda t: t.to(self.device, non_blocking=self._pin))


def _map_tensors(batch: Batch, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
    return Batch(
        input_ids=fn(batch.input_ids),
        targets=fn(batch.targets),
        is_correct=None if batch.is_correct is None else fn(batch.is_correct),
        ref_ce=None if batch.ref_ce is None else fn(batch.ref_ce),
        extras={k: fn(v) for k, v in batch.extras.items()},
    )


class StepPrefetcher:
    """Runs ``produce(step)`` for ``steps`` in daemon threads, at most ``depth`` steps ahead of
    the consumer, who takes the results in the order of ``steps`` with :meth:`get`.

    ``threads`` workers (default ``depth``) each take the next step not yet taken, so up to
    ``depth`` reads are in flight at once: a step whose read lasts longer than a training step
    (two S3 round trips against a short step) is still ready in time. Results are handed over
    by step, so their order never depends on which read finishes first.

    An exception in ``produce`` is handed over in its place: :meth:`get` of that step raises
    it (the worker's traceback kept), after every earlier step was delivered; no later step is
    started. :meth:`close` (also on leaving a ``with`` block) stops the workers and waits for
    them; call it on every way out of the loop.
    """

    def __init__(
        self,
        produce: Callable[[int], Any],
        steps: range,
        *,
        depth: int = PREFETCH_STEPS,
        threads: int | None = None,
        name: str = "batch-prefetch",
    ) -> None:
        n_threads = depth if threads is None else threads
        if depth < 1 or n_threads < 1:
            raise ValueError(f"depth = {depth}, threads = {n_threads}: expected >= 1 each")
        self._produce = produce
        self._steps = steps
        self._depth = depth
        self._cv = threading.Condition()
        self._taken = 0  # steps[:_taken] were handed to a worker
        self._consumed = 0  # steps[:_consumed] were returned (or raised) by get
        self._limit = len(steps)  # no step at or past this index is started (a failure lowers it)
        self._results: dict[int, tuple[bool, Any]] = {}
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(n_threads)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def _work(self) -> None:
        while True:
            with self._cv:
                while (
                    not self._stopped
                    and self._taken < self._limit
                    and self._taken >= self._consumed + self._depth
                ):
                    self._cv.wait()
                if self._stopped or self._taken >= self._limit:
                    return
                index = self._taken
                self._taken += 1
            try:
                result = (True, self._produce(self._steps[index]))
            except BaseException as exc:  # handed to the consumer, who decides
                result = (False, exc)
            with self._cv:
                if self._stopped:
                    return
                self._results[index] = result
                if not result[0]:
                    self._limit = min(self._limit, index + 1)
                self._cv.notify_all()

    def get(self, step: int) -> Any:
        """The result of ``produce(step)``; ``step`` must be the next one of ``steps``.

        Raises:
            whatever ``produce(step)`` raised; RuntimeError when asked out of order, after the
            last step, or when the workers ended without a result (closed, or an earlier
            failure).
        """
        index = self._consumed
        expected = self._steps[index] if index < len(self._steps) else None
        if step != expected:
            raise RuntimeError(
                f"batch prefetch: step {step} asked, the next prepared step is {expected}"
            )
        with self._cv:
            while index not in self._results:
                if self._stopped or not any(t.is_alive() for t in self._threads):
                    raise RuntimeError(
                        f"batch prefetch: the threads ended before step {step} "
                        "(closed, or stopped by an earlier error)"
                    )
                self._cv.wait(_POLL_S)
            ok, item = self._results.pop(index)
            self._consumed = index + 1
            self._cv.notify_all()
        if not ok:
            raise item
        return item

    def close(self, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Stop the workers (each finishes the step it is reading) and wait for them."""
        with self._cv:
            self._stopped = True
            self._results.clear()
            self._cv.notify_all()
        deadline = time.monotonic() + timeout_s
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            logger.warning(
                "batch prefetch: a read is still running after %.0f s; its daemon thread ends "
                "with the process",
                timeout_s,
            )

    def __enter__(self) -> StepPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_prefetch(
    reader: BatchReader,
    path: str,
    plan: DataPlan,
    steps: range,
    *,
    rank: int,
    world: int,
    batch_size: int,
    grad_accum: int,
    depth: int = PREFETCH_STEPS,
) -> StepPrefetcher:
    """A :class:`StepPrefetcher` of :meth:`BatchReader.read_step` over ``steps`` (start it at
    the resume step); each worker thread reads with its own copy of ``reader``."""
    spare = [reader.for_thread() for _ in range(depth)]  # copied here, not beside validation
    own = threading.local()

    def produce(step: int) -> StepBatches:
        if not hasattr(own, "reader"):
            own.reader = spare.pop()  # atomic: one copy per worker
        return own.reader.read_step(
            path,
            plan,
            step,
            rank=rank,
            world=world,
            batch_size=batch_size,
            grad_accum=grad_accum,
        )

    return StepPrefetcher(produce, steps, depth=depth, threads=depth)
