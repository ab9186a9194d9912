"""What a method sees: the micro-batch (:class:`Batch`), the step-level facts and
collectives of its loss (:class:`LossContext`) and the training module (:class:`PolicyModule`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _own_part(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    return x, 0


@dataclass
class LossContext:
    """Step-level facts a micro-batch loss needs.

    Attributes:
        denominators: ``[n_heads]`` float64, each head's valid target tokens over the whole
            optimizer step (all micro-batches, all ranks).
        loss_scale: multiplies every loss (the world size: DDP/FSDP2 average gradients).
        n_micro: micro-batches in the step (gradient accumulation).
        all_gather: concatenates a 1-D tensor across ranks (rank order) and returns it with
            the offset of this rank's part in it.
        all_reduce_sum: sums a tensor across ranks.
        chunk_size: rows of logits alive at once.
        micro_counts: ``[n_micro, n_heads]`` float64, each micro-batch's valid target tokens
            per head summed over ranks (``denominators`` is their sum); None = the step is one
            micro-batch (``denominators``). Rho-1 derives its step's kept counts from it.
    """

    denominators: torch.Tensor
    loss_scale: float = 1.0
    n_micro: int = 1
    all_gather: Callable[[torch.Tensor], tuple[torch.Tensor, int]] = _own_part
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = _identity
    chunk_size: int = 1024
    micro_counts: torch.Tensor | None = None


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
