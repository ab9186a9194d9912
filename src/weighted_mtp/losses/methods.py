"""The per-method losses: what each training method adds to the one loop.

A method sees the training module through :class:`PolicyModule` (head hidden states, the
shared unembedding, the value head) and a :class:`LossContext` (step-level denominators,
the gradient scale, and collectives for choices that span ranks). It returns the loss to
backpropagate and its metrics. Nothing here imports ``torch.distributed``: the loop injects
the collectives, identities in a single process.

Validation is the same for every policy method, so runs compare on one scale: the uniform MTP
loss (``val/loss``) on correct solutions, plus value metrics where a value head exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from weighted_mtp.alignment import IGNORE_INDEX
from weighted_mtp.losses.linear_cross_entropy import RowGroup, linear_cross_entropy
from weighted_mtp.losses.metric_values import MetricValues
from weighted_mtp.losses.mtp import mtp_cross_entropy
from weighted_mtp.weighting import (
    last_masked_index,
    rho1_mask,
    selection_threshold,
    td_errors,
    td_weights,
)
from weighted_mtp.weighting.metrics import clipped_fraction, normalized_entropy, sequence_mean


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class LossContext:
    """Step-level facts a micro-batch loss needs.

    Attributes:
        denominators: ``[n_heads]`` float64, each head's valid target tokens over the whole
            optimizer step (all micro-batches, all ranks).
        loss_scale: multiplies every loss (the world size: DDP/FSDP2 average gradients).
        n_micro: micro-batches in the step (gradient accumulation).
        all_gather: concatenates a 1-D tensor across ranks.
        all_reduce_sum: sums a tensor across ranks.
        chunk_size: rows of logits alive at once.
    """

    denominators: torch.Tensor
    loss_scale: float = 1.0
    n_micro: int = 1
    all_gather: Callable[[torch.Tensor], torch.Tensor] = _identity
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = _identity
    chunk_size: int = 1024


@dataclass
class Batch:
    """One micro-batch on the training device. ``targets`` is the target view
    (``alignment.shift_labels(labels)``); ``ref_ce [B, T]`` is the reference model's CE of
    each target token (Rho-1 only)."""

    input_ids: torch.Tensor
    targets: torch.Tensor
    is_correct: torch.Tensor | None = None
    ref_ce: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class PolicyModule(Protocol):
    """What a method may use of the training module."""

    n_heads: int
    value_head: torch.nn.Module | None

    def head_hiddens(self, tokens: torch.Tensor, n_heads: int | None = None) -> list[torch.Tensor]:
        """Normed hidden states ``[B, T, dim]`` of heads ``0 .. n_heads-1``."""
        ...

    def output_weight(self) -> torch.Tensor:
        """The shared unembedding ``[V, dim]``."""
        ...


def _report_mtp(metrics: MetricValues, head_losses: torch.Tensor, prefix: str) -> None:
    for k, value in enumerate(head_losses):
        metrics.add_sum(f"{prefix}/head_{k}_loss", value)


def _rewards(batch: Batch, method: str) -> torch.Tensor:
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


def _value_metrics(
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


# --------------------------------------------------------------------------- methods
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
        _report_mtp(metrics, out.head_losses, "train")
        return out.loss, metrics

    def validate(
        self, module: PolicyModule, batch: Batch, ctx: LossContext
    ) -> tuple[MetricValues, dict[str, torch.Tensor]]:
        """Uniform MTP loss (and value metrics when there is a value head), no gradients."""
        metrics = MetricValues()
        extras: dict[str, torch.Tensor] = {}
        n = module.n_heads if self.trains_policy else 1
        hiddens = module.head_hiddens(batch.input_ids, n)
        if self.trains_policy:
            out = mtp_cross_entropy(
                hiddens,
                module.output_weight(),
                batch.targets,
                denominators=ctx.denominators,
                chunk_size=ctx.chunk_size,
            )
            metrics.add_sum("val/loss", out.head_losses.sum())
            _report_mtp(metrics, out.head_losses, "val")
        if self.uses_value_head and module.value_head is not None:
            mask = batch.targets != IGNORE_INDEX
            rewards = _rewards(batch, self.name)
            values = module.value_head(hiddens[0])
            sq = value_squared_error(values, rewards, mask)
            metrics.add_sum("val/value_loss", sq / ctx.denominators[0])
            extras = _value_metrics(metrics, values, rewards, mask, "val")
        return metrics, extras


class BaselineMethod(Method):
    """Uniform MTP cross-entropy on correct solutions."""


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
        values = module.value_head(hidden)
        mask = batch.targets != IGNORE_INDEX
        rewards = _rewards(batch, self.name)
        value_loss = value_squared_error(values, rewards, mask) / ctx.denominators[0]
        metrics = MetricValues()
        metrics.add_sum("train/loss", value_loss.detach())
        metrics.add_sum("critic/value_loss", value_loss.detach())
        _value_metrics(metrics, values, rewards, mask, "critic")
        return value_loss * ctx.loss_scale, metrics


@dataclass
class VerifiableMethod(Method):
    """TD-weighted MTP cross-entropy + ``value_coef`` x value MSE (the critic keeps learning).

    Weights: ``td_weights(td_errors(V.detach(), R, mask, gamma), mask, beta, w_min, w_max)``
    in target alignment; head ``k`` at position ``t`` uses the weight at ``t+k``."""

    value_coef: float = 0.5
    beta: float = 0.9
    w_min: float = 0.1
    w_max: float = 5.0
    gamma: float = 1.0
    name = "verifiable"
    uses_value_head = True

    def loss(
        self, module: PolicyModule, batch: Batch, ctx: LossContext
    ) -> tuple[torch.Tensor, MetricValues]:
        assert module.value_head is not None
        hiddens = module.head_hiddens(batch.input_ids)
        values = module.value_head(hiddens[0])
        mask = batch.targets != IGNORE_INDEX
        rewards = _rewards(batch, self.name)
        v = values.detach().double()
        td = td_errors(v, rewards, mask, self.gamma)
        weights = td_weights(td, mask, self.beta, self.w_min, self.w_max)
        out = mtp_cross_entropy(
            hiddens,
            module.output_weight(),
            batch.targets,
            weights=weights,
            denominators=ctx.denominators,
            loss_scale=ctx.loss_scale,
            chunk_size=ctx.chunk_size,
        )
        value_loss = value_squared_error(values, rewards, mask) / ctx.denominators[0]
        loss = out.loss + (self.value_coef * ctx.loss_scale) * value_loss

        metrics = MetricValues()
        mtp = out.head_losses.sum()
        metrics.add_sum("train/loss", mtp + self.value_coef * value_loss.detach())
        metrics.add_sum("train/mtp_loss", mtp)
        metrics.add_sum("train/value_loss", value_loss.detach())
        _report_mtp(metrics, out.head_losses, "train")
        metrics.add_moments("td", td[mask])
        metrics.add_moments("weights", weights[mask])
        # No host read per micro-batch: an empty mask gives +-inf, which min/max over nothing
        # leaves out (metric_values).
        metrics.add_min("weights/min", torch.where(mask, weights, torch.inf).amin())
        metrics.add_max("weights/max", torch.where(mask, weights, -torch.inf).amax())
        ent = normalized_entropy(weights, mask)
        ok = ~torch.isnan(ent)
        metrics.add_mean("weights/entropy", ent[ok].sum(), ok.sum())
        frac = clipped_fraction(td, mask, self.beta, self.w_min, self.w_max)
        # NaN exactly when the mask is empty: then the count is 0 and the pair adds nothing.
        metrics.add_mean(
            "weights/clipped_fraction", torch.nan_to_num(frac) * mask.sum(), mask.sum()
        )
        seq_mean = sequence_mean(weights, mask)
        has = ~torch.isnan(seq_mean)
        # Pooled over the step's sequences on every rank (a per-micro-batch correlation of a
        # handful of sequences would be noise).
        metrics.add_pearson("weights/correct_correlation", seq_mean[has], rewards[has])
        _value_metrics(metrics, values, rewards, mask, "critic")
        return loss, metrics


@dataclass
class Rho1Method(Method):
    """Rho-1 selective language modelling on every head.

    Excess loss of head ``k`` for target token ``j`` (target alignment) = policy CE - the
    reference's CE of the same token (``ref_ce[:, j]``, the reference's prediction of token
    ``j+1`` at position ``j``). Per head, the top ``top_k`` fraction of valid tokens of the
    micro-batch across all ranks is kept (one global threshold) and the loss is averaged over
    the kept tokens; head 0 trains on every token when ``head0_always``."""

    reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    top_k: float = 0.6
    head0_always: bool = True
    name = "rho1"

    def prepare(self, batch: Batch) -> None:
        if self.reference is None:
            raise ValueError("rho1: no reference model")
        batch.ref_ce = self.reference(batch.input_ids, batch.targets)

    def loss(
        self, module: PolicyModule, batch: Batch, ctx: LossContext
    ) -> tuple[torch.Tensor, MetricValues]:
        if batch.ref_ce is None:
            raise ValueError("rho1: the batch has no reference losses (prepare() not called)")
        ref_ce = batch.ref_ce.detach().double()
        metrics = MetricValues()

        def select(k: int, ce: torch.Tensor, valid: torch.Tensor):
            excess = ce.double() - ref_ce
            n_valid = valid.sum()
            metrics.add_mean(f"rho1/excess_loss_head_{k}", excess[valid].sum(), n_valid)
            everyone = ctx.all_gather(excess[valid].contiguous())
            threshold = selection_threshold(everyone, self.top_k)
            keep = rho1_mask(excess, valid, self.top_k, threshold=threshold)
            kept = keep.sum()
            metrics.add_mean(f"rho1/kept_ratio_head_{k}", kept, n_valid)
            total_kept = ctx.all_reduce_sum(kept.to(torch.float64))
            return keep.to(torch.float64), total_kept * ctx.n_micro

        hiddens = module.head_hiddens(batch.input_ids)
        # Head 0 under head0_always trains on every token: the plain chunked path, normalised
        # by the step's exact token count like the baseline.
        selected = range(1 if self.head0_always else 0, len(hiddens))
        out = mtp_cross_entropy(
            hiddens,
            module.output_weight(),
            batch.targets,
            denominators=ctx.denominators,
            select_fn=select,
            heads=selected,
            loss_scale=ctx.loss_scale,
            chunk_size=ctx.chunk_size,
        )
        if self.head0_always:
            metrics.add_mean("rho1/kept_ratio_head_0", 1.0, 1.0)
            valid0 = batch.targets != IGNORE_INDEX
            excess0 = out.ce[0].double() - ref_ce
            metrics.add_mean("rho1/excess_loss_head_0", excess0[valid0].sum(), valid0.sum())
        metrics.add_sum("train/loss", out.head_losses.sum())
        _report_mtp(metrics, out.head_losses, "train")
        return out.loss, metrics


def reference_token_ce(
    hidden: torch.Tensor, output_weight: torch.Tensor, targets: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """A causal LM's CE of every target token, ``[B, T]`` float (0 where ignored), from its
    final hidden states ``[B, T, dim]`` and unembedding, chunked like the policy's loss."""
    valid = targets != IGNORE_INDEX
    rows = hidden[valid]
    n = rows.shape[0]
    ones = torch.ones(n, dtype=torch.float64, device=hidden.device)
    _, ce, _ = linear_cross_entropy(
        rows, output_weight, targets[valid], [RowGroup(0, n, coef=ones)], chunk_size=chunk_size
    )
    full = torch.zeros(targets.shape, dtype=ce.dtype, device=hidden.device)
    full[valid] = ce
    return full


__all__ = [
    "Batch",
    "BaselineMethod",
    "CriticMethod",
    "LossContext",
    "Method",
    "PolicyModule",
    "Rho1Method",
    "VerifiableMethod",
    "reference_token_ce",
    "value_squared_error",
]
