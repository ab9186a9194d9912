"""The critic: the value head alone learns the sequence reward; the MTP model is frozen."""

from __future__ import annotations

import torch

from weighted_mtp.alignment import IGNORE_INDEX
from weighted_mtp.losses.methods.base import (
    Method,
    batch_rewards,
    value_metrics,
    value_squared_error,
)
from weighted_mtp.losses.methods.context import Batch, LossContext, PolicyModule
from weighted_mtp.losses.metric_values import MetricValues


class CriticMethod(Method):
    """Value head only; the MTP model is frozen and runs without autograd. Loss: MSE between
    ``V(s_t)`` and the sequence reward (``is_correct`` as 1/0) at every output position."""

    name = "critic"
    uses_value_head = True
    trains_policy = False

    def configure(self, module: torch.nn.Module) -> None:
        module.requires_grad_(False)
        head = getattr(module, "value_head", None)
        if head is None:
            raise ValueError("critic: the training module has no value head")
        head.requires_grad_(True)

    def loss(
        self, module: PolicyModule, batch: Batch, ctx: LossContext
    ) -> tuple[torch.Tensor, MetricValues]:
        assert module.value_head is not None
        with torch.no_grad():
            hidden = module.head_hiddens(batch.input_ids, 1)[0]
        mask = batch.targets != IGNORE_INDEX
        values = module.value_head(hidden, mask)
        rewards = batch_rewards(batch, self.name)
        value_loss = value_squared_error(values, rewards, mask) / ctx.denominators[0]
        metrics = MetricValues()
        metrics.add_sum("train/loss", value_loss.detach())
        metrics.add_sum("critic/value_loss", value_loss.detach())
        value_metrics(metrics, values, rewards, mask, "critic")
        return value_loss * ctx.loss_scale, metrics
