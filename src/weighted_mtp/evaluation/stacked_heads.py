"""The heads of an :class:`MTPTransformer` as one batched block, for self-speculative decoding.

Each MTP head is one transformer block on the trunk's output. Run one after another on the
few positions of a decoding step, ``n`` heads are ``n`` small blocks whose cost on a CPU (and
latency on a GPU) is mostly per-operation overhead, not arithmetic. With their weights
stacked along a leading head axis, each of the block's matrix products becomes one batched
``bmm`` and their attention one call over ``n`` batch rows: all heads cost about one block.

The stacks are copies made per decoding call (``speculative_generate_many`` makes them once
for all its prompts), so they never go stale if the model is trained afterwards. They take as
much memory as the heads' weights (7B_1T_4's 4 heads in bfloat16: about 1.6 GB), and the
heads' keys/values live here, not in the model's :class:`KVCache` (whose head buffers are
then never allocated).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weighted_mtp.models.transformer import (
    AttentionContext,
    MTPTransformer,
    apply_rope,
    rms_norm,
)


def _stack_t(weights: list[torch.Tensor]) -> torch.Tensor:
    """``[out, in]`` linear weights -> ``[n, in, out]`` for ``bmm(x [n, T, in], .)``."""
    return torch.stack([w.t() for w in weights]).contiguous()


class StackedHeads:
    """Heads ``0..n_heads-1`` of ``model`` with stacked weights and their own KV cache.

    Call :meth:`new_cache` for each sequence (batch 1), then :meth:`run` on the trunk output
    of the new positions of each step, in order.
    """

    @torch.no_grad()
    def __init__(self, model: MTPTransformer, n_heads: int) -> None:
        if not 1 <= n_heads <= model.n_future_tokens:
            raise ValueError(
                f"n_heads={n_heads}: expected 1..{model.n_future_tokens} for this model"
            )
        args = model.args
        blocks = [model.head_block(k) for k in range(n_heads)]
        attn = [b.attention for b in blocks]
        ffn = [b.feed_forward for b in blocks]
        self.model = model
        self.n_heads = n_heads
        self.n_q_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.kv_heads, args.head_dim
        self.eps = args.norm_eps
        self.wq = _stack_t([a.wq.weight for a in attn])
        self.wkv = _stack_t([torch.cat([a.wk.weight, a.wv.weight]) for a in attn])
        self.wo = _stack_t([a.wo.weight for a in attn])
        self.w13 = _stack_t([torch.cat([f.w1.weight, f.w3.weight]) for f in ffn])
        self.w2 = _stack_t([f.w2.weight for f in ffn])
        self.attention_norm = torch.stack([b.attention_norm.weight for b in blocks])[:, None]
        self.ffn_norm = torch.stack([b.ffn_norm.weight for b in blocks])[:, None]
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def new_cache(self, max_len: int) -> None:
        """Empty keys/values for one sequence of up to ``max_len`` positions."""
        shape = (self.n_heads, self.n_kv_heads, max_len, self.head_dim)
        self.keys = self.wq.new_zeros(shape)
        self.values = self.wq.new_zeros(shape)

    @torch.no_grad()
    def run(
        self, trunk_out: torch.Tensor, ctx: AttentionContext, *, last_only: bool
    ) -> torch.Tensor:
        """Every head on the trunk output of new positions ``[1, T, dim]`` -> normed hidden
        states ``[n_heads, T, dim]``, or ``[n_heads, 1, dim]`` at the last position with
        ``last_only`` (``model.output`` gives the logits).

        ``ctx`` is the attention context of exactly these ``T`` positions, as
        :meth:`MTPTransformer.attention_context` builds it. Every position's keys/values are
        written; with ``last_only`` the earlier positions run nothing else (a prompt, whose
        logits but the last would be thrown away).
        """
        if self.keys is None or self.values is None:
            raise RuntimeError("StackedHeads.run before new_cache")
        n, seqlen = self.n_heads, trunk_out.shape[1]
        start, end = ctx.start_pos, ctx.start_pos + seqlen
        x = trunk_out.expand(n, seqlen, trunk_out.shape[-1])
        normed = rms_norm(x, self.attention_norm, self.eps)
        kv = torch.bmm(normed, self.wkv).unflatten(-1, (2, self.n_kv_heads, self.head_dim))
        keys = apply_rope(kv[:, :, 0], ctx.cos, ctx.sin, ctx.rotation)
        self.keys[:, :, start:end] = keys.transpose(1, 2)
        self.values[:, :, start:end] = kv[:, :, 1].transpose(1, 2)
        rows = slice(seqlen - 1, seqlen) if last_only else slice(0, seqlen)
        query = torch.bmm(normed[:, rows], self.wq).unflatten(-1, (self.n_q_heads, self.head_dim))
        rotation = None if ctx.rotation is None else ctx.rotation[:, rows]
        query = apply_rope(query, ctx.cos[:, rows], ctx.sin[:, rows], rotation)
        # The last query sees every key: no mask. Several queries follow the call's own mask
        # (or SDPA's causal one), broadcast over the heads.
        several = not last_only and seqlen > 1
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2),
            self.keys[:, :, :end],
            self.values[:, :, :end],
            attn_mask=ctx.mask if several else None,
            is_causal=ctx.is_causal and several,
            enable_gqa=self.n_kv_heads != self.n_q_heads,
        )  # [n, H, T or 1, D]
        h = x[:, rows] + torch.bmm(out.transpose(1, 2).flatten(-2), self.wo)
        gate, up = torch.bmm(rms_norm(h, self.ffn_norm, self.eps), self.w13).chunk(2, dim=-1)
        h = h + torch.bmm(F.silu(gate) * up, self.w2)
        return self.model.norm(h)
