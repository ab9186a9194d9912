"""Key/value cache for incremental decoding with :class:`MTPTransformer`.

One pair of ``[B, n_kv_heads, max_len, head_dim]`` buffers per transformer block: the trunk
blocks first, then the head blocks (head 0 = ``layers[-1]``, then ``extra_heads``), so that
``forward(return_all_heads=True)`` can run every head at drafted positions. (Self-speculative
decoding of an :class:`MTPTransformer` keeps the heads' keys/values in
:class:`weighted_mtp.evaluation.stacked_heads.StackedHeads` and uses this cache for the trunk.)

The cache keeps no length: a call writes slots ``start_pos .. start_pos+T-1`` and reads slots
``[0, start_pos+T)``, so rolling back after a rejected draft is just calling again with a
smaller ``start_pos`` (the stale slots past it are overwritten or never read).

A block's buffers are allocated (zero-filled) on its first write: plain decoding runs head 0
only, so the extra heads' buffers of an MTP model are never allocated, filled or copied by
:meth:`KVCache.select_rows`.
"""

from __future__ import annotations

import copy

import torch


class KVCache:
    """Pre-allocated keys and values of every block (trunk then heads).

    Args:
        n_blocks: number of cached blocks (trunk blocks + head blocks).
        batch_size: rows of the batch the cache serves.
        max_len: number of slots (positions) per row.
        n_kv_heads: key/value heads per block (GQA).
        head_dim: size of one attention head.
        device: where the buffers live.
        dtype: buffer dtype; must equal the dtype of the model's activations.
    """

    def __init__(
        self,
        n_blocks: int,
        batch_size: int,
        max_len: int,
        n_kv_heads: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"batch_size and max_len must be >= 1, got {batch_size}, {max_len}")
        self.keys: list[torch.Tensor | None] = [None] * n_blocks
        self.values: list[torch.Tensor | None] = [None] * n_blocks
        self.batch_size = batch_size
        self.max_len = max_len
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim
        self.device = torch.device(device) if device is not None else torch.empty(0).device
        self.dtype = dtype

    @property
    def n_blocks(self) -> int:
        return len(self.keys)

    def _buffers(self, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[block], self.values[block]
        if keys is None or values is None:
            # Zero-filled, as if allocated up front: a slot read before any write (a head
            # that did not run on the prompt) holds zeros, never garbage that could be NaN.
            shape = (self.batch_size, self.n_kv_heads, self.max_len, self.head_dim)
            keys = torch.zeros(shape, device=self.device, dtype=self.dtype)
            values = torch.zeros(shape, device=self.device, dtype=self.dtype)
            self.keys[block], self.values[block] = keys, values
        return keys, values

    def update(
        self, block: int, start_pos: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``keys``/``values`` ``[B, n_kv_heads, T, head_dim]`` at slots
        ``start_pos .. start_pos+T-1`` of ``block``; return the views of slots
        ``[0, start_pos+T)``, each ``[B, n_kv_heads, start_pos+T, head_dim]``.
        """
        end = start_pos + keys.shape[2]
        if start_pos < 0 or end > self.max_len:
            raise ValueError(
                f"KV cache of {self.max_len} slots cannot hold positions [{start_pos}, {end})"
            )
        if keys.shape[0] != self.batch_size:
            raise ValueError(
                f"KV cache was built for batch size {self.batch_size}, got {keys.shape[0]}"
            )
        cached_keys, cached_values = self._buffers(block)
        cached_keys[:, :, start_pos:end] = keys
        cached_values[:, :, start_pos:end] = values
        return cached_keys[:, :, :end], cached_values[:, :, :end]

    def select_rows(self, index: torch.Tensor) -> KVCache:
        """A new cache holding rows ``index`` (``[B']`` long) of this one, e.g. to drop
        finished sequences from a batched generation."""
        new = copy.copy(self)
        new.keys = [None if k is None else k.index_select(0, index) for k in self.keys]
        new.values = [None if v is None else v.index_select(0, index) for v in self.values]
        new.batch_size = int(index.numel())
        return new
