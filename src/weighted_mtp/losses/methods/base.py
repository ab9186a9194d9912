"""The base method (:class:`Method`): the uniform MTP loss on every head, which is the
``baseline``, and the validation every method shares (the loss panel, and the value panel of the
value-head methods), with the value-loss pieces the value-head methods share."""

from __future__ import annotations

import torch

from weighted_mtp.alignment import IGNORE_INDEX
from weighted_mtp.losses.methods.context import Batch, LossContext, PolicyModule
from weighted_mtp.losses.metric_values import MetricValues
from weighted_mtp.losses.mtp import mtp_cross_entropy
from weighted_mtp.weighting import last_masked_index


def report_mtp(metrics: MetricValues, head_losses: torch.Tensor, prefix: str) -> None:
    for k, value in enumerate(head_losses):
        metrics.add_sum(f"{prefix}/head_{k}_loss", value)


def batch_rewards(batch: Batch, method: str) -> torch.Tensor:
    if batch.is_correct is None:
        raise ValueError(f"{method}: the batch has no is_correct (the reward); check the data")
    return batch.is_correct.to(torch.float64)


def value_squared_error(
    values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Sum over masked positions of ``(V(s_t) - R)^2``: the Monte-Carlo value target (the
    sequence's final reward at every output position)."""
    dtype = torch.promote_types(values.dtype, torch.float32)
    err = values.to(dtype) - rewards[:, None].to(dtype)
    return torch.where(mask, err * err, torch.zeros_like(err)).sum()


def value_metrics(
    metrics: MetricValues,
    values: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    prefix: str,
) -> dict[str, torch.Tensor]:
    v = values.detach().double()
    correct_pred = (v > 0.5) == (rewards[:, None] > 0.5)
    metrics.add_mean(f"{prefix}/value_accuracy", (correct_pred & mask).sum(), mask.sum())
    metrics.add_mean(f"{prefix}/value_mean", torch.where(mask, v, 0.0).sum(), mask.sum())
    last = last_masked_index(mask)
    has = last >= 0
    last_v = v.gather(1, last.clamp_min(0)[:, None]).squeeze(1)[has]
    return {"last_value": last_v, "is_correct": rewards[has] > 0.5}


#: VerifiableMethod's default TD weighting (ARCHITECTURE.md, "Weighting semantics").
TD_DEFAULTS: dict[str, float] = {"gamma": 1.0, "beta": 0.9, "w_min": 0.1, "w_max": 5.0}


class Method:
    """Base: uniform MTP loss on every head (the ``baseline``)."""

    name = "baseline"
    uses_value_head = False
    trains_policy = True

    def configure(self, module: torch.nn.Module) -> None:
        """Set ``requires_grad`` of the module's parameters for this method."""
        module.requires_grad_(True)

    def prepare(self, batch: Batch) -> None:
        """Extra no-grad inputs computed outside the wrapped module (Rho-1's reference)."""

    def loss(
        self, module: PolicyModule, batch: Batch, ctx: LossContext
    ) -> tuple[torch.Tensor, MetricValues]:
        out = mtp_cross_entropy(
            module.head_hiddens(batch.input_ids),
            module.output_weight(),
            batch.targets,
            denominators=ctx.denominators,
            loss_scale=ctx.loss_scale,
            chunk_size=ctx.chunk_size,
        )
        metrics = MetricValues()
        metrics.add_sum("train/loss", out.head_losses.sum())
        report_mtp(metrics, out.head_losses, "train")
        return out.loss, metrics

    def validate(
        self, module: PolicyModule, batch: Batch, ctx: LossContext
    ) -> tuple[MetricValues, dict[str, torch.Tensor]]:
        """The loss panel (correct held-out rows, the same for every method): the uniform MTP
        loss ``val/loss`` and ``val/head_{k}_loss`` whatever the method trains with, so that
        runs compare on one scale. Nothing for a method that trains no policy (the critic)."""
        metrics = MetricValues()
        if self.trains_policy:
            out = mtp_cross_entropy(
                module.head_hiddens(batch.input_ids),
                module.output_weight(),
                batch.targets,
                denominators=ctx.denominators,
                chunk_size=ctx.chunk_size,
            )
            metrics.add_sum("val/loss", out.head_losses.sum())
            report_mtp(metrics, out.head_losses, "val")
        return metrics, {}

    def validate_value(
        self, module: PolicyModule, batch: Batch, ctx: LossContext
    ) -> tuple[MetricValues, dict[str, torch.Tensor]]:
        """The value panel (balanced held-out rows; value-head methods): ``val/value_loss``
        (MSE to the reward per output token), ``val/value_accuracy``, ``val/value_mean``, and
        as extras the values ``[B, T]`` (float64), ``mask`` and ``rewards`` from which the loop
        computes the AUCs and the bug diagnostics
        (:func:`weighted_mtp.weighting.metrics.value_panel_parts`)."""
        metrics = MetricValues()
        if not self.uses_value_head or module.value_head is None:
            return metrics, {}
        mask = batch.targets != IGNORE_INDEX
        rewards = batch_rewards(batch, self.name)
        values = module.value_head(module.head_hiddens(batch.input_ids, 1)[0], mask)
        sq = value_squared_error(values, rewards, mask)
        metrics.add_sum("val/value_loss", sq / ctx.denominators[0])
        value_metrics(metrics, values, rewards, mask, "val")
        return metrics, {"values": values.detach().double(), "mask": mask, "rewards": rewards}

    def td_settings(self) -> dict[str, float]:
        """The TD weighting (``gamma, beta, w_min, w_max``) the value panel reports weights
        with: verifiable's defaults, unless the method has its own (:class:`VerifiableMethod`).
        The critic reports what verifiable with default settings would make of its values."""
        return dict(TD_DEFAULTS)

    def validation_summary(self, values: dict[str, float]) -> dict[str, float]:
        """Metrics derived from the reduced validation metrics of every rank (``values``),
        added to them by the loop; none by default."""
        return {}


class BaselineMethod(Method):
    """Uniform MTP cross-entropy on correct solutions."""
