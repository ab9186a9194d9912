"""Our model with one head equals Hugging Face's LlamaForCausalLM with the same weights.

This pins RoPE (Meta's interleaved pairs vs HF's rotate_half, bridged by the q/k row
permutation of HF's conversion script), RMSNorm, GQA attention and the SwiGLU MLP.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from weighted_mtp.models import ModelArgs, MTPTransformer


def _hf_to_meta_qk(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo HF's permutation: HF rows of a head are (all real parts, all imaginary parts),
    Meta's are interleaved (re0, im0, re1, im1, ...)."""
    out_dim, in_dim = weight.shape
    head_dim = out_dim // n_heads
    return weight.view(n_heads, 2, head_dim // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def hf_state_dict_to_meta(hf_sd: dict[str, torch.Tensor], args: ModelArgs) -> dict:
    meta = {
        "tok_embeddings.weight": hf_sd["model.embed_tokens.weight"],
        "norm.weight": hf_sd["model.norm.weight"],
        "output.weight": hf_sd["lm_head.weight"],
    }
    names = {
        "self_attn.q_proj": "attention.wq",
        "self_attn.k_proj": "attention.wk",
        "self_attn.v_proj": "attention.wv",
        "self_attn.o_proj": "attention.wo",
        "mlp.gate_proj": "feed_forward.w1",
        "mlp.down_proj": "feed_forward.w2",
        "mlp.up_proj": "feed_forward.w3",
        "input_layernorm": "attention_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for i in range(args.n_layers):
        for hf_name, meta_name in names.items():
            weight = hf_sd[f"model.layers.{i}.{hf_name}.weight"]
            if hf_name == "self_attn.q_proj":
                weight = _hf_to_meta_qk(weight, args.n_heads)
            elif hf_name == "self_attn.k_proj":
                weight = _hf_to_meta_qk(weight, args.kv_heads)
            meta[f"layers.{i}.{meta_name}.weight"] = weight
    return meta


def hf_config(args: ModelArgs) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=args.dim,
        intermediate_size=args.ffn_hidden_dim,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.kv_heads,
        rms_norm_eps=args.norm_eps,
        rope_theta=args.rope_theta,
        vocab_size=args.vocab_size,
        max_position_embeddings=args.max_seq_len,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )


@pytest.mark.parametrize("n_kv_heads", [None, 2], ids=["mha", "gqa"])
def test_logits_match_llama_for_causal_lm(n_kv_heads: int | None) -> None:
    torch.manual_seed(0)
    args = ModelArgs(
        dim=64,
        n_layers=3,
        n_heads=4,
        n_kv_heads=n_kv_heads,
        vocab_size=96,
        multiple_of=16,
        n_future_tokens=1,
        rope_theta=500.0,  # small theta: the rotation matters at these short lengths
        norm_eps=1e-6,
        max_seq_len=64,
    )
    hf = LlamaForCausalLM(hf_config(args)).eval()
    # Random norm gains, so that a swapped or missing norm cannot go unnoticed.
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    ours = MTPTransformer(args).eval()
    missing = ours.load_state_dict(hf_state_dict_to_meta(hf.state_dict(), args), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys

    tokens = torch.randint(0, args.vocab_size, (2, 40))
    with torch.no_grad():
        expected = hf(input_ids=tokens).logits
        got = ours(tokens)
    assert got.shape == (2, 40, 1, args.vocab_size)
    torch.testing.assert_close(got[:, :, 0], expected, atol=1e-5, rtol=1e-5)
