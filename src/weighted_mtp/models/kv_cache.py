"""Key/value cache for incremental decoding with :class:`MTPTransformer`.

One pair of ``[B, n_kv_heads, max_len, head_dim]`` buffers per transformer block: the trunk
blocks first, then the head blocks (head 0 = ``layers[-1]``, then ``extra_heads``), so that
self-speculative decoding can run every head at drafted positions.

The cache keeps no length: a call writes slots ``start_pos .. start_pos+T-1`` and reads slots
``[0, start_pos+T)``, so rolling back after a rejected draft is just calling again with a
smaller ``start_pos`` (the stale slots past it are overwritten or never read).
"""

from __future__ import annotations

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
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_blocks)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_blocks)]
        self.batch_size = batch_size
        self.max_len = max_len

    @property
    def n_blocks(self) -> int:
        return len(self.keys)

    @property
    def dtype(self) -> torch.dtype:
        return self.keys[0].dtype

    @property
    def device(self) -> torch.device:
        return self.keys[0].device

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
        self.keys[block][:, :, start_pos:end] = keys
        self.values[block][:, :, start_pos:end] = values
        return self.keys[block][:, :, :end], self.values[block][:, :, :end]

    def select_rows(self, index: torch.Tensor) -> KVCache:
        """A new cache holding rows ``index`` (``[B']`` long) of this one, e.g. to drop
        finished sequences from a batched generation."""
        new = object.__new__(KVCache)
        new.keys = [k.index_select(0, index) for k in self.keys]
        new.values = [v.index_select(0, index) for v in self.values]
        new.batch_size = int(index.numel())
        new.max_len = self.max_len
        return new
