"""Multi-token-prediction loss, computed head by head (Gloeckle et al. 2024, Fig. 2).

Alignment (docs/contracts.md): ``targets [B, T]`` is the shifted view, ``targets[:, t]`` is
token ``t+1`` (the target of head 0 at position ``t``) or ``IGNORE_INDEX`` where no loss is
wanted (prompt, padding, past the end); ``mask = targets != IGNORE_INDEX``. Per-token weights
``[B, T]`` use the same alignment. Head ``k`` at position ``t`` predicts token ``t+k+1``: its
target is ``targets[:, t+k]``, its weight ``weights[:, t+k]``, and it carries a loss only when
``t+k < T`` and ``mask[:, t+k]``.

Normalisation: head ``k``'s loss is ``sum(w * ce) / n_k`` over its valid tokens, with ``n_k``
the number of valid tokens (``normalize="count"``, default) or the sum of their weights
(``normalize="weight"``: a weighted mean, e.g. Rho-1's mean over kept tokens with 0/1
weights). Heads are summed (``head_reduction="sum"``, default: Gloeckle et al.'s
``L_n = sum_i CE_i``, so a 1-head model gets the usual next-token loss) or averaged
(``"mean"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from weighted_mtp.models.transformer import MTPTransformer

IGNORE_INDEX = -100

WeightsArg = torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None


@dataclass
class MTPLossOutput:
    """Loss values of one batch.

    ``loss``: scalar, the MTP objective (without ``extra_loss`` and ``loss_scale``);
    ``head_losses [n_heads]``: each head's normalised loss; ``n_tokens [n_heads]``: valid
    target tokens per head; ``extra_loss``: scalar from ``extra_loss_fn`` or None.
    :func:`mtp_loss_head_by_head` returns them detached (its backward already ran);
    :func:`mtp_loss_naive` returns ``loss`` and ``extra_loss`` attached to the graph.
    """

    loss: torch.Tensor
    head_losses: torch.Tensor
    n_tokens: torch.Tensor
    extra_loss: torch.Tensor | None = None


def shift_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """HF-style ``labels [B, T]`` (aligned with the input tokens, ``ignore_index`` on prompt and
    padding) -> ``targets [B, T]`` in the shifted view used here (last column ignored)."""
    targets = torch.full_like(labels, ignore_index)
    targets[:, :-1] = labels[:, 1:]
    return targets


def _check_inputs(
    tokens: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, n_heads: int
) -> None:
    if tokens.dim() != 2 or targets.shape != tokens.shape:
        raise ValueError(
            f"tokens and targets must both be [B, T]; got {tuple(tokens.shape)} and "
            f"{tuple(targets.shape)}"
        )
    if weights is not None and weights.shape not in (
        tuple(tokens.shape),
        (*tokens.shape, n_heads),
    ):
        raise ValueError(
            f"weights must be [B, T] or [B, T, {n_heads}] = {tuple(tokens.shape)}(+heads), "
            f"got {tuple(weights.shape)}"
        )


def _head_weights(weights: torch.Tensor | None, k: int) -> torch.Tensor | None:
    """Head ``k``'s weights in target alignment ``[B, T]`` (from ``[B, T]`` or ``[B, T, n]``)."""
    if weights is None or weights.dim() == 2:
        return weights
    return weights[..., k]


def _ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Softmax statistics in float32 at least, whatever the model dtype.
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, target, reduction="none")


def mtp_loss_head_by_head(
    model: MTPTransformer,
    tokens: torch.Tensor,
    targets: torch.Tensor,
    weights: WeightsArg = None,
    *,
    positions: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    extra_loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    head_weights_fn: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    normalize: Literal["count", "weight"] = "count",
    head_reduction: Literal["sum", "mean"] = "sum",
    loss_scale: float = 1.0,
    chunk_size: int | None = 1024,
) -> MTPLossOutput:
    """Forward AND backward of the MTP loss with one head's logits alive at a time.

    The trunk runs once; its output is detached. For each head ``k``: the head block runs on
    the detached trunk output, the shared ``norm`` + ``output`` run only on the rows of the
    head's valid targets (in chunks of ``chunk_size`` rows, each chunk's backward freeing its
    logits), then the head block's backward accumulates into the detached trunk output's
    gradient. Finally one trunk backward runs with the accumulated gradient. Parameter
    gradients equal those of :func:`mtp_loss_naive` (``loss_scale * (loss + extra_loss)``);
    ``.grad`` fields are accumulated into, not reset. Under ``torch.no_grad()`` only the
    values are computed.

    Args:
        model: the bare :class:`MTPTransformer` (not a DDP/FSDP wrapper's outer module).
        tokens: ``[B, T]`` input ids.
        targets: ``[B, T]`` long, ``targets[:, t]`` = token ``t+1`` or ``IGNORE_INDEX``
            (see :func:`shift_labels`).
        weights: per-target-token weights, ``[B, T]`` shared by the heads or ``[B, T, n]`` per
            head (head ``k`` reads index ``t+k``); or a callable given head 0's detached normed
            hidden ``[B, T, dim]`` that returns such a tensor (TD weights from the value head
            without a second forward). None = 1.
        positions: ``[B, T]`` RoPE positions (see ``MTPTransformer.forward``).
        key_padding_mask: bool ``[B, T]``, False = padding key never attended.
        extra_loss_fn: auxiliary loss on head 0's normed hidden ``[B, T, dim]`` (in the graph),
            returning a scalar; its gradient flows through head 0 and the trunk (value loss).
        head_weights_fn: ``(k, ce) -> w``: given head ``k``'s detached per-token CE ``[B, T]``
            (target-aligned, 0 where invalid), return ``[B, T]`` weights multiplying
            ``weights`` for that head (Rho-1 selection). Costs one extra no-grad
            unembedding of the head's valid rows.
        normalize: divide each head's weighted sum by its valid-token count or weight sum.
        head_reduction: ``"sum"`` or ``"mean"`` of the per-head losses.
        loss_scale: multiplies the gradient (e.g. ``1 / grad_accum_steps``), not the values.
        chunk_size: rows of logits materialised at once (None = all valid rows of a head).

    Returns:
        :class:`MTPLossOutput`, detached.
    """
    n_heads = model.n_future_tokens
    static_weights = weights if isinstance(weights, torch.Tensor) else None
    _check_inputs(tokens, targets, static_weights, n_heads)
    grad = torch.is_grad_enabled()
    bsz, seqlen = tokens.shape
    mask = targets != IGNORE_INDEX
    head_coef = 1.0 if head_reduction == "sum" else 1.0 / n_heads

    ctx = model.attention_context(
        bsz, seqlen, positions=positions, key_padding_mask=key_padding_mask
    )
    trunk_out = model.trunk_forward(tokens, ctx=ctx)  # [B, T, dim]
    trunk_leaf = trunk_out.detach().requires_grad_(grad)
    # Loss arithmetic in float32 at least; float64 models keep float64 (not hard-coded: MPS
    # has no float64).
    loss_dtype = torch.promote_types(trunk_out.dtype, torch.float32)

    head_losses = torch.zeros(n_heads, dtype=loss_dtype, device=tokens.device)
    n_tokens = torch.zeros(n_heads, dtype=torch.long, device=tokens.device)
    extra_value: torch.Tensor | None = None
    for k in range(n_heads):
        hidden = model.head_forward(k, trunk_leaf, ctx=ctx)  # [B, T, dim], normed
        extra = None
        if k == 0:
            if callable(weights):
                # Weights are never trained through: detach whatever the callable built.
                static_weights = weights(hidden.detach()).detach()
                _check_inputs(tokens, targets, static_weights, n_heads)
            if extra_loss_fn is not None:
                extra = extra_loss_fn(hidden)
                extra_value = extra.detach()

        # Head k at position t reads target/weight index t+k: shift the targets, not logits.
        valid = mask[:, k:]  # [B, T-k]
        rows = hidden[:, : seqlen - k][valid]  # [N, dim], only rows that carry a loss
        target = targets[:, k:][valid]  # [N]
        w_full = _head_weights(static_weights, k)
        w = None if w_full is None else w_full[:, k:][valid].to(loss_dtype)  # [N]
        n_rows = rows.shape[0]
        n_tokens[k] = n_rows
        step = chunk_size or max(n_rows, 1)

        if head_weights_fn is not None and n_rows:
            with torch.no_grad():
                ce = torch.cat(
                    [
                        _ce(model.output(rows[i : i + step]), target[i : i + step])
                        for i in range(0, n_rows, step)
                    ]
                )
                ce_full = torch.zeros(valid.shape, dtype=ce.dtype, device=ce.device)
                ce_full[valid] = ce
                ce_full = F.pad(ce_full, (k, 0))  # back to target alignment [B, T]
                selected = head_weights_fn(k, ce_full)[:, k:][valid].to(loss_dtype)
            w = selected if w is None else w * selected

        denom = (
            float(n_rows) if normalize == "count" else float(w.sum()) if w is not None else n_rows
        )
        rows_leaf = rows.detach().requires_grad_(grad)
        weighted_sum = torch.zeros((), dtype=loss_dtype, device=tokens.device)
        if denom > 0:
            coef = loss_scale * head_coef / denom
            for i in range(0, n_rows, step):
                ce = _ce(model.output(rows_leaf[i : i + step]), target[i : i + step])
                chunk_sum = ce.sum() if w is None else (ce * w[i : i + step]).sum()
                if grad:
                    (chunk_sum * coef).backward()
                weighted_sum += chunk_sum.detach()
            head_losses[k] = weighted_sum / denom

        if grad:
            outputs: list[torch.Tensor] = []
            grads: list[torch.Tensor | None] = []
            if rows_leaf.grad is not None:
                outputs.append(rows)
                grads.append(rows_leaf.grad)
            if extra is not None:
                outputs.append(extra * loss_scale)
                grads.append(None)
            if outputs:
                torch.autograd.backward(outputs, grads)

    if grad and trunk_leaf.grad is not None:
        trunk_out.backward(trunk_leaf.grad)
    total = head_losses.sum() * head_coef
    return MTPLossOutput(
        loss=total.to(loss_dtype),
        head_losses=head_losses,
        n_tokens=n_tokens,
        extra_loss=extra_value,
    )


def mtp_loss_naive(
    model: MTPTransformer,
    tokens: torch.Tensor,
    targets: torch.Tensor,
    weights: WeightsArg = None,
    *,
    positions: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    extra_loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    normalize: Literal["count", "weight"] = "count",
    head_reduction: Literal["sum", "mean"] = "sum",
) -> MTPLossOutput:
    """Reference: all heads' logits ``[B, T, n, V]`` at once, plain autograd.

    Same arguments and semantics as :func:`mtp_loss_head_by_head` (no ``head_weights_fn``);
    ``loss`` and ``extra_loss`` are returned attached: call ``(loss + extra_loss).backward()``.
    """
    n_heads = model.n_future_tokens
    static_weights = weights if isinstance(weights, torch.Tensor) else None
    _check_inputs(tokens, targets, static_weights, n_heads)
    seqlen = tokens.shape[1]
    logits, hidden = model(
        tokens, positions=positions, key_padding_mask=key_padding_mask, return_hidden=True
    )
    if callable(weights):
        static_weights = weights(hidden.detach()).detach()
    extra = extra_loss_fn(hidden) if extra_loss_fn is not None else None
    losses = []
    counts = []
    for k in range(n_heads):
        head_logits = logits[:, : seqlen - k, k]  # [B, T-k, V]
        target = targets[:, k:]
        valid = target != IGNORE_INDEX
        ce = F.cross_entropy(
            head_logits.reshape(-1, head_logits.shape[-1]).float()
            if head_logits.dtype in (torch.float16, torch.bfloat16)
            else head_logits.reshape(-1, head_logits.shape[-1]),
            target.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view_as(target)
        w_full = _head_weights(static_weights, k)
        w = valid.to(ce.dtype) if w_full is None else w_full[:, k:].to(ce.dtype) * valid
        denom = valid.sum() if normalize == "count" else w.sum()
        losses.append((ce * w).sum() / denom if denom > 0 else ce.sum() * 0)
        counts.append(valid.sum())
    head_losses = torch.stack(losses)
    coef = 1.0 if head_reduction == "sum" else 1.0 / n_heads
    return MTPLossOutput(
        loss=head_losses.sum() * coef,
        head_losses=head_losses.detach(),
        n_tokens=torch.stack(counts),
        extra_loss=extra,
    )
