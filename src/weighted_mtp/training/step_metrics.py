"""A training step's numbers: its metrics combined over ranks, its clipped global gradient
norm, and the check that its loss and norm stayed finite, kept on the device and read at the
loop's host-sync steps (:class:`FiniteGuard`)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from weighted_mtp.losses.metric_values import MetricValues
from weighted_mtp.training.distributed import WorldInfo


class NonFiniteLossError(FloatingPointError):
    """A loss part or the gradient norm became NaN or infinite."""


def reduce_metrics(values: MetricValues, world: WorldInfo) -> dict[str, float]:
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
    it only from :class:`FiniteGuard` at a host-sync step."""
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


def clipped_grad_norm(parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip and return the global gradient norm, a scalar on the device (not read here)."""
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
        norm = norm.full_tensor()
    return norm.detach()


class FiniteGuard:
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
