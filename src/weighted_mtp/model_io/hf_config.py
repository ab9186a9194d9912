"""Hugging Face LLaMA -> Meta: ``config.json`` to ``ModelArgs``, HF weight names to Meta's.

Hugging Face directories may hold Meta key names, or HF LLaMA names
(``model.layers.N.self_attn.q_proj.weight``...), which are renamed and whose q/k rows are
un-permuted back to Meta's interleaved RoPE layout. Extra MTP heads keep Meta names
(``extra_heads.N...``) in either case.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from weighted_mtp.models.args import ModelArgs, ModelArgsError

_HF_LAYER_NAMES = {
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
_HF_TOP_NAMES = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
_HF_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.weight$")

HF_EMBEDDING_KEY = "model.embed_tokens.weight"
"""A key only HF-named weights have: its presence tells HF names from Meta names."""


# --------------------------------------------------------------------------- architecture
def _ffn_args_for(dim: int, intermediate_size: int, source: str) -> dict[str, Any]:
    """``multiple_of``/``ffn_dim_multiplier`` for which ``ModelArgs.ffn_hidden_dim`` equals HF's
    ``intermediate_size`` (LLaMA-2 7B: 11008 = 256 * ceil(10922 / 256), multiplier None)."""
    base = int(2 * (4 * dim) / 3)  # as ModelArgs.ffn_hidden_dim
    for multiple in (256, 128, 64, 32, 16, 8, 4, 2, 1):
        if multiple * -(-base // multiple) == intermediate_size:
            return {"multiple_of": multiple, "ffn_dim_multiplier": None}
    # +0.5 so that int(multiplier * base) lands on intermediate_size despite float rounding.
    multiplier = (intermediate_size + 0.5) / base
    if int(multiplier * base) != intermediate_size:
        raise ModelArgsError(f"{source}: no ffn_dim_multiplier gives {intermediate_size}")
    return {"multiple_of": 1, "ffn_dim_multiplier": multiplier}


def args_from_hf_config(config: Mapping[str, Any], *, source: str = "config.json") -> ModelArgs:
    """Map a Hugging Face LLaMA ``config.json`` to ``ModelArgs``.

    ``n_future_tokens`` (not a HF field) defaults to 1; ``rope_theta`` is read at the top level
    (transformers 4) or in ``rope_parameters`` (transformers 5). RoPE scaling, biases and
    activations other than SiLU do not exist in Meta's model and are refused.
    """
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    for key in required + ("intermediate_size",):
        if key not in config:
            raise ModelArgsError(f"{source}: missing '{key}'")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ModelArgsError(f"{source}: RoPE scaling {rope!r} is not supported")
    if config.get("hidden_act", "silu") != "silu":
        raise ModelArgsError(f"{source}: hidden_act must be 'silu', got {config['hidden_act']!r}")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise ModelArgsError(f"{source}: '{flag}: true' is not supported")
    dim, n_heads = config["hidden_size"], config["num_attention_heads"]
    if config.get("head_dim") not in (None, dim // n_heads):
        raise ModelArgsError(f"{source}: head_dim {config['head_dim']} != hidden_size / heads")
    raw: dict[str, Any] = {
        "dim": dim,
        "n_layers": config["num_hidden_layers"],
        "n_heads": n_heads,
        "n_kv_heads": config.get("num_key_value_heads"),
        "vocab_size": config["vocab_size"],
        "norm_eps": config.get("rms_norm_eps", 1e-5),
        "rope_theta": config.get("rope_theta", rope.get("rope_theta", 10000.0)),
        "n_future_tokens": config.get("n_future_tokens", 1),
    }
    if "max_position_embeddings" in config:
        raw["max_seq_len"] = config["max_position_embeddings"]
    if "multiple_of" in config:
        raw["multiple_of"] = config["multiple_of"]
        raw["ffn_dim_multiplier"] = config.get("ffn_dim_multiplier")
    else:
        raw.update(_ffn_args_for(dim, config["intermediate_size"], source))
    args = ModelArgs.from_dict(raw, source=source)
    if args.ffn_hidden_dim != config["intermediate_size"]:
        raise ModelArgsError(
            f"{source}: intermediate_size {config['intermediate_size']} does not match "
            f"multiple_of/ffn_dim_multiplier (gives {args.ffn_hidden_dim})"
        )
    return args


# --------------------------------------------------------------------------- HF key names
def meta_key_name(key: str) -> str:
    """Meta name of a HF LLaMA key (keys without a HF name, e.g. ``extra_heads.*``, unchanged)."""
    if key in _HF_TOP_NAMES:
        return _HF_TOP_NAMES[key]
    match = _HF_LAYER_RE.match(key)
    if match and match.group(2) in _HF_LAYER_NAMES:
        return f"layers.{match.group(1)}.{_HF_LAYER_NAMES[match.group(2)]}.weight"
    return key


def _unpermute_qk(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo HF's q/k row permutation: HF groups a head's rows as (real parts, imaginary parts);
    Meta interleaves them (re0, im0, re1, im1, ...)."""
    out_dim, in_dim = weight.shape
    half = out_dim // n_heads // 2
    return weight.view(n_heads, 2, half, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def hf_to_meta_state_dict(
    state: Mapping[str, torch.Tensor], args: ModelArgs
) -> dict[str, torch.Tensor]:
    """Rename HF LLaMA keys to Meta's and un-permute q/k (the inverse of HF's conversion)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = meta_key_name(key)
        if key.endswith("self_attn.q_proj.weight"):
            tensor = _unpermute_qk(tensor, args.n_heads)
        elif key.endswith("self_attn.k_proj.weight"):
            tensor = _unpermute_qk(tensor, args.kv_heads)
        out[name] = tensor
    return out
