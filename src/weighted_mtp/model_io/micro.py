"""Micro models for laptops and tests: a randomly initialised MTP model and a tiny LLaMA
reference, both seeded and independent of the global RNG."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from weighted_mtp.models.args import ModelArgs
from weighted_mtp.models.transformer import MTPTransformer, RMSNorm

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM

INIT_STD = 0.02


def init_mtp_weights(
    model: MTPTransformer, generator: torch.Generator, std: float = INIT_STD
) -> None:
    """GPT-2 style init: normal(0, std) everywhere, residual projections (``attention.wo``,
    ``feed_forward.w2``) scaled by ``1/sqrt(2 * depth)`` so that the residual stream's variance
    does not grow with depth; norm gains 1. ``depth`` counts the blocks on a path from the
    embedding to a head (trunk + one head block)."""
    depth = len(model.layers)
    residual_std = std / math.sqrt(2 * depth)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                scaled = name.endswith(("attention.wo", "feed_forward.w2"))
                module.weight.normal_(0.0, residual_std if scaled else std, generator=generator)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)


def build_micro_mtp(args: ModelArgs, seed: int = 0) -> MTPTransformer:
    """A randomly initialised ``MTPTransformer(args)`` (eval mode), identical for equal seeds,
    leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        model = MTPTransformer(args)
    generator = torch.Generator().manual_seed(seed)
    init_mtp_weights(model, generator)
    return model.eval()


def build_micro_reference(
    vocab_size: int,
    *,
    dim: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_seq_len: int = 1024,
    rope_theta: float = 10000.0,
    norm_eps: float = 1e-5,
    seed: int = 0,
    bos_token_id: int | None = 1,
    eos_token_id: int | None = 2,
    pad_token_id: int | None = None,
) -> LlamaForCausalLM:
    """A tiny randomly initialised ``LlamaForCausalLM`` (eval mode) sharing the policy's
    vocabulary, the Rho-1 reference for laptop runs. Save it with
    ``reference.save_reference_model`` (``save_pretrained``, safetensors).

    ``intermediate_size`` defaults to LLaMA's SwiGLU width for ``dim`` rounded to 16.
    """
    # Imported here: transformers takes seconds to import, and `kedro` imports this module
    # through the pipeline registry on every command.
    from transformers import LlamaConfig, LlamaForCausalLM

    if intermediate_size is None:
        intermediate_size = 16 * math.ceil(int(8 * dim / 3) / 16)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=dim,
        intermediate_size=intermediate_size,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads or n_heads,
        max_position_embeddings=max_seq_len,
        rms_norm_eps=norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        initializer_range=INIT_STD,
        tie_word_embeddings=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    # HF initialises from the global RNG: seed it in a forked state so callers' RNG is unchanged.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()
