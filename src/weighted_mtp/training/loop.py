"""The one training loop: every method runs through it, supplying only its loss and metrics.

Per optimizer step: read this rank's micro-batches of the step (one ranged read), count each
head's valid target tokens over the whole step and every rank (the loss denominators, so the
step's loss is the mean over the global batch however it is split), then for each micro-batch
one forward and one backward through the DDP/FSDP2 wrapper (gradient sync on the last one
only), clip, AdamW, schedule. Rank 0 logs; validation every ``eval_every`` steps.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from weighted_mtp.alignment import head_valid_counts, shift_labels
from weighted_mtp.data.collator import PromptOutputCollator
from weighted_mtp.data.offset_reader import read_lines_at
from weighted_mtp.losses.methods import Batch, LossContext
from weighted_mtp.losses.metric_values import MetricValues
from weighted_mtp.training.checkpoint import (
    CheckpointError,
    TrainerState,
    choose_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from weighted_mtp.training.checkpoint_storage import CheckpointStorage
from weighted_mtp.training.config import TrainingParams
from weighted_mtp.training.data_plan import DataPlan
from weighted_mtp.training.distributed import (
    WorldInfo,
    all_gather_cat,
    all_reduce_sum,
)
from weighted_mtp.training.optim import build_optimizer, lr_factor
from weighted_mtp.training.parallelize import gradient_sync, inner_module, parallelize
from weighted_mtp.training.spec import HISTORY_FILE, JobSpec
from weighted_mtp.training.step_log import StepLog
from weighted_mtp.weighting.metrics import roc_auc

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss part or the gradient norm became NaN or infinite."""


@dataclass
class TrainSummary:
    steps: int
    tokens_seen: int
    final_metrics: dict[str, float]
    skipped_sequences: int


class _BatchReader:
    """Reads plan positions from the JSONL and collates them into device tensors."""

    def __init__(self, spec: JobSpec, collator: PromptOutputCollator, device: torch.device):
        self.spec = spec
        self.collator = collator
        self.device = device

    def read(
        self, path: str, rows: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
    ) -> list[dict]:
        return read_lines_at(
            path, offsets, lengths, rows=rows, storage_options=self.spec.storage_options or None
        )

    def collate(self, records: list[dict], where: str) -> tuple[Batch, int]:
        before = self.collator.stats.skipped
        raw = self.collator(records)
        skipped = self.collator.stats.skipped - before
        if raw["input_ids"].shape[0] == 0:
            raise ValueError(
                f"{where}: every sequence of the micro-batch was skipped (output longer than "
                f"max_seq_len={self.collator.max_length}); the metadata's token counts disagree "
                "with the model's tokenizer"
            )
        batch = Batch(
            input_ids=raw["input_ids"].to(self.device),
            targets=shift_labels(raw["labels"]).to(self.device),
            is_correct=raw["is_correct"].to(self.device) if "is_correct" in raw else None,
        )
        batch.extras["n_tokens"] = raw["attention_mask"].sum()
        return batch, skipped


def _reduce_metrics(values: MetricValues, world: WorldInfo) -> dict[str, float]:
    """Combine every rank's metric values (ranks may report different names)."""
    if dist.is_initialized() and world.world_size > 1:
        gathered: list[dict] = [None] * world.world_size  # type: ignore[list-item]
        dist.all_gather_object(gathered, values.to_plain())
        merged = MetricValues()
        for part in gathered:
            merged.merge(MetricValues.from_plain(part))
        values = merged
    return values.finalize()


def _check_finite(metrics: MetricValues, loss: torch.Tensor, step: int, method: str) -> None:
    if torch.isfinite(loss).all():
        return
    bad = [
        name
        for name, (_, value, _) in sorted(metrics.items.items())
        if not torch.isfinite(value).all()
    ]
    parts = ", ".join(bad) if bad else "the total loss"
    raise NonFiniteLossError(
        f"{method}: non-finite loss at step {step + 1}: {parts} = "
        f"{[metrics.items[b][1].tolist() for b in bad] if bad else float(loss)}; lower the "
        "learning rate or check the data of this step"
    )


def _grad_norm(parameters: list[nn.Parameter], max_norm: float) -> float:
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
        norm = norm.full_tensor()
    return float(norm)


def _resume_point(
    spec: JobSpec,
    world: WorldInfo,
    storage: CheckpointStorage,
    resume: str,
    plan_sha256: str,
) -> Path | None:
    """Rank 0 picks the checkpoint (fetching a newer remote one first) and tells the others;
    an unusable explicit checkpoint stops every rank with the same error."""
    choice: list[str | None] = [None, None]
    if world.is_main:
        try:
            if resume == "auto":
                try:
                    storage.fetch_latest()
                except Exception as exc:  # an unreachable store must not stop training
                    logger.warning(
                        "cannot look for checkpoints in %s (%s: %s); resuming from local "
                        "checkpoints only",
                        storage.remote_url,
                        type(exc).__name__,
                        exc,
                    )
            path = choose_checkpoint(
                storage.local_root, resume, plan_sha256=plan_sha256, world_size=world.world_size
            )
            choice = [str(path) if path else None, None]
        except (CheckpointError, OSError) as exc:
            choice = [None, f"{type(exc).__name__}: {exc}"]
    if dist.is_initialized() and world.world_size > 1:
        dist.broadcast_object_list(choice, src=0)
    if choice[1] is not None:
        raise CheckpointError(f"{spec.method}: cannot resume ({choice[1]})")
    return Path(choice[0]) if choice[0] else None


def train(
    spec: JobSpec,
    world: WorldInfo,
    module: nn.Module,
    collator: PromptOutputCollator,
    storage: CheckpointStorage | None = None,
) -> tuple[nn.Module, TrainSummary]:
    """Train ``module`` (an ``MTPTrainingModule``/``CausalLMTrainingModule`` on one device)
    as ``spec`` says, resuming from a checkpoint when ``params.resume`` finds one; returns
    the (possibly sharded) module and a summary. ``storage`` holds the resume checkpoints
    (default: ``spec.checkpoint_path``, no remote mirror); the caller calls its ``finish``."""
    params: TrainingParams = spec.training_params()
    runtime = spec.runtime
    plan = DataPlan.load(spec.plan_path)
    method = module.method  # type: ignore[attr-defined]
    accum, bsz, n_world = params.grad_accum_steps, params.batch_size, world.world_size
    if len(plan.train_rows) < params.max_steps * bsz * accum * n_world:
        raise ValueError(
            f"{spec.plan_path}: {len(plan.train_rows)} planned rows, but {params.max_steps} steps "
            f"of {bsz * accum * n_world} sequences need more; rebuild the plan for this world size"
        )

    param_dtype = getattr(torch, runtime.dtype)
    module.to(world.device)
    wrapped = parallelize(module, runtime.strategy, world.device, param_dtype=param_dtype)
    optimizer = build_optimizer(
        wrapped, lr=params.lr, weight_decay=params.weight_decay, betas=(params.beta1, params.beta2)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(
            s,
            warmup_steps=params.warmup_steps,
            max_steps=params.max_steps,
            min_ratio=params.min_lr_ratio,
        ),
    )
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    autocast = (
        torch.autocast("cuda", dtype=param_dtype)
        if world.device.type == "cuda" and param_dtype != torch.float32
        else contextlib.nullcontext()
    )
    reader = _BatchReader(spec, collator, world.device)
    log = (
        StepLog(
            spec.history_path,
            tracking_uri=spec.mlflow_tracking_uri,
            run_id=spec.mlflow_run_id,
            max_steps=params.max_steps,
            method=spec.method,
        )
        if world.is_main
        else None
    )
    n_heads = inner_module(wrapped).n_heads  # type: ignore[attr-defined]
    tokens_seen = 0
    skipped_total = 0
    start_step = 0
    last: dict[str, float] = {}
    plan_sha = plan.fingerprint()
    if storage is None:
        storage = CheckpointStorage(spec.checkpoint_path)
    if log is not None:
        storage.on_failure = log.report_upload_failure
    resume_from = _resume_point(spec, world, storage, params.resume, plan_sha)
    if resume_from is not None:
        state = load_checkpoint(
            resume_from, wrapped, optimizer, plan_sha256=plan_sha, world_size=n_world
        )
        scheduler.load_state_dict(state.scheduler)
        start_step, tokens_seen, skipped_total = (
            state.step,
            state.tokens_seen,
            state.skipped_sequences,
        )
        logger.info(
            "%s: resuming from step %d of %d (%s)",
            spec.method,
            start_step,
            params.max_steps,
            resume_from,
        )
        if log is not None:
            log.replay(resume_from / HISTORY_FILE, start_step)
    save_every = params.save_every or params.max_steps
    try:
        for step in range(start_step, params.max_steps):
            started = time.perf_counter()
            positions = [
                plan.micro_batch_positions(
                    step, m, world.rank, batch_size=bsz, grad_accum=accum, world=n_world
                )
                for m in range(accum)
            ]
            flat = np.concatenate(positions)
            records = reader.read(
                spec.train_jsonl,
                plan.train_rows[flat],
                plan.train_offsets[flat],
                plan.train_lengths[flat],
            )
            micro: list[Batch] = []
            for m in range(accum):
                batch, skipped = reader.collate(
                    records[m * bsz : (m + 1) * bsz], f"step {step + 1}, micro-batch {m}"
                )
                skipped_total += skipped
                micro.append(batch)
            counts = sum(head_valid_counts(b.targets, n_heads) for b in micro)
            denominators = all_reduce_sum(counts.to(torch.float64).cpu()).to(world.device)
            ctx = LossContext(
                denominators=denominators,
                loss_scale=float(n_world),
                n_micro=accum,
                all_gather=all_gather_cat,
                all_reduce_sum=all_reduce_sum,
                chunk_size=params.chunk_size,
            )
            metrics = MetricValues()
            for m, batch in enumerate(micro):
                method.prepare(batch)
                with gradient_sync(wrapped, m == accum - 1), autocast:
                    loss, values = wrapped(
                        batch.input_ids, batch.targets, batch.is_correct, batch.ref_ce, ctx=ctx
                    )
                _check_finite(values, loss, step, spec.method)
                loss.backward()
                metrics.merge(values)
            grad_norm = _grad_norm(trainable, params.grad_clip)
            if not math.isfinite(grad_norm):
                raise NonFiniteLossError(
                    f"{spec.method}: non-finite gradient norm ({grad_norm}) at step {step + 1}; "
                    "lower the learning rate or check the data of this step"
                )
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            n_tokens = all_reduce_sum(
                torch.stack([b.extras["n_tokens"] for b in micro]).sum().to(torch.float64)
            )
            tokens_seen += int(n_tokens)
            elapsed = time.perf_counter() - started
            is_last = step + 1 == params.max_steps
            if (step + 1) % params.log_every == 0 or is_last or step == 0:
                last = _reduce_metrics(metrics, world)
                last.update(
                    {
                        "train/lr": lr,
                        "train/grad_norm": grad_norm,
                        "train/tokens_per_s": float(n_tokens) / max(elapsed, 1e-9),
                        "train/tokens_seen": float(tokens_seen),
                        "train/skipped_sequences": float(skipped_total),
                    }
                )
                if log is not None:
                    log.log(step + 1, last)
            if len(plan.valid_rows) and ((step + 1) % params.eval_every == 0 or is_last):
                val = validate(spec, world, wrapped, reader, plan, params, n_heads)
                last.update(val)
                if log is not None:
                    log.log(step + 1, val, phase="validate")
            if (step + 1) % save_every == 0 or is_last:
                state = TrainerState(
                    step=step + 1,
                    tokens_seen=tokens_seen,
                    plan_sha256=plan_sha,
                    world_size=n_world,
                    method=spec.method,
                    scheduler=scheduler.state_dict(),
                    skipped_sequences=skipped_total,
                )
                saved = save_checkpoint(
                    storage.local_root,
                    wrapped,
                    optimizer,
                    state,
                    keep_last=params.keep_last,
                    extra_files={HISTORY_FILE: spec.history_path},
                )
                if world.is_main:
                    storage.upload_async(step + 1, saved)
    finally:
        if log is not None:
            log.close()
    if skipped_total:
        logger.warning("%d sequences did not fit max_seq_len and were skipped", skipped_total)
    return wrapped, TrainSummary(params.max_steps, tokens_seen, last, skipped_total)


@torch.no_grad()
def validate(
    spec: JobSpec,
    world: WorldInfo,
    wrapped: nn.Module,
    reader: _BatchReader,
    plan: DataPlan,
    params: TrainingParams,
    n_heads: int,
) -> dict[str, float]:
    """Validation metrics over the plan's validation rows (split evenly across ranks)."""
    if spec.valid_jsonl is None:
        return {}
    positions = plan.valid_positions(world.rank, world.world_size)
    records = reader.read(
        spec.valid_jsonl,
        plan.valid_rows[positions],
        plan.valid_offsets[positions],
        plan.valid_lengths[positions],
    )
    batches = [
        reader.collate(records[i : i + params.batch_size], "validation")[0]
        for i in range(0, len(records), params.batch_size)
    ]
    counts = sum(
        (head_valid_counts(b.targets, n_heads) for b in batches),
        torch.zeros(n_heads, dtype=torch.long),
    )
    ctx = LossContext(
        denominators=all_reduce_sum(counts.to(torch.float64).cpu()).to(world.device),
        chunk_size=params.chunk_size,
    )
    metrics = MetricValues()
    scores, labels = [], []
    was_training = wrapped.training
    wrapped.eval()
    try:
        for batch in batches:
            values, extras = wrapped(
                batch.input_ids, batch.targets, batch.is_correct, None, ctx=ctx, mode="validate"
            )
            metrics.merge(values)
            if "last_value" in extras:
                scores.append(extras["last_value"].cpu())
                labels.append(extras["is_correct"].cpu())
    finally:
        wrapped.train(was_training)
    out = _reduce_metrics(metrics, world)
    if scores:
        all_scores = all_gather_cat(torch.cat(scores).double())
        all_labels = all_gather_cat(torch.cat(labels).to(torch.float64)) > 0.5
        auc = roc_auc(all_scores, all_labels)
        if math.isfinite(auc):
            out["val/value_auc"] = auc
        out["val/last_value_accuracy"] = float(((all_scores > 0.5) == all_labels).double().mean())
    return out
