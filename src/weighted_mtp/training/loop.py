"""The one training loop: every method runs through it, supplying only its loss and metrics.

Per optimizer step: take this rank's micro-batches of the step (read, tokenised and collated
ahead by background threads, ``training/batches.py``) onto the device, count each
head's valid target tokens over the whole step and every rank (the loss denominators, so the
step's loss is the mean over the global batch however it is split), then for each micro-batch
one forward and one backward through the DDP/FSDP2 wrapper (gradient sync on the last one
only), clip, AdamW, schedule. Rank 0 logs; validation every ``eval_every`` steps.
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
    all_gather_cat,
    all_gather_cat_at,
    all_reduce_sum,
)
from weighted_mtp.training.optim import build_optimizer, lr_factor
from weighted_mtp.training.parallelize import gradient_sync, inner_module, parallelize
from weighted_mtp.training.run_identity import RunIdentity
from weighted_mtp.training.spec import HISTORY_FILE, JobSpec
from weighted_mtp.training.step_log import StepLog
from weighted_mtp.weighting.metrics import value_panel_parts, value_panel_summary

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss part or the gradient norm became NaN or infinite."""


@dataclass
class TrainSummary:
    steps: int
    tokens_seen: int
    final_metrics: dict[str, float]
    skipped_sequences: int


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
    """Raise :class:`NonFiniteLossError` naming the step (0-based ``step``) and the metric
    parts that went non-finite, when ``loss`` is not finite. Reads the device: the loop calls
    it only from :class:`_FiniteGuard` at a host-sync step."""
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


def _grad_norm(parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip and return the global gradient norm, a scalar on the device (not read here)."""
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
        norm = norm.full_tensor()
    return norm.detach()


class _FiniteGuard:
    """Whether each step's loss and gradient norm were finite, kept on the device and read at
    the next host-sync step (a logged, validated or saved step, and the last one).

    Reading a flag per micro-batch would stall the device every micro-batch. The price of
    reading it later: a non-finite step's update is applied (clip_grad_norm_ scales the
    gradients by a NaN factor, AdamW applies them) and the steps up to the next sync step run
    on those parameters. They are never kept: the check runs before validation and before the
    checkpoint save of a sync step, and before ``train`` returns, so no checkpoint or final
    model holds them, and the error names the first step that went non-finite. A true
    device-side skip would need AdamW's ``found_inf`` (fused kernels only); ``log_every: 1``
    stops at the bad step itself.
    """

    def __init__(self, method: str):
        self.method = method
        # (step, metrics, summed loss, [loss finite, norm finite], gradient norm)
        self._pending: list[tuple[int, MetricValues, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._loss_ok: torch.Tensor | None = None
        self._loss: torch.Tensor | None = None

    def record_loss(self, loss: torch.Tensor) -> None:
        """One micro-batch's loss (device ops only)."""
        loss = loss.detach()
        ok = torch.isfinite(loss).all()
        self._loss_ok = ok if self._loss_ok is None else self._loss_ok & ok
        self._loss = loss if self._loss is None else self._loss + loss

    def end_step(self, step: int, metrics: MetricValues, grad_norm: torch.Tensor) -> None:
        """Close 0-based ``step``: its metrics and clipped gradient norm (device ops only)."""
        if self._loss_ok is None or self._loss is None:
            raise RuntimeError(f"step {step + 1}: no micro-batch loss was recorded")
        flags = torch.stack([self._loss_ok, torch.isfinite(grad_norm).all()])
        # A copy: the loop adds the gradient norm to its metrics afterwards, which the loss
        # message should not list as a loss part.
        self._pending.append(
            (step, MetricValues(dict(metrics.items)), self._loss, flags, grad_norm)
        )
        self._loss_ok = self._loss = None

    def check(self) -> None:
        """Read every pending step's flags in one transfer; raise for the first bad one."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        flags = torch.stack([p[3] for p in pending]).tolist()
        for (step, metrics, loss, _, norm), (loss_ok, norm_ok) in zip(pending, flags, strict=True):
            if not loss_ok:
                _check_finite(metrics, loss, step, self.method)
                # A micro-batch's loss was non-finite although their sum is not (inf - inf).
                raise NonFiniteLossError(
                    f"{self.method}: non-finite loss at step {step + 1}; lower the learning "
                    "rate or check the data of this step"
                )
            if not norm_ok:
                raise NonFiniteLossError(
                    f"{self.method}: non-finite gradient norm ({float(norm)}) at step "
                    f"{step + 1}; lower the learning rate or check the data of this step"
                )


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
    guard = _FiniteGuard(spec.method)
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
            grad_norm = _grad_norm(trainable, params.grad_clip)
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
                last = _reduce_metrics(metrics, world)
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


def _panel(
    spec: JobSpec,
    world: WorldInfo,
    reader: BatchReader,
    plan: DataPlan,
    params: TrainingParams,
    n_heads: int,
    panel: str,
) -> tuple[list[Batch], LossContext]:
    """This rank's batches of a validation panel on the device and their loss context (each
    head's valid target tokens over the panel and every rank)."""
    assert spec.valid_jsonl is not None
    # Read and collated at the first validation only (the rows never change), in this thread
    # with this reader's collator: the prefetch workers keep their own.
    batches = [
        reader.to_device(b)
        for b in reader.validation_batches(
            spec.valid_jsonl,
            plan,
            rank=world.rank,
            world=world.world_size,
            batch_size=params.batch_size,
            panel=panel,
        )
    ]
    counts = sum(
        (head_valid_counts(b.targets, n_heads) for b in batches),
        torch.zeros(n_heads, dtype=torch.long, device=world.device),
    )
    ctx = LossContext(
        denominators=all_reduce_sum(counts.to(torch.float64)), chunk_size=params.chunk_size
    )
    return batches, ctx


@torch.no_grad()
def validate(
    spec: JobSpec,
    world: WorldInfo,
    wrapped: nn.Module,
    reader: BatchReader,
    plan: DataPlan,
    params: TrainingParams,
    n_heads: int,
) -> dict[str, float]:
    """Validation metrics over the plan's two panels (each split evenly across ranks).

    The loss panel (``plan.valid_rows``: correct held-out rows, the same for every method)
    gives the uniform MTP loss ``val/loss``, ``val/head_{k}_loss`` and the method's own
    ``val/*`` metrics. The value panel (``plan.value_rows``: balanced, value-head methods)
    gives ``val/value_loss``, ``val/value_accuracy``, ``val/value_mean`` and the critic
    diagnostics of :func:`~weighted_mtp.weighting.metrics.value_panel_summary` (value AUC with
    its interval at the last token and at 25/50/75% of each program, Brier skill, TD weights
    on the synthetic bug spans and the bug-localisation AUC), with the method's TD settings.
    """
    if spec.valid_jsonl is None:
        return {}
    method = inner_module(wrapped).method  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    was_training = wrapped.training
    wrapped.eval()
    try:
        if len(plan.valid_rows):
            batches, ctx = _panel(spec, world, reader, plan, params, n_heads, "loss")
            metrics = MetricValues()
            for batch in batches:
                values, _ = wrapped(
                    batch.input_ids, batch.targets, batch.is_correct, None, ctx=ctx, mode="validate"
                )
                metrics.merge(values)
            out.update(_reduce_metrics(metrics, world))
        if len(plan.value_rows) and method.uses_value_head:
            batches, ctx = _panel(spec, world, reader, plan, params, n_heads, "value")
            metrics = MetricValues()
            parts: dict[str, list[torch.Tensor]] = {}
            for batch in batches:
                values, extras = wrapped(
                    batch.input_ids,
                    batch.targets,
                    batch.is_correct,
                    None,
                    ctx=ctx,
                    mode="validate_value",
                )
                metrics.merge(values)
                found = value_panel_parts(
                    extras["values"],
                    extras["mask"],
                    extras["rewards"],
                    batch.extras.get("bug_mask"),
                    **method.td_settings(),
                )
                for key, part in found.items():
                    parts.setdefault(key, []).append(part)
            out.update(_reduce_metrics(metrics, world))
            # Gathered on the device, then to the host once per part.
            gathered = {k: all_gather_cat(torch.cat(v)).cpu() for k, v in sorted(parts.items())}
            out.update(value_panel_summary(gathered))
    finally:
        wrapped.train(was_training)
    out.update(method.validation_summary(out))
    return out
