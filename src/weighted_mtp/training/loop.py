"""The one training loop: every method runs through it, supplying only its loss and metrics.

Per optimizer step: take this rank's micro-batches of the step (read, tokenised and collated
ahead by background threads, ``training/batches.py``) onto the device, count each
head's valid target tokens over the whole step and every rank (the loss denominators, so the
step's loss is the mean over the global batch however it is split), then for each micro-batch
one forward and one backward through the DDP/FSDP2 wrapper (gradient sync on the last one
only), clip, AdamW, schedule. Rank 0 logs; validation every ``eval_every`` steps.

A step's metrics and finiteness checks are in :mod:`weighted_mtp.training.step_metrics`, the
validation panels in :mod:`weighted_mtp.training.validation`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from weighted_mtp.alignment import head_valid_counts
from weighted_mtp.data.collator import PromptOutputCollator
from weighted_mtp.losses.methods import Batch, LossContext
from weighted_mtp.losses.metric_values import MetricValues
from weighted_mtp.training.batches import BatchReader, StepBatches, start_prefetch
from weighted_mtp.training.checkpoint import (
    CheckpointError,
    TrainerState,
    choose_checkpoint,
    fresh_start_reason,
    load_checkpoint,
    rank0_io,
    save_checkpoint,
)
from weighted_mtp.training.checkpoint_storage import CheckpointStorage
from weighted_mtp.training.config import TrainingParams
from weighted_mtp.training.data_plan import DataPlan
from weighted_mtp.training.distributed import (
    WorldInfo,
    all_gather_cat_at,
    all_reduce_sum,
)
from weighted_mtp.training.optim import build_optimizer, lr_factor
from weighted_mtp.training.parallelize import gradient_sync, inner_module, parallelize
from weighted_mtp.training.run_identity import RunIdentity
from weighted_mtp.training.spec import HISTORY_FILE, JobSpec
from weighted_mtp.training.step_log import StepLog
from weighted_mtp.training.step_metrics import FiniteGuard, clipped_grad_norm, reduce_metrics
from weighted_mtp.training.validation import validate

logger = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    steps: int
    tokens_seen: int
    final_metrics: dict[str, float]
    skipped_sequences: int


def step_context(
    micro: list[Batch], n_heads: int, world: WorldInfo, chunk_size: int
) -> LossContext:
    """The :class:`LossContext` of one optimizer step made of this rank's ``micro``
    batches: each head's valid target tokens per micro-batch summed over ranks (one
    all-reduce; Rho-1 derives its step's kept counts from them) and over the step (the loss
    denominators, so the step's loss is the mean over the global batch however it is split).
    Every tensor stays on the training device: the collectives run there, and nothing reads
    the device until the step's host sync (if it has one)."""
    counts = torch.stack([head_valid_counts(b.targets, n_heads) for b in micro])
    micro_counts = all_reduce_sum(counts.to(torch.float64))
    return LossContext(
        denominators=micro_counts.sum(0),
        loss_scale=float(world.world_size),
        n_micro=len(micro),
        all_gather=all_gather_cat_at,
        all_reduce_sum=all_reduce_sum,
        chunk_size=chunk_size,
        micro_counts=micro_counts,
    )


def _fresh_start_line(spec: JobSpec, storage: CheckpointStorage, identity: RunIdentity) -> str:
    where = storage.local_root if storage.remote_url is None else storage.remote_url
    try:
        others, legacy = storage.other_runs()
    except Exception as exc:  # only the explanation is lost
        logger.debug("cannot list other runs' checkpoints: %s", exc)
        others, legacy = [], 0
    return f"{spec.method}: training from step 1: " + fresh_start_reason(
        identity, str(where), others, legacy
    )


def _resume_point(
    spec: JobSpec,
    world: WorldInfo,
    storage: CheckpointStorage,
    resume: str,
    plan_sha256: str,
) -> tuple[Path | None, RunIdentity]:
    """Rank 0 settles the run identity, points ``storage`` at its checkpoint directory, picks
    the checkpoint (fetching a newer remote one and verifying its SHA256s first) and tells the
    others, who wait for it outside the training collectives (:func:`rank0_io`, timeout
    ``runtime.collective_timeout_s``). A fresh start under ``auto`` is explained in one log
    line; an unusable explicit checkpoint stops every rank with the same error."""
    choice: list[str | None] = [None, None, None]  # checkpoint, error, identity (JSON)
    with rank0_io(spec.runtime.collective_timeout_s) as group:
        if world.is_main:
            try:
                identity = spec.resolve_identity(plan_sha256)
                storage.select_identity(identity)
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
                path = choose_checkpoint(storage.local_root, resume, identity)
                if path is None and resume == "auto":
                    logger.info("%s", _fresh_start_line(spec, storage, identity))
                choice = [str(path) if path else None, None, identity.model_dump_json()]
            except Exception as exc:  # every rank must learn it, not wait for rank 0
                choice = [None, f"{type(exc).__name__}: {exc}", None]
    if group is not None:
        dist.broadcast_object_list(choice, src=0, group=group)
    if choice[1] is not None:
        raise CheckpointError(f"{spec.method}: cannot resume ({choice[1]})")
    assert choice[2] is not None
    identity = RunIdentity.model_validate_json(choice[2])
    if not world.is_main:
        storage.select_identity(identity)
    return (Path(choice[0]) if choice[0] else None), identity


def train(
    spec: JobSpec,
    world: WorldInfo,
    module: nn.Module,
    collator: PromptOutputCollator,
    storage: CheckpointStorage | None = None,
    *,
    fill: Callable[[], None] | None = None,
) -> tuple[nn.Module, TrainSummary]:
    """Train ``module`` (an ``MTPTrainingModule``/``CausalLMTrainingModule`` on one device)
    as ``spec`` says, resuming from a checkpoint when ``params.resume`` finds one; returns
    the (possibly sharded) module and a summary. ``storage`` holds the resume checkpoints
    (default: ``spec.checkpoint_path``, no remote mirror); the caller calls its ``finish``.

    With ``fill``, ``module`` was built on the meta device: it is given storage on the rank's
    device (``to_empty``) and ``fill()`` writes its weights, after FSDP2 sharded it (each
    rank then allocates and reads only its shard) or before DDP wraps it (DDP needs a full
    replica)."""
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
    if fill is None:
        module.to(world.device)
    elif runtime.strategy == "ddp":
        module.to_empty(device=world.device)
        fill()
    wrapped = parallelize(
        module,
        runtime.strategy,
        world.device,
        param_dtype=param_dtype,
        activation_checkpointing=runtime.activation_checkpointing,
    )
    if fill is not None and runtime.strategy != "ddp":
        module.to_empty(device=world.device)
        fill()
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
    reader = BatchReader(collator, world.device, spec.storage_options)
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
    resume_from, identity = _resume_point(spec, world, storage, params.resume, plan_sha)
    if resume_from is not None:
        state = load_checkpoint(resume_from, wrapped, optimizer, identity=identity)
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
    guard = FiniteGuard(spec.method)
    # Tokens this rank trained since start_step, counted on the device; summed over ranks
    # only at host-sync steps.
    local_tokens = torch.zeros((), dtype=torch.int64, device=world.device)
    tokens_at_start = tokens_seen
    # Throughput is measured between host syncs: without one per step, a step's wall time
    # is only the time to queue its kernels.
    window_start: float | None = None
    window_tokens = tokens_seen
    # Reads, tokenisation and collation of the next steps run in background threads while
    # this one trains (training/batches.py); the same batches in the same order as reading
    # them here would give.
    prefetch = start_prefetch(
        reader,
        spec.train_jsonl,
        plan,
        range(start_step, params.max_steps),
        rank=world.rank,
        world=n_world,
        batch_size=bsz,
        grad_accum=accum,
    )
    try:
        for step in range(start_step, params.max_steps):
            if window_start is None:
                window_start = time.perf_counter()
            prepared: StepBatches = prefetch.get(step)
            skipped_total += prepared.skipped
            micro: list[Batch] = [reader.to_device(b) for b in prepared.micro]
            ctx = step_context(micro, n_heads, world, params.chunk_size)
            metrics = MetricValues()
            for m, batch in enumerate(micro):
                method.prepare(batch)
                with gradient_sync(wrapped, m == accum - 1), autocast:
                    loss, values = wrapped(
                        batch.input_ids, batch.targets, batch.is_correct, batch.ref_ce, ctx=ctx
                    )
                guard.record_loss(loss)
                loss.backward()
                metrics.merge(values)
            grad_norm = clipped_grad_norm(trainable, params.grad_clip)
            guard.end_step(step, metrics, grad_norm)
            # The same on every rank (the global norm): "max" keeps it through the reduction.
            metrics.add_max("train/grad_norm", grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            local_tokens += torch.stack([b.extras["n_tokens"] for b in micro]).sum()

            is_last = step + 1 == params.max_steps
            is_log = (step + 1) % params.log_every == 0 or is_last or step == 0
            is_eval = bool(len(plan.valid_rows) or len(plan.value_rows)) and (
                (step + 1) % params.eval_every == 0 or is_last
            )
            is_save = (step + 1) % save_every == 0 or is_last
            if is_log or is_eval or is_save:
                # The host sync of this step (none on the other steps): the finiteness of
                # every step since the last one, before anything is logged, validated or
                # saved; then the global token count.
                guard.check()
                tokens_seen = tokens_at_start + int(all_reduce_sum(local_tokens))
            if is_log:
                last = reduce_metrics(metrics, world)
                now = time.perf_counter()
                last.update(
                    {
                        "train/lr": lr,
                        "train/tokens_per_s": (tokens_seen - window_tokens)
                        / max(now - window_start, 1e-9),
                        "train/tokens_seen": float(tokens_seen),
                        "train/skipped_sequences": float(skipped_total),
                    }
                )
                window_start, window_tokens = None, tokens_seen
                if world.device.type == "cuda":
                    last["train/peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
                if log is not None:
                    log.log(step + 1, last)
            if is_eval:
                val = validate(spec, world, wrapped, reader, plan, params, n_heads)
                last.update(val)
                if log is not None:
                    log.log(step + 1, val, phase="validate")
            if is_save:
                state = TrainerState(
                    step=step + 1,
                    tokens_seen=tokens_seen,
                    plan_sha256=plan_sha,
                    world_size=n_world,
                    method=spec.method,
                    scheduler=scheduler.state_dict(),
                    skipped_sequences=skipped_total,
                    run_identity=identity.digest,
                    identity_components=identity.components,
                )
                # commit=False: the SHA256 manifest (minutes at 7B) is written by rank 0's
                # checkpoint thread, so no rank waits for it here.
                saved = save_checkpoint(
                    storage.local_root,
                    wrapped,
                    optimizer,
                    state,
                    keep_last=params.keep_last,
                    extra_files={HISTORY_FILE: spec.history_path},
                    commit=False,
                )
                if world.is_main:
                    storage.commit_async(step + 1, saved, keep_last=params.keep_last)
    finally:
        prefetch.close()
        if log is not None:
            log.close()
    if skipped_total:
        logger.warning("%d sequences did not fit max_seq_len and were skipped", skipped_total)
    return wrapped, TrainSummary(params.max_steps, tokens_seen, last, skipped_total)
