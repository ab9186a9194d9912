"""Nodes of the micro_models pipeline: build randomly initialised micro models sized to the
tokenizer's vocabulary. Parameters arrive as the dataclasses below (Kedro builds them from
``conf/base/parameters_micro_models.yml`` and validates them before anything runs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.model_io.micro import build_micro_mtp, build_micro_reference
from weighted_mtp.model_io.model_dir import ModelDirectoryContents
from weighted_mtp.models.args import ModelArgs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MicroMTPParams:
    """Architecture of the micro MTP policy (``ModelArgs`` fields but the vocabulary, which
    comes from the tokenizer), its init seed and stored dtype."""

    dim: int = 256
    n_layers: int = 6
    n_heads: int = 8
    n_kv_heads: int | None = None
    n_future_tokens: int = 4
    multiple_of: int = 64
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 1024
    seed: int = 0
    dtype: str = "float32"


@dataclass(frozen=True)
class MicroReferenceParams:
    """Architecture of the micro Rho-1 reference (a ``LlamaForCausalLM``) and its init seed."""

    dim: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    intermediate_size: int | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 1024
    seed: int = 1


def build_micro_mtp_model(tokenizer: Tokenizer, params: MicroMTPParams) -> ModelDirectoryContents:
    """A random micro MTP model with the tokenizer's vocabulary, ready to be written as a model
    directory (weights, ``params.json``, the tokenizer, ``metadata.json``)."""
    args = ModelArgs(
        dim=params.dim,
        n_layers=params.n_layers,
        n_heads=params.n_heads,
        n_kv_heads=params.n_kv_heads,
        vocab_size=tokenizer.vocab_size,
        multiple_of=params.multiple_of,
        ffn_dim_multiplier=params.ffn_dim_multiplier,
        norm_eps=params.norm_eps,
        rope_theta=params.rope_theta,
        n_future_tokens=params.n_future_tokens,
        max_seq_len=params.max_seq_len,
    )
    model = build_micro_mtp(args, seed=params.seed)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "micro-mtp: %d parameters, vocab %d, %d heads",
        n_params,
        args.vocab_size,
        args.n_future_tokens,
    )
    return ModelDirectoryContents(
        model=model,
        args=args,
        tokenizer=tokenizer,
        dtype=params.dtype,
        origin=f"micro_models:random-init seed={params.seed}",
    )


def build_micro_reference_model(
    tokenizer: Tokenizer, params: MicroReferenceParams
) -> tuple[nn.Module, Tokenizer]:
    """A random micro ``LlamaForCausalLM`` (annotated ``nn.Module`` so that Kedro can read the
    hints without importing transformers) with the tokenizer's vocabulary and special ids, and
    the tokenizer to store beside it (``HFModelDirectoryDataset`` writes both)."""
    model = build_micro_reference(
        tokenizer.vocab_size,
        dim=params.dim,
        n_layers=params.n_layers,
        n_heads=params.n_heads,
        n_kv_heads=params.n_kv_heads,
        intermediate_size=params.intermediate_size,
        max_seq_len=params.max_seq_len,
        rope_theta=params.rope_theta,
        norm_eps=params.norm_eps,
        seed=params.seed,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
    )
    logger.info(
        "micro-ref: %d parameters, vocab %d",
        sum(p.numel() for p in model.parameters()),
        tokenizer.vocab_size,
    )
    return model, tokenizer
