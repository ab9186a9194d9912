"""The one place where label alignment, the ignore index and head offsets are defined.

Every producer and consumer of training targets uses these names: the collator
(:mod:`weighted_mtp.data.collator`), the MTP loss (:mod:`weighted_mtp.losses`), the weighting
maths (:mod:`weighted_mtp.weighting`) and the training methods.

The convention (ARCHITECTURE.md, "Model contract"):

- The collator returns ``labels [B, T]`` aligned with ``input_ids`` (Hugging Face style):
  ``labels[b, t] == input_ids[b, t]`` on output tokens and the final EOS, ``IGNORE_INDEX`` on
  the prompt (BOS included) and on padding.
- :func:`shift_labels` gives the *target view* ``targets [B, T]``: ``targets[:, t]`` is the
  token that position ``t`` predicts with head 0, i.e. ``labels[:, t+1]`` (``IGNORE_INDEX`` in
  the last column). ``target_mask(targets)`` is True from the last prompt position to the
  position whose target is the final EOS: the ``mask`` of ``td_errors``/``rho1_mask``.
- Head ``k`` at position ``t`` predicts token ``t+k+1``, whose target sits at index ``t+k`` of
  the target view; it uses the weight and mask at ``t+k``. :func:`head_view` returns
  ``x[:, k:]``, the slice of a target-aligned tensor that lines up with positions
  ``0 .. T-k-1`` of head ``k``.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
"""Label/target value of positions that carry no loss (prompt, padding, past the end)."""


def shift_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Unshifted ``labels [B, T]`` -> ``targets [B, T]`` with ``targets[:, t] = labels[:, t+1]``
    and ``ignore_index`` in the last column."""
    if labels.dim() != 2:
        raise ValueError(f"labels must be [B, T], got shape {tuple(labels.shape)}")
    targets = torch.full_like(labels, ignore_index)
    targets[:, :-1] = labels[:, 1:]
    return targets


def target_mask(targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``[B, T]`` bool: True where the target view holds a real token (the TD/Rho-1 mask)."""
    return targets != ignore_index


def head_view(x: torch.Tensor, k: int) -> torch.Tensor:
    """The part of a target-aligned ``[B, T, ...]`` tensor that head ``k`` reads, aligned with
    its positions ``0 .. T-k-1``: ``x[:, k:]``."""
    if k < 0:
        raise ValueError(f"head index must be >= 0, got {k}")
    return x[:, k:]


def head_valid_counts(targets: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Valid target tokens per head, ``[n_heads]`` long: head ``k`` counts ``mask[:, k:]``."""
    mask = target_mask(targets)
    return torch.stack([head_view(mask, k).sum() for k in range(n_heads)])
