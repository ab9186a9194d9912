"""AdamW with decay only on matrices, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based): linear
    warmup over ``warmup_steps`` (from 1/warmup), then cosine decay to ``min_ratio`` at
    ``max_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters in two groups: matrices and embeddings decay; norms, biases and
    other vectors do not (their scale is not a capacity to regularise)."""
    decay, no_decay = [], []
    for _, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.dim() >= 2 else no_decay).append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not groups:
        raise ValueError("no trainable parameter: the method froze everything")
    return groups


def build_optimizer(
    module: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float]
) -> torch.optim.Optimizer:
    # foreach: one kernel per group instead of one per tensor; works with FSDP2's DTensors.
    return torch.optim.AdamW(
        param_groups(module, weight_decay), lr=lr, betas=betas, eps=1e-8, foreach=True
    )
