"""Data-parallel generation: the evaluation's completions made by torchrun workers.

With ``runtime.nproc_per_node > 1`` the evaluation node does not generate in its own process.
It encodes the prompts, writes a :class:`GenerationSpec` into a run directory and hands it to
the training launcher (``weighted_mtp.training.launcher.launch``: torchrun, per-rank logs,
progress, failure reports, no orphans), which runs
``python -m weighted_mtp.evaluation.generation_worker <spec.json>`` on every rank. Each worker
loads the model, plans the same batches as a single process would
(:func:`plan_work`), decodes its share (:func:`~weighted_mtp.evaluation.sampling.assign_batches`)
and writes it to ``<run_dir>/shards/rank_<r>.jsonl``; the parent reads the shards back in the
original order (:func:`read_shards`). The completions do not depend on the number of workers:
batches are the same whatever the width and every row samples from its own stream
(:mod:`weighted_mtp.evaluation.sampling`). Executing the completions stays in the parent.

Run directory: ``spec.json``, ``tokenizer.model`` (the catalog's tokenizer, so the workers
decode with the very one that encoded the prompts), ``shards/``, ``progress/`` (each rank's
counters, which rank 0 sums into the launcher's progress events) and ``logs/``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.evaluation.generation import Generation
from weighted_mtp.evaluation.prompts import (
    PromptFormat,
    SamplingSettings,
    complete_problems,
    dataset_stats,
    encode_prompts,
    group_by_dataset,
    sample_records,
)
from weighted_mtp.evaluation.sampling import Row, batch_cost, plan_batches
from weighted_mtp.evaluation.speculative import SpeculativeStats
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.training.config import RuntimeParams
from weighted_mtp.training.run_directory import RunDirectorySpec

logger = logging.getLogger(__name__)

#: The job's name in the rendezvous id (``launcher.rdzv_id``).
GENERATION_METHOD = "generate"
TOKENIZER_FILE = "tokenizer.model"
SHARD_DIR = "shards"
PROGRESS_DIR = "progress"
WORKER_MODULE = "weighted_mtp.evaluation.generation_worker"


class GenerationJobError(RuntimeError):
    """The workers finished but their shards do not hold every planned row."""


class DatasetPrompts(BaseModel):
    """One dataset's encoded prompts (problem order) and stop sequences."""

    model_config = ConfigDict(extra="forbid")

    name: str
    prompts: list[list[int]]
    stop: list[str] = Field(default_factory=list)


class GenerationSpec(RunDirectorySpec, BaseModel):
    """One data-parallel generation job (what every worker reads from ``spec.json``).

    It satisfies the launcher's spec shape: ``method`` (the rendezvous name), ``run_dir``,
    ``runtime``, ``log_dir``, ``spec_path`` and ``write()``.

    Attributes:
        run_dir: local directory of the job (spec, tokenizer, shards, progress, logs).
        runtime: ``runtime.*`` (``nproc_per_node``, ``device``, ``dtype``, ``omp_threads``);
            generation runs on one node, so ``nnodes`` is 1 (:func:`one_node`).
        model_dir: the model directory (path or fsspec URL) every worker loads.
        storage_options: non-secret fsspec options of ``model_dir``.
        settings: the sampling settings (``evaluation.generation``).
        eos_id, pad_id: the tokenizer's ids.
        datasets: the prompts, per dataset, in the order the samples are reported.
    """

    model_config = ConfigDict(extra="forbid")
    spec_kind: ClassVar[str] = "generation spec"
    #: One line: the spec carries every prompt.
    spec_json_indent: ClassVar[int | None] = None

    method: str = GENERATION_METHOD
    run_dir: str
    runtime: RuntimeParams
    model_dir: str
    storage_options: dict[str, Any] = Field(default_factory=dict)
    settings: SamplingSettings
    eos_id: int
    pad_id: int
    datasets: list[DatasetPrompts]

    @property
    def tokenizer_path(self) -> Path:
        return self.run_path / TOKENIZER_FILE

    def shard_path(self, rank: int) -> Path:
        return self.run_path / SHARD_DIR / f"rank_{rank}.jsonl"

    def progress_path(self, rank: int) -> Path:
        return self.run_path / PROGRESS_DIR / f"rank_{rank}.json"

    @property
    def world_size(self) -> int:
        return self.runtime.nproc_per_node * self.runtime.nnodes


def one_node(runtime: RuntimeParams) -> RuntimeParams:
    """``runtime`` restricted to this node: the workers write their shards into a local run
    directory that the parent reads, so generation uses this node's ``nproc_per_node``."""
    return runtime.model_copy(update={"nnodes": 1, "node_rank": 0})


@dataclass(frozen=True)
class PlannedBatch:
    """One unit of work: rows ``(prompt, sample)`` of ``dataset``, decoded together."""

    dataset: str
    rows: list[Row]
    cost: int


def plan_work(
    prompts: Mapping[str, Sequence[Sequence[int]]], settings: SamplingSettings
) -> list[PlannedBatch]:
    """Every dataset's batches, as one process decodes them (``prompts`` already fitted to the
    model: :func:`~weighted_mtp.evaluation.generation.fit_prompts`): the length-sorted
    batches of ``generate_samples``, or one prompt per unit with speculative decoding (it
    decodes one prompt at a time)."""
    work = []
    for dataset, dataset_prompts in prompts.items():
        lengths = [len(p) for p in dataset_prompts]
        if settings.speculative:
            batches = [[(p, 0)] for p in range(len(lengths))]
        else:
            batches = plan_batches(lengths, settings.samples_per_problem, settings.batch_size)
        work += [
            PlannedBatch(dataset, rows, batch_cost(rows, lengths, settings.max_new_tokens))
            for rows in batches
        ]
    return work


def generation_cost(
    n_problems: Mapping[str, int], settings: SamplingSettings
) -> dict[str, dict[str, int]]:
    """What a model's generation will cost, before it runs: per dataset the sequences to
    generate and the upper bound of generated tokens (every sequence running to
    ``max_new_tokens``; EOS and stop sequences end most earlier)."""
    cost = {}
    for dataset, n in n_problems.items():
        sequences = n * settings.samples_per_problem
        cost[dataset] = {"sequences": sequences, "max_tokens": sequences * settings.max_new_tokens}
    return cost


def log_generation_cost(
    model: str,
    problems: Sequence[Mapping[str, Any]],
    formats: Mapping[str, PromptFormat],
    settings: SamplingSettings,
    workers: int,
) -> dict[str, dict[str, int]]:
    """Log (and return) :func:`generation_cost` of ``model`` on ``problems``, per dataset."""
    groups = group_by_dataset(problems, formats)
    cost = generation_cost({d: len(g) for d, g in groups.items()}, settings)
    for dataset, c in cost.items():
        logger.info(
            "%s: will generate %d sequences for %s, at most %d tokens (%d worker(s))",
            model,
            c["sequences"],
            dataset,
            c["max_tokens"],
            workers,
        )
    return cost


def shard_line(dataset: str, row: Row, generation: Generation, **extra: Any) -> str:
    """One shard line (JSON) for a generated row."""
    prompt, sample = row
    record = {
        "dataset": dataset,
        "prompt": prompt,
        "sample": sample,
        "token_ids": generation.token_ids,
        "text": generation.text,
        "finish_reason": generation.finish_reason,
        **extra,
    }
    return json.dumps(record, separators=(",", ":"))


@dataclass
class GatheredGenerations:
    """The workers' results in the original order.

    ``generations[dataset][p][s]``: sample ``s`` of prompt ``p``. ``seconds[dataset]``: the
    time the workers spent on that dataset's batches, summed over workers.
    ``speculative[dataset]``: summed counters (speculative decoding only).
    """

    generations: dict[str, list[list[Generation]]]
    seconds: dict[str, float]
    speculative: dict[str, SpeculativeStats]


def read_shards(spec: GenerationSpec) -> GatheredGenerations:
    """Gather every rank's shard into the original (dataset, prompt, sample) order.

    Raises:
        GenerationJobError: a planned row is missing from every shard, or appears twice.
    """
    n_samples = 1 if spec.settings.speculative else spec.settings.samples_per_problem
    slots: dict[str, list[list[Generation | None]]] = {
        d.name: [[None] * n_samples for _ in d.prompts] for d in spec.datasets
    }
    seconds = {d.name: 0.0 for d in spec.datasets}
    speculative: dict[str, SpeculativeStats] = {}
    for rank in range(spec.world_size):
        path = spec.shard_path(rank)
        if not path.is_file():
            raise GenerationJobError(f"{path}: rank {rank} wrote no shard")
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                record = json.loads(line)
                dataset, p, s = record["dataset"], record["prompt"], record["sample"]
                if slots[dataset][p][s] is not None:
                    raise GenerationJobError(f"{path}:{line_no}: {dataset} row {(p, s)} twice")
                slots[dataset][p][s] = Generation(
                    record["token_ids"], record["text"], record["finish_reason"]
                )
                seconds[dataset] += record.get("batch_seconds", 0.0)
                if "speculative" in record:
                    total = speculative.setdefault(dataset, SpeculativeStats())
                    total += SpeculativeStats(**record["speculative"])
    missing = [
        (d, p, s)
        for d, rows in slots.items()
        for p, samples in enumerate(rows)
        for s, g in enumerate(samples)
        if g is None
    ]
    if missing:
        raise GenerationJobError(
            f"{spec.run_dir}: {len(missing)} planned row(s) missing from the shards, e.g. "
            f"{missing[:3]} (dataset, prompt, sample)"
        )
    return GatheredGenerations(slots, seconds, speculative)  # type: ignore[arg-type]


def generate_in_workers(
    spec: GenerationSpec,
    *,
    extra_env: dict[str, str] | None = None,
    show_progress: bool = True,
) -> tuple[GatheredGenerations, float]:
    """Run ``spec`` through the launcher (``spec.world_size`` workers) and gather the shards;
    returns them with the job's wall time in seconds.

    Raises:
        TrainingJobError: a worker failed (the launcher's error names the rank, its exit code
            and its traceback).
        GenerationJobError: the shards do not cover every planned row.
    """
    # Imported here: the launcher is the one module that spawns processes.
    from weighted_mtp.training.launcher import launch

    for rank in range(spec.world_size):
        spec.shard_path(rank).unlink(missing_ok=True)
        spec.progress_path(rank).unlink(missing_ok=True)
    started = time.monotonic()
    launch(spec, worker_module=WORKER_MODULE, extra_env=extra_env, show_progress=show_progress)
    return read_shards(spec), time.monotonic() - started


def complete_problems_in_workers(
    model_dir: str,
    tokenizer: Tokenizer,
    problems: Sequence[Mapping[str, Any]],
    formats: Mapping[str, PromptFormat],
    settings: SamplingSettings,
    runtime: RuntimeParams,
    run_dir: str | os.PathLike,
    *,
    storage_options: Mapping[str, Any] | None = None,
    extra_env: dict[str, str] | None = None,
    show_progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]], float]:
    """:func:`~weighted_mtp.evaluation.prompts.complete_problems` by
    ``runtime.nproc_per_node`` workers on this node: the same samples, in the same order.

    ``storage_options``: the non-secret fsspec options of ``model_dir`` (written to the spec);
    credentials travel in ``extra_env``. Per-dataset ``seconds`` are worker-seconds (summed
    over the workers); the third value is the job's wall time.
    """
    by_dataset = group_by_dataset(problems, formats)
    spec = GenerationSpec(
        run_dir=str(run_dir),
        runtime=one_node(runtime),
        model_dir=model_dir,
        storage_options=dict(storage_options or {}),
        settings=settings,
        eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id,
        datasets=[
            DatasetPrompts(
                name=name,
                prompts=encode_prompts(tokenizer, group, formats[name], settings),
                stop=list(formats[name].stop),
            )
            for name, group in by_dataset.items()
        ],
    )
    spec.run_path.mkdir(parents=True, exist_ok=True)
    spec.tokenizer_path.write_bytes(tokenizer.model_proto)
    gathered, wall = generate_in_workers(spec, extra_env=extra_env, show_progress=show_progress)
    stats = {
        d.name: dataset_stats(
            by_dataset[d.name],
            d.prompts,
            gathered.generations[d.name],
            gathered.seconds[d.name],
            gathered.speculative.get(d.name),
        )
        for d in spec.datasets
    }
    return sample_records(problems, by_dataset, gathered.generations), stats, wall


def generate_for_model(
    model_dir: ModelDirectory,
    tokenizer: Tokenizer,
    problems: Sequence[Mapping[str, Any]],
    formats: Mapping[str, PromptFormat],
    settings: SamplingSettings,
    runtime: RuntimeParams,
    make_run_dir: Callable[[], str | os.PathLike],
    *,
    storage_options: Mapping[str, Any] | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The evaluation's generation for one model: the cost logged first
    (:func:`log_generation_cost`), then the samples from this process
    (``runtime.nproc_per_node == 1``: the model loaded on ``runtime.device`` in
    ``runtime.dtype``) or from that many workers (:func:`complete_problems_in_workers`, in the
    run directory ``make_run_dir()`` returns), and the stats ``{"model_dir", "workers",
    "per_dataset"}`` (plus the job's ``wall_seconds`` with workers)."""
    workers = runtime.nproc_per_node
    log_generation_cost(model_dir.path, problems, formats, settings, workers)
    stats: dict[str, Any] = {"model_dir": model_dir.path, "workers": workers}
    if workers == 1:
        logger.info("loading %s on %s (%s)", model_dir.path, runtime.device, runtime.dtype)
        model = model_dir.load(device=runtime.device, dtype=runtime.dtype)
        samples, stats["per_dataset"] = complete_problems(
            model, tokenizer, problems, formats, settings
        )
        return samples, stats
    run_dir = make_run_dir()
    samples, stats["per_dataset"], stats["wall_seconds"] = complete_problems_in_workers(
        model_dir.path,
        tokenizer,
        problems,
        formats,
        settings,
        runtime,
        run_dir,
        storage_options=storage_options,
        extra_env=extra_env,
    )
    logger.info(
        "%s: %d workers generated in %.1f s (%s)",
        model_dir.path,
        workers,
        stats["wall_seconds"],
        run_dir,
    )
    return samples, stats
