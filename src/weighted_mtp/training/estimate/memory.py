"""The estimate and its validation: :func:`estimate_memory` runs the step on fake tensors under
the tracker; :func:`measure_memory` runs it on real tensors and reads the allocator's peak."""

from __future__ import annotations

import contextlib
import gc
import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from weighted_mtp.models.args import ModelArgs
from weighted_mtp.training.config import RuntimeParams, TrainingParams
from weighted_mtp.training.estimate.fake import (
    FullMasks,
    fake_device,
    fake_process_group,
    outside_modes,
)
from weighted_mtp.training.estimate.params import EstimateError
from weighted_mtp.training.estimate.report import MemoryEstimate
from weighted_mtp.training.estimate.step import build_step, check_strategy
from weighted_mtp.training.estimate.tracker import module_tensors, state_bytes, tracker_class


def estimate_memory(
    method: str,
    params: TrainingParams,
    runtime: RuntimeParams,
    args: ModelArgs,
    *,
    reference: Mapping[str, Any] | None = None,
    world_size: int | None = None,
) -> MemoryEstimate:
    """Rank 0's peak memory during a training step of ``method`` as configured, on fake
    tensors (no memory, no GPU, no model files).

    Args:
        method: ``baseline`` | ``critic`` | ``verifiable`` | ``verifiable_uniform`` | ``rho1``.
        params: the method's parameters (``<method>.*``).
        runtime: ``runtime.*`` (strategy, dtype, activation checkpointing, world size).
        args: the policy model's shape (``params.json``).
        reference: rho1's reference shape (Hugging Face ``config.json`` fields with
            ``model_type``).
        world_size: ranks (default ``nproc_per_node x nnodes``).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    check_strategy(runtime)
    world = world_size or runtime.nproc_per_node * runtime.nnodes
    device = fake_device()
    started = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    gc.collect()
    with fake_process_group(world):
        fake_mode = FakeTensorMode()
        with fake_mode, FullMasks():
            # parallelize leaves the fake mode for FSDP2's device mesh (real rank ids); the
            # module's fake parameters keep dispatching to their own fake mode meanwhile.
            step = build_step(
                method,
                params,
                runtime,
                args,
                reference,
                device,
                world,
                outside_modes(),
            )
            step.prime_optimizer()
            tracker = tracker_class()(step.wrapped, step.optimizer)
            tracker.track_inputs(step.batch)
            reference_bytes = (
                state_bytes(t for t in module_tensors(step.reference)) if step.reference else 0
            )
            # gc off: a reference cycle must not keep a fake buffer "alive" past its real
            # lifetime (the tracker frees a tensor's bytes when its storage dies).
            gc.disable()
            try:
                with tracker:
                    step.run(before_micro_batch=tracker.reset_mod_stats)
            finally:
                if gc_was_enabled:
                    gc.enable()
        peak = tracker.get_tracker_snapshot("peak")
    seconds = time.perf_counter() - started
    if not peak:
        raise EstimateError(f"{method}: the memory tracker recorded nothing")
    # The device the model lives on (a few scalars may sit on the CPU beside a GPU).
    device_peak = max(peak.values(), key=lambda snap: snap["Total"])
    snapshot = {str(getattr(k, "value", k)): v for k, v in device_peak.items()}
    loss = tracker.loss_at_peak
    gathered = snapshot["Unsharded Param"] + snapshot["All Gather"]
    return MemoryEstimate(
        method=method,
        world_size=world,
        batch_size=params.batch_size,
        grad_accum_steps=params.grad_accum_steps,
        max_seq_len=params.max_seq_len,
        activation_checkpointing=runtime.activation_checkpointing,
        dtype=runtime.dtype,
        device=device.type,
        parameters=snapshot["Sharded Param"] + snapshot["Buffer"] + gathered + reference_bytes,
        gathered=gathered,
        reference=reference_bytes,
        gradients=snapshot["Sharded Grad"] + snapshot["Unsharded Grad"],
        optimizer=snapshot["OptState"],
        activations=snapshot["Activation"] - loss + snapshot["Temp"],
        loss=loss,
        other=snapshot["Inputs"] + snapshot["Reduce Scatter"],
        seconds=seconds,
    )


def _allocated_peak(prof: Any) -> int:
    """The CPU allocator's highest running total of bytes allocated (and not yet freed) while
    ``prof`` recorded: its ``[memory]`` events carry that total (``Total Allocated``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        trace = json.loads(path.read_text(encoding="utf-8"))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals = [
        int(e["args"]["Total Allocated"])
        for e in events
        if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0
    ]
    if not totals:
        raise EstimateError("the profiler recorded no CPU allocation")
    return max(totals)


def measure_memory(
    method: str,
    params: TrainingParams,
    runtime: RuntimeParams,
    args: ModelArgs,
    *,
    reference: Mapping[str, Any] | None = None,
    world_size: int | None = None,
) -> int:
    """The same step on *real* tensors in this process (fake process group: every rank's
    collectives are no-ops, buffers allocated as on rank 0), its peak measured independently
    of the tracker. On the CPU: the bytes alive when the step starts (parameters, AdamW
    states, batch, reference) plus the CPU allocator's highest running total of what the step
    allocated and has not yet freed, as the profiler records it; on a GPU (FSDP2 puts the
    parameters there when there is one): the caching allocator's peak. For small shapes
    only: this allocates everything. Returns bytes."""
    check_strategy(runtime)
    world = world_size or runtime.nproc_per_node * runtime.nnodes
    device = fake_device()
    with fake_process_group(world):
        step = build_step(
            method, params, runtime, args, reference, device, world, contextlib.nullcontext()
        )
        step.prime_optimizer()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            step.run()
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device)
        if device.type != "cpu":
            raise EstimateError(f"measure_memory: no peak measurement on {device.type}")
        alive = state_bytes(
            t
            for t in (
                *module_tensors(step.wrapped),
                *(v for s in step.optimizer.state.values() for v in s.values()),
                *step.batch,
                step.ctx.denominators,
                *(module_tensors(step.reference) if step.reference else ()),
            )
            if isinstance(t, torch.Tensor)
        )
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step.run()
        peak = _allocated_peak(prof)
    return alive + peak
