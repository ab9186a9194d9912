"""Validation during training: the loss panel every method shares and the value panel of the
value-head methods, each split evenly across ranks (:func:`validate`)."""

from __future__ import annotations

import torch
from torch import nn

from weighted_mtp.alignment import head_valid_counts
from weighted_mtp.losses.methods import Batch, LossContext
from weighted_mtp.losses.metric_values import MetricValues
from weighted_mtp.training.batches import BatchReader
from weighted_mtp.training.config import TrainingParams
from weighted_mtp.training.data_plan import DataPlan
from weighted_mtp.training.distributed import (
    WorldInfo,
    all_gather_cat,
    all_reduce_sum,
)
from weighted_mtp.training.parallelize import inner_module
from weighted_mtp.training.spec import JobSpec
from weighted_mtp.training.step_metrics import reduce_metrics
from weighted_mtp.weighting.metrics import value_panel_parts, value_panel_summary


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
            out.update(reduce_metrics(metrics, world))
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
            out.update(reduce_metrics(metrics, world))
            # Gathered on the device, then to the host once per part.
            gathered = {k: all_gather_cat(torch.cat(v)).cpu() for k, v in sorted(parts.items())}
            out.update(value_panel_summary(gathered))
    finally:
        wrapped.train(was_training)
    out.update(method.validation_summary(out))
    return out
