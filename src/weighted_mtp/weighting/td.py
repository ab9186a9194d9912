"""TD-error token weights (the ``verifiable`` method). Pure tensor math, no I/O.

Alignment (see docs/contracts.md): position ``t`` holds the prediction of token ``t+1`` and
``mask[t]`` is True when that token belongs to the output. ``values[t]`` is ``V(s_t)``, the
value head read at position ``t``.
"""

from __future__ import annotations

import torch


def _check_shapes(values: torch.Tensor, mask: torch.Tensor) -> None:
    if values.dim() != 2:
        raise ValueError(f"values must be [B, T], got shape {tuple(values.shape)}")
    if mask.shape != values.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match values shape {tuple(values.shape)}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")


def last_masked_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True position of each row, ``[B]`` (-1 for an all-False row)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, torch.full_like(positions, -1)).amax(dim=1)


def td_errors(
    values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0
) -> torch.Tensor:
    """One-step TD errors with zero intermediate reward and a terminal reward.

    ``delta_t = gamma * V(s_{t+1}) - V(s_t)`` for masked ``t`` before the row's last masked
    position ``T_b``, and ``delta_{T_b} = R_b - V(s_{T_b})``. Values are detached: the
    errors only weight the policy loss, they never train the value head.

    Args:
        values: ``[B, T]`` value estimates.
        rewards: ``[B]`` final rewards (1.0 for a correct solution, 0.0 otherwise).
        mask: ``[B, T]`` bool, True on output positions.
        gamma: discount factor.

    Returns:
        ``[B, T]`` TD errors in the dtype of ``values``, 0 where ``mask`` is False.
    """
    _check_shapes(values, mask)
    if rewards.shape != values.shape[:1]:
        raise ValueError(f"rewards must be [B]={values.shape[0]}, got {tuple(rewards.shape)}")
    v = values.detach()
    next_v = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)
    positions = torch.arange(v.shape[1], device=v.device).unsqueeze(0)
    is_terminal = positions == last_masked_index(mask).unsqueeze(1)
    target = torch.where(is_terminal, rewards.to(v.dtype).unsqueeze(1), gamma * next_v)
    return torch.where(mask, target - v, torch.zeros_like(v))


def td_weights(
    td: torch.Tensor,
    mask: torch.Tensor,
    beta: float = 0.9,
    w_min: float = 0.1,
    w_max: float = 5.0,
) -> torch.Tensor:
    """Per-token weights ``clamp(exp(td / beta), w_min, w_max)``, 0 where ``mask`` is False.

    Args:
        td: ``[B, T]`` TD errors (from :func:`td_errors`).
        mask: ``[B, T]`` bool, True on output positions.

    Returns:
        ``[B, T]`` weights, detached.
    """
    _check_shapes(td, mask)
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0 <= w_min <= w_max:
        raise ValueError(f"need 0 <= w_min <= w_max, got w_min={w_min}, w_max={w_max}")
    # exp may overflow to inf for large td / small beta; the clamp maps inf to w_max.
    weights = torch.exp(td.detach() / beta).clamp(w_min, w_max)
    return torch.where(mask, weights, torch.zeros_like(weights))
