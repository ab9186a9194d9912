"""Meta's multi-token-prediction LLaMA in plain PyTorch.

Kept whole because it is one model, read top to bottom as Meta's and nanoGPT's model files are:
leaf-first, RMSNorm, RoPE helpers, attention, feed-forward, block, model. The parameter names
are Meta's (``tok_embeddings``, ``layers.N.attention.wq``, ``extra_heads.N...``, ``norm``,
``output``), so a released ``consolidated.pth`` loads without renaming.

Layout: ``layers`` holds ``n_layers - n_future_tokens + 1`` blocks; the trunk is
``layers[:-1]``; the heads are ``[layers[-1]] + extra_heads``, each a full block applied to the
trunk output; one shared final ``norm`` and ``output`` serve every head. Head ``k`` at
position ``t`` predicts token ``t+k+1``.

Shapes: B batch, T new tokens, S keys attended (``start_pos + T`` with a cache), H query heads,
Hkv key/value heads, D head size, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from weighted_mtp.models.args import ModelArgs
from weighted_mtp.models.kv_cache import KVCache

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def debug_args(**overrides: object) -> ModelArgs:
    """A tiny configuration (dim 64, 4 layers, GQA, 4 heads) for tests and examples."""
    base: dict[str, object] = dict(
        dim=64,
        n_layers=4,
        n_heads=4,
        n_kv_heads=2,
        vocab_size=128,
        multiple_of=16,
        n_future_tokens=4,
        max_seq_len=256,
    )
    base.update(overrides)
    return ModelArgs(**base)  # type: ignore[arg-type]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Root-mean-square norm over the last dimension with the gain ``weight``: ``[dim]``, or
    any shape that broadcasts against ``x`` (one gain per stacked head, ``[n, 1, dim]``)."""
    if x.dtype in _LOW_PRECISION:
        # Meta: normalise in float32, cast back, then apply the gain in the model dtype.
        xf = x.float()
        normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)
        return normed * weight
    if weight.dim() == 1:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return F.rms_norm(x, (x.shape[-1],), None, eps) * weight


class RMSNorm(nn.Module):
    """Root-mean-square norm; statistics in at least float32, as in Meta's code."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rope_tables(
    head_dim: int,
    max_seq_len: int,
    theta: float,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine of Meta's rotary angles, each ``[max_seq_len, head_dim // 2]``.

    Angle ``(p, i) = p * theta ** (-2i / head_dim)``; computed in float64 so that the table is
    exact to the table dtype even at large positions.
    """
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim)
    )
    angles = torch.outer(torch.arange(max_seq_len, device=device, dtype=torch.float64), inv_freq)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    rotation: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate ``x [B, T, H, D]`` by Meta's complex RoPE.

    Meta pairs adjacent features ``(x[2i], x[2i+1])`` as one complex number (HF's checkpoints
    permute q/k rows to pair ``i`` with ``i + D/2`` instead). ``cos``/``sin`` are
    ``[B or 1, T, 1, D/2]``; ``rotation = cos + i sin`` (same shape, complex), when given, takes
    the complex-multiply path, about 4x faster on CPU than the real one, which stays for
    devices without complex kernels. Low-precision inputs rotate in float32, as Meta does.
    """
    xf = x.float() if x.dtype in _LOW_PRECISION else x
    if rotation is not None:
        rotated = torch.view_as_real(torch.view_as_complex(xf.unflatten(-1, (-1, 2))) * rotation)
        return rotated.flatten(-2).type_as(x)
    even, odd = xf.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


@dataclass
class AttentionContext:
    """What every block of one forward call shares.

    ``cos``/``sin``: ``[B or 1, T, 1, D/2]``; ``rotation``: ``cos + i sin`` or None (devices
    without complex kernels); ``mask``: bool ``[B or 1, 1, T, S]`` (True =
    attend) or None; ``is_causal``: let SDPA apply the causal mask itself (only when S == T).
    """

    cos: torch.Tensor
    sin: torch.Tensor
    rotation: torch.Tensor | None
    mask: torch.Tensor | None
    is_causal: bool
    start_pos: int
    cache: KVCache | None


class Attention(nn.Module):
    """Multi-head self-attention with grouped-query heads and rotary positions."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_heads = args.n_heads
        self.n_kv_heads = args.kv_heads
        self.head_dim = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, block: int) -> torch.Tensor:
        """``x [B, T, dim]`` -> ``[B, T, dim]``; ``block`` is this block's cache index."""
        bsz, seqlen, _ = x.shape
        q = self.wq(x).view(bsz, seqlen, self.n_heads, self.head_dim)
        k = self.wk(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim)
        q = apply_rope(q, ctx.cos, ctx.sin, ctx.rotation).transpose(1, 2)  # [B, H, T, D]
        k = apply_rope(k, ctx.cos, ctx.sin, ctx.rotation).transpose(1, 2)  # [B, Hkv, T, D]
        v = v.transpose(1, 2)
        if ctx.cache is not None:
            k, v = ctx.cache.update(block, ctx.start_pos, k, v)  # [B, Hkv, S, D]
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=ctx.mask,
            is_causal=ctx.is_causal,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )
        return self.wo(out.transpose(1, 2).reshape(bsz, seqlen, -1))

    def cache_keys_values(self, x: torch.Tensor, ctx: AttentionContext, block: int) -> None:
        """Write the keys/values of ``x [B, T, dim]`` to ``ctx.cache`` without attending: for
        positions whose own outputs are never used (a head block on a prompt's prefix)."""
        if ctx.cache is None:
            raise ValueError("cache_keys_values needs a cache in the context")
        bsz, seqlen, _ = x.shape
        k = self.wk(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim)
        k = apply_rope(k, ctx.cos, ctx.sin, ctx.rotation).transpose(1, 2)
        ctx.cache.update(block, ctx.start_pos, k, v.transpose(1, 2))


class FeedForward(nn.Module):
    """LLaMA's SwiGLU MLP: ``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``h = x + attn(norm(x)); out = h + ffn(norm(h))``."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden_dim)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, block: int) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), ctx, block)
        return h + self.feed_forward(self.ffn_norm(h))


class MTPTransformer(nn.Module):
    """Meta's multi-token-prediction LLaMA: a shared trunk and ``n_future_tokens`` heads.

    Besides :meth:`forward`, :meth:`trunk_forward` and :meth:`head_forward` run the parts
    separately (the head-by-head loss uses them), and :meth:`new_cache` builds a KV cache that
    covers the trunk and every head.
    """

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        n_layer_blocks = args.n_layers - args.n_future_tokens + 1
        if n_layer_blocks < 1:
            raise ValueError(
                f"n_layers={args.n_layers} leaves no block for n_future_tokens="
                f"{args.n_future_tokens}"
            )
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(n_layer_blocks))
        self.extra_heads = nn.ModuleList(
            TransformerBlock(args) for _ in range(args.n_future_tokens - 1)
        )
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        cos, sin = rope_tables(args.head_dim, args.max_seq_len, args.rope_theta)
        # Non-persistent: not in the state dict, rebuilt by _apply after any .to()/.double().
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    # ----------------------------------------------------------------- bookkeeping
    @property
    def n_future_tokens(self) -> int:
        return self.args.n_future_tokens

    @property
    def n_trunk_blocks(self) -> int:
        return len(self.layers) - 1

    def head_block(self, k: int) -> TransformerBlock:
        """The block of head ``k`` (0 = ``layers[-1]``, k >= 1 = ``extra_heads[k-1]``)."""
        if not 0 <= k < self.n_future_tokens:
            raise IndexError(f"head {k} out of range for {self.n_future_tokens} heads")
        return self.layers[-1] if k == 0 else self.extra_heads[k - 1]  # type: ignore[return-value]

    def init_weights(self, std: float = 0.02) -> None:
        """Normal(0, std) for embeddings and projections, ones for norm gains (a from-scratch
        start; released checkpoints overwrite all of it)."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # A cast to bf16/fp16 must not quantise the RoPE tables (bf16 angles are wrong by whole
        # radians at position ~1000): rebuild them on the new device in float32, or float64
        # when the model itself became float64. Also makes meta-device init + to_empty work.
        module = super()._apply(fn, recurse)
        dtype = torch.float64 if self.rope_cos.dtype == torch.float64 else torch.float32
        cos, sin = rope_tables(
            self.args.head_dim,
            self.args.max_seq_len,
            self.args.rope_theta,
            device=self.rope_cos.device,
            dtype=dtype,
        )
        self.rope_cos, self.rope_sin = cos, sin
        return module

    def new_cache(
        self,
        batch_size: int,
        max_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty KV cache for ``batch_size`` rows of up to ``max_len`` positions, covering
        the trunk and all heads (defaults: the model's device and parameter dtype)."""
        if max_len > self.args.max_seq_len:
            raise ValueError(f"max_len={max_len} exceeds max_seq_len={self.args.max_seq_len}")
        weight = self.tok_embeddings.weight
        return KVCache(
            self.n_trunk_blocks + self.n_future_tokens,
            batch_size,
            max_len,
            self.args.kv_heads,
            self.args.head_dim,
            device=weight.device if device is None else device,
            dtype=weight.dtype if dtype is None else dtype,
        )

    # ----------------------------------------------------------------- attention context
    def attention_context(
        self,
        batch_size: int,
        seqlen: int,
        *,
        start_pos: int = 0,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> AttentionContext:
        """RoPE rows and attention mask shared by all blocks of one call (see :meth:`forward`)."""
        device = self.rope_cos.device
        if cache is None and start_pos != 0:
            raise ValueError("start_pos != 0 needs a cache (the earlier keys live there)")
        n_keys = start_pos + seqlen
        if positions is None:
            if n_keys > self.args.max_seq_len:
                raise ValueError(
                    f"positions up to {n_keys - 1} exceed max_seq_len={self.args.max_seq_len}"
                )
            cos = self.rope_cos[start_pos:n_keys][None, :, None, :]
            sin = self.rope_sin[start_pos:n_keys][None, :, None, :]
        else:
            if positions.shape != (batch_size, seqlen):
                raise ValueError(
                    f"positions must be [B, T] = {(batch_size, seqlen)}, "
                    f"got {tuple(positions.shape)}"
                )
            # Bounds check only where it costs no device sync.
            if positions.device.type == "cpu" and positions.numel():
                lo, hi = int(positions.min()), int(positions.max())
                if lo < 0 or hi >= self.args.max_seq_len:
                    raise ValueError(
                        f"positions in [{lo}, {hi}] outside [0, {self.args.max_seq_len})"
                    )
            cos = self.rope_cos[positions][:, :, None, :]
            sin = self.rope_sin[positions][:, :, None, :]

        # MPS lacks complex multiplication in some releases: use the real rotation there.
        rotation = None if cos.device.type == "mps" else torch.complex(cos, sin)

        if key_padding_mask is not None and key_padding_mask.shape != (batch_size, n_keys):
            raise ValueError(
                f"key_padding_mask must be [B, S] = {(batch_size, n_keys)}, "
                f"got {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask is None and start_pos == 0:
            # Plain causal attention: let SDPA pick its fused causal kernel.
            return AttentionContext(cos, sin, rotation, None, True, start_pos, cache)
        if key_padding_mask is None and seqlen == 1:
            # One new token attends to every slot written so far.
            return AttentionContext(cos, sin, rotation, None, False, start_pos, cache)
        query_slot = torch.arange(start_pos, n_keys, device=device)[:, None]  # [T, 1]
        key_slot = torch.arange(n_keys, device=device)[None, :]  # [1, S]
        mask = (key_slot <= query_slot)[None, None]  # [1, 1, T, S]
        if key_padding_mask is not None:
            # Each query may always see its own key: a padding query would otherwise see no
            # key at all, and SDPA's all -inf row gives NaN, which then leaks into every later
            # layer through 0 * NaN in the attention product.
            mask = (mask & key_padding_mask[:, None, None, :].to(device)) | (key_slot == query_slot)
        return AttentionContext(cos, sin, rotation, mask, False, start_pos, cache)

    def _context_for(
        self,
        x: torch.Tensor,
        ctx: AttentionContext | None,
        start_pos: int,
        cache: KVCache | None,
        positions: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
    ) -> AttentionContext:
        """``ctx`` when given, else :meth:`attention_context` for ``x``'s leading ``[B, T]``."""
        if ctx is not None:
            return ctx
        return self.attention_context(
            x.shape[0],
            x.shape[1],
            start_pos=start_pos,
            cache=cache,
            positions=positions,
            key_padding_mask=key_padding_mask,
        )

    # ----------------------------------------------------------------- forward passes
    def trunk_forward(
        self,
        tokens: torch.Tensor,
        *,
        start_pos: int = 0,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        ctx: AttentionContext | None = None,
    ) -> torch.Tensor:
        """Embeddings and trunk blocks: ``tokens [B, T]`` -> trunk output ``[B, T, dim]``
        (not normed). ``ctx`` (from :meth:`attention_context`) skips rebuilding the mask."""
        ctx = self._context_for(tokens, ctx, start_pos, cache, positions, key_padding_mask)
        h = self.tok_embeddings(tokens)
        for i in range(self.n_trunk_blocks):
            h = self.layers[i](h, ctx, i)
        return h

    def head_forward(
        self,
        k: int,
        trunk_out: torch.Tensor,
        *,
        start_pos: int = 0,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        ctx: AttentionContext | None = None,
    ) -> torch.Tensor:
        """Head ``k``'s block and the shared final norm: ``trunk_out [B, T, dim]`` -> normed
        hidden ``[B, T, dim]``; ``self.output`` of it gives head ``k``'s logits."""
        ctx = self._context_for(trunk_out, ctx, start_pos, cache, positions, key_padding_mask)
        return self.norm(self.head_block(k)(trunk_out, ctx, self.n_trunk_blocks + k))

    def head_prefill(self, k: int, trunk_out: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """Head ``k`` on a cached prompt whose output matters at its last position only:
        ``trunk_out [B, T, dim]`` -> normed hidden ``[B, dim]`` of the last position.

        A head block's output at a position feeds nothing but that position's logits, while
        its keys/values serve every later position. So the prefix writes only its keys and
        values to the cache (two projections instead of the whole block) and the block runs on
        the last position, attending to them. ``ctx`` (with a cache) is the one of the whole
        call, as :meth:`attention_context` builds it; the result equals ``head_forward`` at
        the last position up to float rounding.
        """
        if ctx.cache is None:
            raise ValueError("head_prefill needs a cache in the context")
        block, index = self.head_block(k), self.n_trunk_blocks + k
        seqlen = trunk_out.shape[1]

        def rows(start: int, stop: int) -> dict[str, torch.Tensor | None]:
            return {
                "cos": ctx.cos[:, start:stop],
                "sin": ctx.sin[:, start:stop],
                "rotation": None if ctx.rotation is None else ctx.rotation[:, start:stop],
            }

        if seqlen > 1:
            prefix = AttentionContext(
                **rows(0, seqlen - 1),  # type: ignore[arg-type]
                mask=None,
                is_causal=False,
                start_pos=ctx.start_pos,
                cache=ctx.cache,
            )
            normed = block.attention_norm(trunk_out[:, :-1])
            block.attention.cache_keys_values(normed, prefix, index)
        last = AttentionContext(
            **rows(seqlen - 1, seqlen),  # type: ignore[arg-type]
            # The last query of a causal call sees every key: its mask row, or none at all.
            mask=None if ctx.mask is None else ctx.mask[:, :, -1:],
            is_causal=False,
            start_pos=ctx.start_pos + seqlen - 1,
            cache=ctx.cache,
        )
        return self.norm(block(trunk_out[:, -1:], last, index))[:, 0]

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        start_pos: int = 0,
        cache: KVCache | None = None,
        return_all_heads: bool = True,
        return_hidden: bool = False,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits of every head (or head 0 only).

        Args:
            tokens: ``[B, T]`` token ids.
            start_pos: cache slot of ``tokens[:, 0]``; needs ``cache`` when non-zero.
            cache: from :meth:`new_cache`. Keys/values of ``tokens`` are written at slots
                ``start_pos .. start_pos+T-1`` and attention covers slots ``[0, start_pos+T)``
                causally. Only the heads that run write their slots: decode with
                ``return_all_heads=True`` throughout if heads 1.. will be needed later.
            return_all_heads: False runs head 0 only.
            return_hidden: also return head 0's normed hidden state (the value head input).
            positions: ``[B, T]`` RoPE positions (default ``start_pos + arange(T)``), e.g.
                ``cumsum(attention_mask) - 1`` for left-padded rows.
            key_padding_mask: bool ``[B, S]``, S = ``start_pos+T``; False marks keys that are
                never attended (padding).

        Returns:
            logits ``[B, T, n_future_tokens, V]`` (``[B, T, 1, V]`` with
            ``return_all_heads=False``), or ``(logits, hidden [B, T, dim])`` with
            ``return_hidden=True``.
        """
        ctx = self._context_for(tokens, None, start_pos, cache, positions, key_padding_mask)
        trunk_out = self.trunk_forward(tokens, ctx=ctx)
        n_heads = self.n_future_tokens if return_all_heads else 1
        hidden = [self.head_forward(k, trunk_out, ctx=ctx) for k in range(n_heads)]
        # One unembedding matmul for all heads: [B, T, n, dim] -> [B, T, n, V].
        stacked = hidden[0].unsqueeze(2) if n_heads == 1 else torch.stack(hidden, dim=2)
        logits = self.output(stacked)
        if return_hidden:
            return logits, hidden[0]
        return logits
