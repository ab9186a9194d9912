"""The torchrun worker of data-parallel generation:
``python -m weighted_mtp.evaluation.generation_worker RUN_DIR/spec.json``.

Started by the launcher for :mod:`weighted_mtp.evaluation.parallel_generation`. Every rank
loads the model on its device, plans the batches one process would decode, takes its share
(rank ``RANK`` of ``WORLD_SIZE``), decodes it and writes ``shards/rank_<r>.jsonl``. The ranks
do not talk to each other (no process group: they share nothing but the run directory); each
keeps its counters in ``progress/rank_<r>.json``, and rank 0 sums them into the launcher's
progress events (generated tokens/s over all ranks and an ETA) until every rank is done.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.evaluation.generation import fit_prompts, generate_rows
from weighted_mtp.evaluation.parallel_generation import (
    GenerationSpec,
    PlannedBatch,
    plan_work,
    shard_line,
)
from weighted_mtp.evaluation.sampling import assign_batches
from weighted_mtp.evaluation.speculative import speculative_generate
from weighted_mtp.evaluation.stacked_heads import StackedHeads
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.training import progress
from weighted_mtp.training.distributed import resolve_device

#: Rank 0 reads the other ranks' counters this often once its own share is done.
WAIT_POLL_SECONDS = 1.0
#: Rank 0 prints an event at each further 10% of the sequences or after this long (the
#: launcher logs every non-training event it receives).
REPORT_INTERVAL_SECONDS = 30.0


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)


class _Reporter:
    """This rank's counters on disk; on rank 0, the progress events of the whole job."""

    def __init__(self, spec: GenerationSpec, rank: int, total_rows: int) -> None:
        self.spec, self.rank, self.total_rows = spec, rank, total_rows
        self.rows = self.tokens = 0
        self.started = self.last_print = time.monotonic()
        self.last_decile = -1

    def add(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        self._save(done=False)
        if self.rank == 0:
            self.emit()

    def finish(self) -> None:
        self._save(done=True)
        if self.rank != 0:
            return
        while not self.emit():  # rank 0 reports until every rank is done
            time.sleep(WAIT_POLL_SECONDS)

    def _save(self, *, done: bool) -> None:
        _write_json(
            self.spec.progress_path(self.rank),
            {"rows": self.rows, "tokens": self.tokens, "done": done},
        )

    def emit(self) -> bool:
        """Sum every rank's counters and print an event when due (each further 10% of the
        sequences, every :data:`REPORT_INTERVAL_SECONDS`, and the end); True when all ranks
        are done."""
        rows = tokens = finished = 0
        for rank in range(self.spec.world_size):
            try:
                state = json.loads(self.spec.progress_path(rank).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # not started yet (or being replaced)
            rows, tokens = rows + state["rows"], tokens + state["tokens"]
            finished += bool(state["done"])
        all_done = finished == self.spec.world_size
        now = time.monotonic()
        decile = rows * 10 // max(1, self.total_rows)
        if not (
            all_done
            or decile > self.last_decile
            or now - self.last_print >= REPORT_INTERVAL_SECONDS
        ):
            return all_done
        self.last_decile, self.last_print = decile, now
        elapsed = now - self.started
        rate = tokens / elapsed if elapsed > 0 else 0.0
        eta = elapsed / rows * (self.total_rows - rows) if rows else None
        shown = f"ETA {progress.hms(eta)}" if eta is not None else "ETA unknown"
        event: dict[str, Any] = {
            "phase": "generate",
            "step": rows,
            "max_steps": self.total_rows,
            "tokens_per_s": rate,
            "generated_tokens": tokens,
            "eta_s": eta,
            "message": f"sequences, {tokens} tokens generated, {shown}, "
            f"{finished}/{self.spec.world_size} ranks done",
        }
        print(progress.format_event(event), flush=True)
        return all_done


def _decode_batch(
    model: torch.nn.Module,
    spec: GenerationSpec,
    batch: PlannedBatch,
    prompts: list[list[int]],
    stop: list[str],
    tokenizer: Tokenizer,
    heads: StackedHeads | None,
) -> list[tuple[Any, dict[str, Any]]]:
    """``(generation, extra shard fields)`` for each row of ``batch``, in row order."""
    settings = spec.settings
    if settings.speculative:
        [(p, _)] = batch.rows
        generation, stats = speculative_generate(
            model,
            prompts[p],
            max_new_tokens=settings.max_new_tokens,
            eos_id=spec.eos_id,
            decode=tokenizer.decode,
            stop=stop,
            stacked_heads=heads,
        )
        counters = {k: v for k, v in stats.as_dict().items() if k.startswith("n_")}
        return [(generation, {"speculative": counters})]
    generations = generate_rows(
        model,
        prompts,
        batch.rows,
        seed=settings.seed,
        stream=batch.dataset,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        eos_id=spec.eos_id,
        pad_id=spec.pad_id,
        decode=tokenizer.decode,
        stop=stop,
    )
    return [(g, {}) for g in generations]


def run(spec: GenerationSpec, rank: int, local_rank: int) -> int:
    """Decode rank ``rank``'s share of ``spec``; returns the rows written."""
    device = resolve_device(spec.runtime.device, local_rank)
    tokenizer = Tokenizer.from_file(spec.tokenizer_path)
    model = ModelDirectory(spec.model_dir, storage_options=spec.storage_options).load(
        device=device, dtype=spec.runtime.dtype
    )
    model.eval()
    settings = spec.settings
    prompts = {
        d.name: fit_prompts(model, d.prompts, settings.max_new_tokens) for d in spec.datasets
    }
    stops = {d.name: d.stop for d in spec.datasets}
    work = plan_work(prompts, settings)
    share = assign_batches([b.cost for b in work], spec.world_size)[rank]
    mine = sum(len(work[i].rows) for i in share)
    total = sum(len(b.rows) for b in work)
    print(
        f"rank {rank}/{spec.world_size}: {len(share)} of {len(work)} batches, {mine} of "
        f"{total} sequences, on {device} ({spec.runtime.dtype}, "
        f"{torch.get_num_threads()} thread(s))",
        flush=True,
    )
    heads = StackedHeads(model, model.args.n_future_tokens) if settings.speculative else None
    reporter = _Reporter(spec, rank, total)
    path = spec.shard_path(rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as shard:
        for index in share:
            batch = work[index]
            started = time.perf_counter()
            decoded = _decode_batch(
                model, spec, batch, prompts[batch.dataset], stops[batch.dataset], tokenizer, heads
            )
            seconds = time.perf_counter() - started
            for row, (generation, extra) in zip(batch.rows, decoded, strict=True):
                # Each row carries its share of the batch's time: summed per dataset by the
                # parent, they give the worker-seconds spent on it.
                line = shard_line(
                    batch.dataset, row, generation, batch_seconds=seconds / len(batch.rows), **extra
                )
                shard.write(line + "\n")
            shard.flush()
            reporter.add(len(batch.rows), sum(g.n_tokens for g, _ in decoded))
    reporter.finish()
    print(f"rank {rank}/{spec.world_size}: wrote {mine} sequences to {path}", flush=True)
    return mine


@record
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(
            "usage: python -m weighted_mtp.evaluation.generation_worker RUN_DIR/spec.json",
            file=sys.stderr,
        )
        return 2
    spec = GenerationSpec.read(argv[0])
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != spec.world_size:
        raise RuntimeError(
            f"{argv[0]}: spec plans {spec.world_size} workers, torchrun started {world}"
        )
    with torch.no_grad():
        run(spec, rank, local_rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
