"""Fused unembedding + cross-entropy whose peak memory holds one chunk of logits, not all.

``sum_i coef_i * CE(hidden_i @ weight.T, target_i)`` over the rows of every head at once. The
forward pass computes, chunk by chunk, the logits, the per-row loss and the gradients with
respect to ``hidden`` and ``weight``, and keeps only the gradients (``[N, dim]`` and
``[V, dim]``); backward scales them by the incoming gradient. This is the idea of Liger's fused
linear cross-entropy and of Cut Cross-Entropy, and it is what lets the MTP loss live behind a
module's ``forward`` (one forward and one backward per micro-batch, so DDP and FSDP2 see an
ordinary module) while holding about one head's logits at a time (Gloeckle et al. 2024).

Rows come in *groups* (one per MTP head). A group may carry a ``coef_fn``: the row
coefficients are then computed from the group's per-row losses (Rho-1 keeps the top-k% by
excess loss, which depends on the policy's loss). Such a group is processed in one piece: its
logits are computed once, the coefficients chosen, and the gradients taken from the same
logits, so selection costs no second unembedding (memory: that group's logits).

Numerics: logits and softmax in float32 at least (float64 inputs stay float64); the weight
gradient accumulates in that precision and is cast to the weight's dtype at the end.

Why not ``torch.nn.functional.linear_cross_entropy`` (torch 2.13, chunked through
``LinearCrossEntropyOptions``): its scalar reductions take no per-token weights (``weight`` is
per class), so TD weights and Rho-1's selection need ``reduction="none"``, whose backward
recomputes each chunk's logits from the saved inputs (four ``[n, V]`` matmuls per chunk where
this module does three). In ``benchmarks/training_step.py`` (one MTP step: dim 256, vocab
32000, 4 x 512 tokens, chunk 1024, float32, 1 thread, on a shared 2-core CPU; two runs), torch's
with per-token weights ran at 0.88x the tokens/s of this module with 1.04-1.07x its step peak:
outside the 5% that would let it replace this one. Its ``reduction="sum"`` ran at 1.19-1.51x the
tokens/s with 1.03-1.15x the peak, but serves the unweighted baseline only. Numbers and
commands: ``docs/benchmarks/training.md``, "torch's linear_cross_entropy".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

CoefFn = Callable[[torch.Tensor], torch.Tensor]
"""Per-row losses ``[n]`` (detached, float) of a group -> per-row coefficients ``[n]``."""


@dataclass(frozen=True)
class RowGroup:
    """``stop - start`` consecutive rows of the input that share a coefficient rule.

    Attributes:
        start, stop: row range.
        coef: ``[stop - start]`` coefficients, or None when ``coef_fn`` computes them.
        coef_fn: see :data:`CoefFn`; exclusive with ``coef``.
    """

    start: int
    stop: int
    coef: torch.Tensor | None = None
    coef_fn: CoefFn | None = None


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (h @ weight.T).to(dtype)


def _ce_of(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row CE of ``logits [n, V]``, and ``logits`` turned IN PLACE into the unnormalised
    ``exp(logits - max)``, with the row sums ``[n]``: one pass over the chunk, no second
    chunk-sized buffer (``torch.logsumexp`` would allocate one and exponentiate again)."""
    row_max = logits.amax(dim=-1, keepdim=True)
    picked = logits.gather(1, target[:, None]).squeeze(1) - row_max.squeeze(1)
    logits.sub_(row_max).exp_()
    sums = logits.sum(dim=-1)
    return torch.log(sums) - picked, sums


def _softmax_grad_(
    exp_logits: torch.Tensor, sums: torch.Tensor, target: torch.Tensor, coef: torch.Tensor
) -> torch.Tensor:
    """In place: ``exp(logits - max)`` -> ``coef * (softmax(logits) - onehot(target))``."""
    exp_logits.mul_((coef / sums)[:, None])
    rows = torch.arange(len(target), device=exp_logits.device)
    exp_logits[rows, target] -= coef
    return exp_logits


def _run(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    groups: Sequence[RowGroup],
    chunk_size: int,
    need_hidden_grad: bool,
    need_weight_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Loss sum, per-row CE, per-row coefficients and (optionally) both gradients."""
    dtype = _compute_dtype(hidden.dtype)
    n_rows = hidden.shape[0]
    ce_all = torch.zeros(n_rows, dtype=dtype, device=hidden.device)
    coef_all = torch.zeros(n_rows, dtype=dtype, device=hidden.device)
    grad_h = torch.zeros_like(hidden) if need_hidden_grad else None
    grad_w = (
        torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_weight_grad else None
    )
    need_grad = need_hidden_grad or need_weight_grad

    def backprop(lo: int, hi: int, exp_logits: torch.Tensor, sums: torch.Tensor) -> None:
        g = _softmax_grad_(exp_logits, sums, targets[lo:hi], coef_all[lo:hi])
        if grad_h is not None:
            grad_h[lo:hi] = (g.to(weight.dtype) @ weight).to(grad_h.dtype)
        if grad_w is not None:
            grad_w.addmm_(g.T, hidden[lo:hi].to(dtype))

    for group in groups:
        # An empty group with a coef_fn still calls it: the rule may hold a collective that
        # every rank must enter (Rho-1's global threshold).
        if group.stop <= group.start and group.coef_fn is None:
            continue
        if group.coef_fn is None:
            if group.coef is None:
                raise ValueError("a RowGroup needs coef or coef_fn")
            coef_all[group.start : group.stop] = group.coef.to(dtype)
            for lo in range(group.start, group.stop, chunk_size):
                hi = min(lo + chunk_size, group.stop)
                logits = _chunk_logits(hidden[lo:hi], weight, dtype)
                ce, sums = _ce_of(logits, targets[lo:hi])
                ce_all[lo:hi] = ce
                if need_grad:
                    backprop(lo, hi, logits, sums)
                del logits
            continue
        # Coefficients depend on the group's losses: keep its logits until they are known.
        pieces = []
        for lo in range(group.start, group.stop, chunk_size):
            hi = min(lo + chunk_size, group.stop)
            logits = _chunk_logits(hidden[lo:hi], weight, dtype)
            ce, sums = _ce_of(logits, targets[lo:hi])
            ce_all[lo:hi] = ce
            pieces.append((lo, hi, logits, sums))
        coef = group.coef_fn(ce_all[group.start : group.stop].clone())
        coef_all[group.start : group.stop] = coef.to(dtype)
        if need_grad:
            for lo, hi, logits, sums in pieces:
                backprop(lo, hi, logits, sums)
        del pieces

    loss = (ce_all * coef_all).sum()
    return loss, ce_all, coef_all, grad_h, grad_w


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        groups: Sequence[RowGroup],
        chunk_size: int,
    ):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        loss, ce, coef, grad_h, grad_w = _run(
            hidden, weight, targets, groups, chunk_size, need_h, need_w
        )
        ctx.save_for_backward(
            grad_h if grad_h is not None else torch.empty(0),
            grad_w.to(weight.dtype) if grad_w is not None else torch.empty(0),
        )
        ctx.has = (grad_h is not None, grad_w is not None)
        ctx.mark_non_differentiable(ce, coef)
        return loss, ce, coef

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_coef):  # type: ignore[override]
        grad_h, grad_w = ctx.saved_tensors
        has_h, has_w = ctx.has
        # The saved gradients are this function's own buffers, used once: scale in place
        # instead of allocating copies of [N, dim] and [V, dim].
        out_h = grad_h.mul_(grad_loss.to(grad_h.dtype)) if has_h else None
        out_w = grad_w.mul_(grad_loss.to(grad_w.dtype)) if has_w else None
        return out_h, out_w, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    groups: Sequence[RowGroup],
    *,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sum_i coef_i * CE(hidden_i @ weight.T, targets_i)`` with chunked, fused gradients.

    Args:
        hidden: ``[N, dim]`` rows (e.g. every head's normed hidden states at its valid
            positions, concatenated head after head).
        weight: ``[V, dim]`` the unembedding (``model.output.weight``).
        targets: ``[N]`` long, all in ``[0, V)``.
        groups: row ranges covering the rows that carry a loss, with their coefficients.
        chunk_size: rows of logits materialised at once (groups with ``coef_fn`` are held
            whole).

    Returns:
        ``(loss, ce, coef)``: ``loss`` scalar in the graph (float32, float64 for float64
        inputs); ``ce [N]`` and ``coef [N]`` detached, 0 on rows outside every group.

    When autograd is off or neither input requires grad, no gradient is computed.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden [N, dim] and weight [V, dim] expected, got {tuple(hidden.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets must be [N]={hidden.shape[0]}, got {tuple(targets.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, groups, chunk_size)
    with torch.no_grad():
        loss, ce, coef, _, _ = _run(hidden, weight, targets, groups, chunk_size, False, False)
    return loss, ce, coef
