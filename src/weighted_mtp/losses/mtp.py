"""The multi-token-prediction cross-entropy on the heads' hidden states.

Alignment (:mod:`weighted_mtp.alignment`): ``targets [B, T]`` is the target view; head ``k``
at position ``t`` predicts ``targets[:, t+k]`` and uses the weight at ``t+k``; rows whose
target is ``IGNORE_INDEX`` carry no loss.

Normalisation: head ``k``'s loss is ``sum(w * ce) / denominators[k]``. In training the
denominators are the head's valid-token counts summed over every micro-batch of the optimizer
step and every rank, so that the step's loss is the mean over the global batch whatever the
split; ``loss_scale`` then multiplies the value (the world size, undoing the gradient
averaging of DDP/FSDP2). Heads are summed (Gloeckle et al.: ``L_n = sum_k CE_k``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from weighted_mtp.alignment import IGNORE_INDEX, head_view
from weighted_mtp.losses.linear_cross_entropy import RowGroup, linear_cross_entropy

SelectFn = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``(k, ce [B, T], valid [B, T]) -> (weights [B, T], denominator scalar)`` for head ``k``.

``ce`` is head ``k``'s detached per-token loss in target alignment (0 where ``valid`` is
False); ``valid`` is head ``k``'s mask in target alignment (False in the first ``k`` columns).
Used by Rho-1: the weights are the kept tokens, the denominator their (global) count."""


@dataclass
class MTPLossOutput:
    """``loss``: scalar in the graph (already multiplied by ``loss_scale``);
    ``head_losses [n]``: each head's ``sum(w * ce) / denominator`` (detached, unscaled);
    ``n_tokens [n]``: valid target tokens of each head in this batch;
    ``ce``: per head, the detached per-token CE in target alignment ``[B, T]`` (0 where
    invalid)."""

    loss: torch.Tensor
    head_losses: torch.Tensor
    n_tokens: torch.Tensor
    ce: list[torch.Tensor]


def _weights_for(weights: torch.Tensor | None, k: int) -> torch.Tensor | None:
    if weights is None or weights.dim() == 2:
        return weights
    return weights[..., k]


def mtp_cross_entropy(
    hiddens: Sequence[torch.Tensor],
    output_weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    denominators: torch.Tensor | None = None,
    select_fn: SelectFn | None = None,
    heads: Sequence[int] | None = None,
    loss_scale: float = 1.0,
    chunk_size: int = 1024,
) -> MTPLossOutput:
    """MTP cross-entropy of every head with one backward and one head's logits at a time.

    Args:
        hiddens: per head, the normed hidden state ``[B, T, dim]`` (``len(hiddens)`` heads).
        output_weight: the shared unembedding ``[V, dim]``.
        targets: ``[B, T]`` target view (``alignment.shift_labels(labels)``).
        weights: per-target-token weights, ``[B, T]`` shared or ``[B, T, n]`` per head
            (detached by the caller); None = 1.
        denominators: ``[n]`` per-head normaliser; None = this batch's valid counts.
        select_fn: per-head weights chosen from the head's own losses (Rho-1); multiplies
            ``weights`` and replaces the denominator of the heads it is applied to.
        heads: heads whose loss ``select_fn`` decides (default all).
        loss_scale: multiplies the loss (and so its gradient).
        chunk_size: logits rows alive at once.
    """
    n_heads = len(hiddens)
    bsz, seqlen = targets.shape
    for k, h in enumerate(hiddens):
        if h.shape[:2] != (bsz, seqlen):
            raise ValueError(
                f"hidden of head {k} is {tuple(h.shape)}, expected [B, T, dim] with "
                f"[B, T] = {(bsz, seqlen)} (the targets')"
            )
    if weights is not None and weights.shape not in ((bsz, seqlen), (bsz, seqlen, n_heads)):
        raise ValueError(f"weights must be [B, T] or [B, T, {n_heads}], got {tuple(weights.shape)}")
    mask = targets != IGNORE_INDEX
    n_tokens = torch.stack([head_view(mask, k).sum() for k in range(n_heads)])
    if denominators is None:
        denominators = n_tokens.to(torch.float64)
    selected = set(range(n_heads) if heads is None else heads) if select_fn else set()

    rows: list[torch.Tensor] = []
    row_targets: list[torch.Tensor] = []
    valids: list[torch.Tensor] = []
    groups: list[RowGroup] = []
    start = 0
    for k in range(n_heads):
        valid = head_view(mask, k)  # [B, T-k]: positions t whose target t+k is real
        valids.append(valid)
        rows.append(hiddens[k][:, : seqlen - k][valid])
        row_targets.append(head_view(targets, k)[valid])
        n_k = rows[-1].shape[0]
        w_full = _weights_for(weights, k)
        w = None if w_full is None else head_view(w_full, k)[valid].detach()
        denom = denominators[k].to(torch.float64)
        if k in selected:
            groups.append(
                RowGroup(
                    start,
                    start + n_k,
                    coef_fn=_selection(k, valid, w, select_fn, loss_scale, (bsz, seqlen)),
                )
            )
        else:
            coef = torch.full((n_k,), loss_scale, dtype=torch.float64, device=targets.device)
            if w is not None:
                coef = coef * w.to(torch.float64)
            coef = torch.where(denom > 0, coef / denom.clamp_min(1e-30), torch.zeros_like(coef))
            groups.append(RowGroup(start, start + n_k, coef=coef))
        start += n_k

    hidden_rows = torch.cat(rows) if rows else output_weight.new_zeros(0, output_weight.shape[1])
    all_targets = torch.cat(row_targets)
    loss, ce_rows, coef_rows = linear_cross_entropy(
        hidden_rows, output_weight, all_targets, groups, chunk_size=chunk_size
    )

    head_losses = torch.zeros(n_heads, dtype=torch.float64, device=targets.device)
    ce_full: list[torch.Tensor] = []
    for k, group in enumerate(groups):
        part = slice(group.start, group.stop)
        contribution = (ce_rows[part].double() * coef_rows[part].double()).sum()
        head_losses[k] = contribution / loss_scale if loss_scale else contribution
        full = torch.zeros(bsz, seqlen, dtype=ce_rows.dtype, device=targets.device)
        head_view(full, k)[valids[k]] = ce_rows[part]
        ce_full.append(full)
    return MTPLossOutput(loss=loss, head_losses=head_losses, n_tokens=n_tokens, ce=ce_full)


def _selection(
    k: int,
    valid: torch.Tensor,
    w: torch.Tensor | None,
    select_fn: SelectFn,
    loss_scale: float,
    shape: tuple[int, int],
):
    """The coefficient rule of a selected head: scatter its row losses to target alignment,
    let ``select_fn`` choose weights and denominator, gather them back to rows."""

    def coef_fn(ce_rows: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(shape, dtype=ce_rows.dtype, device=ce_rows.device)
        valid_full = torch.zeros(shape, dtype=torch.bool, device=ce_rows.device)
        head_view(full, k)[valid] = ce_rows
        head_view(valid_full, k)[...] = valid
        chosen, denom = select_fn(k, full, valid_full)
        denom = torch.as_tensor(denom, dtype=torch.float64, device=ce_rows.device)
        row_w = head_view(chosen, k)[valid].to(torch.float64)
        if w is not None:
            row_w = row_w * w.to(torch.float64)
        coef = row_w * loss_scale
        return torch.where(denom > 0, coef / denom.clamp_min(1e-30), torch.zeros_like(coef))

    return coef_fn
