"""The methods that weight the MTP loss per token: ``verifiable`` (TD weights from the value
head), its control ``verifiable_uniform`` (the same value loss, every token weighted 1) and
``rho1`` (tokens selected by their excess loss over a frozen reference)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from weighted_mtp.alignment import IGNORE_INDEX
from weighted_mtp.losses.linear_cross_entropy import RowGroup, linear_cross_entropy
from weighted_mtp.losses.methods.base import (
    Method,
    batch_rewards,
    report_mtp,
    value_metrics,
    value_squared_error,
)
from weighted_mtp.losses.methods.context import Batch, LossContext, PolicyModule
from weighted_mtp.losses.metric_values import MetricValues
from weighted_mtp.losses.mtp import mtp_cross_entropy
from weighted_mtp.weighting import (
    exact_top_k,
    n_selected_counts,
    td_errors,
    td_weights,
)
from weighted_mtp.weighting.metrics import clipped_fraction, normalized_entropy, sequence_mean


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
    #: False in the control (:class:`VerifiableUniformMethod`): a class attribute, not a field.
    applies_weights = True

    def td_settings(self) -> dict[str, float]:
        """This run's own TD weighting (the value panel's bug diagnostics use it)."""
        return {"gamma": self.gamma, "beta": self.beta, "w_min": self.w_min, "w_max": self.w_max}

    def loss(
        self, module: PolicyModule, batch: Batch, ctx: LossContext
    ) -> tuple[torch.Tensor, MetricValues]:
        assert module.value_head is not None
        hiddens = module.head_hiddens(batch.input_ids)
        mask = batch.targets != IGNORE_INDEX
        values = module.value_head(hiddens[0], mask)
        rewards = batch_rewards(batch, self.name)
        v = values.detach().double()
        td = td_errors(v, rewards, mask, self.gamma)
        weights = td_weights(td, mask, self.beta, self.w_min, self.w_max)
        out = mtp_cross_entropy(
            hiddens,
            module.output_weight(),
            batch.targets,
            # None: the uniform MTP loss, by the baseline's own path.
            weights=weights if self.applies_weights else None,
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
        report_mtp(metrics, out.head_losses, "train")
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
        value_metrics(metrics, values, rewards, mask, "critic")
        return loss, metrics


@dataclass
class VerifiableUniformMethod(VerifiableMethod):
    """The control of :class:`VerifiableMethod` that isolates the TD weighting: the same value
    loss and value head, every MTP token weighted 1 (the baseline's loss + ``value_coef`` x
    value MSE). The TD errors and the weights they would have given are still computed and
    logged under verifiable's names (``td/*``, ``weights/*``): the run shows what it left out."""

    name = "verifiable_uniform"
    applies_weights = False


@dataclass
class Rho1Method(Method):
    """Rho-1 selective language modelling on every head.

    Excess loss of head ``k`` for target token ``j`` (target alignment) = policy CE - the
    reference's CE of the same token (``ref_ce[:, j]``, the reference's prediction of token
    ``j+1`` at position ``j``). Head 0 trains on every token when ``head0_always``.

    Selection: per micro-batch and head, over the valid tokens of that micro-batch on every
    rank (one gather), exactly ``n_selected(N, top_k)`` tokens are kept, the largest excess
    first, ties kept in rank-then-position order. The threshold stays per micro-batch rather
    than per step: a per-step threshold needs every micro-batch's policy loss before the first
    backward, i.e. an extra no-grad forward of the policy per micro-batch; this needs none.
    Because the count is exact (no "every tie kept"), each micro-batch's kept count is known
    from its targets alone (``ctx.micro_counts``), so every selected head is normalised by the
    kept tokens of the whole optimizer step, across micro-batches and ranks, as head 0 is by
    its valid tokens: the step's loss of head ``k`` is the mean CE over all kept tokens of the
    step, whatever the split (a short micro-batch's tokens weigh what a long one's do).
    """

    reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    top_k: float = 0.6
    head0_always: bool = True
    name = "rho1"

    def prepare(self, batch: Batch) -> None:
        if self.reference is None:
            raise ValueError("rho1: no reference model")
        batch.ref_ce = self.reference(batch.input_ids, batch.targets)

    def _step_kept(self, ctx: LossContext) -> torch.Tensor:
        """``[n_heads]`` float64: the tokens the step keeps per head, over every micro-batch
        and rank (before any forward: the selection keeps an exact count)."""
        counts = ctx.micro_counts
        if counts is None:
            if ctx.n_micro != 1:
                raise ValueError(
                    f"rho1: LossContext.micro_counts is required with {ctx.n_micro} micro-batches "
                    "per step (the step's kept-token denominators are derived from it)"
                )
            counts = ctx.denominators[None]
        if counts.dim() != 2 or counts.shape[0] != ctx.n_micro:
            raise ValueError(
                f"rho1: micro_counts must be [n_micro={ctx.n_micro}, n_heads], got "
                f"{tuple(counts.shape)}"
            )
        return n_selected_counts(counts, self.top_k).sum(0)

    def loss(
        self, module: PolicyModule, batch: Batch, ctx: LossContext
    ) -> tuple[torch.Tensor, MetricValues]:
        if batch.ref_ce is None:
            raise ValueError("rho1: the batch has no reference losses (prepare() not called)")
        ref_ce = batch.ref_ce.detach().double()
        metrics = MetricValues()
        step_kept = self._step_kept(ctx)

        def select(k: int, ce: torch.Tensor, valid: torch.Tensor):
            excess = ce.double() - ref_ce
            local = excess[valid].contiguous()
            n_valid = valid.sum()
            metrics.add_mean(f"rho1/excess_loss_head_{k}", local.sum(), n_valid)
            # The gather knows where this rank's part starts (from the lengths it exchanges).
            everyone, offset = ctx.all_gather(local)
            mine = exact_top_k(everyone, self.top_k)[offset : offset + local.numel()]
            keep = torch.zeros_like(valid)
            keep[valid] = mine
            kept = mine.sum()
            metrics.add_mean(f"rho1/kept_ratio_head_{k}", kept, n_valid)
            metrics.add_mean(f"rho1/dropped_fraction_head_{k}", n_valid - kept, n_valid)
            return keep.to(torch.float64), step_kept[k]

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
            valid0 = batch.targets != IGNORE_INDEX
            metrics.add_mean("rho1/kept_ratio_head_0", 1.0, 1.0)
            # Nothing of head 0 is dropped under head0_always: the metric says so, 0.
            metrics.add_mean("rho1/dropped_fraction_head_0", 0.0, 1.0)
            excess0 = out.ce[0].double() - ref_ce
            metrics.add_mean("rho1/excess_loss_head_0", excess0[valid0].sum(), valid0.sum())
        metrics.add_sum("train/loss", out.head_losses.sum())
        report_mtp(metrics, out.head_losses, "train")
        return out.loss, metrics

    def validate(
        self, module: PolicyModule, batch: Batch, ctx: LossContext
    ) -> tuple[MetricValues, dict[str, torch.Tensor]]:
        """The shared validation metrics, plus ``val/rho1_excess_head_{k}``: the mean excess
        loss (policy CE - reference CE, the reference's CE computed as in training) of head
        ``k`` over the valid tokens of the correct validation rows (every row when the batch
        has no ``is_correct``)."""
        metrics, extras = super().validate(module, batch, ctx)
        if batch.ref_ce is None:
            self.prepare(batch)
        assert batch.ref_ce is not None
        ref_ce = batch.ref_ce.detach().double()
        out = mtp_cross_entropy(
            module.head_hiddens(batch.input_ids),
            module.output_weight(),
            batch.targets,
            chunk_size=ctx.chunk_size,
        )
        mask = batch.targets != IGNORE_INDEX
        if batch.is_correct is not None:
            mask = mask & batch.is_correct.to(torch.bool)[:, None]
        for k, ce in enumerate(out.ce):
            valid = mask.clone()
            valid[:, :k] = False  # head k's targets start k tokens later
            excess = ce.double() - ref_ce
            metrics.add_mean(f"val/rho1_excess_head_{k}", excess[valid].sum(), valid.sum())
        return metrics, extras

    def validation_summary(self, values: dict[str, float]) -> dict[str, float]:
        """Rho-1's premise on the held-out rows: ``val/rho1_premise_holds_head_{k}`` is 1.0
        when head ``k``'s mean excess loss is > 0 (the reference predicts those tokens better
        than the policy), and ``val/rho1_premise_holds`` is 1.0 when it holds on every head."""
        heads = sorted(
            (int(name.rsplit("_", 1)[1]), value)
            for name, value in values.items()
            if name.startswith("val/rho1_excess_head_")
        )
        if not heads:
            return {}
        out = {f"val/rho1_premise_holds_head_{k}": float(v > 0) for k, v in heads}
        out["val/rho1_premise_holds"] = float(all(v > 0 for _, v in heads))
        return out


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
