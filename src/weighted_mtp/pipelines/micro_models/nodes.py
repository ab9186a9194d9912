"""Nodes of the micro_models pipeline: build a randomly initialised micro MTP model sized to the
tokenizer's vocabulary, pretrain it into the embedded default's base model, and derive the
Rho-1 reference from that base model. Parameters arrive as the pydantic models of :mod:`.params` (Kedro
builds them from ``conf/base/parameters_micro_models.yml`` and validates them before anything
runs).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from torch import nn

from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.micro import build_micro_mtp, build_micro_reference
from weighted_mtp.model_io.model_dir import ModelDirectoryContents
from weighted_mtp.model_io.reference import causal_lm_from_mtp
from weighted_mtp.models.args import ModelArgs
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.pipelines.micro_models.params import MicroMTPParams, MicroReferenceParams
from weighted_mtp.pipelines.training_nodes import train_policy
from weighted_mtp.training.config import PretrainParams

logger = logging.getLogger(__name__)

#: ``JobSpec.method`` of the micro base model's pretraining job.
PRETRAIN_METHOD = "pretrain"


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
    tokenizer: Tokenizer, params: MicroReferenceParams, base_model: ModelDirectory
) -> tuple[nn.Module, Tokenizer]:
    """The micro Rho-1 reference, a ``LlamaForCausalLM`` (annotated ``nn.Module`` so that Kedro
    can read the hints without importing transformers) with the tokenizer's vocabulary and
    special ids, and the tokenizer to store beside it (``HFModelDirectoryDataset`` writes
    both): ``base_model``'s trunk and head 0 (``params.init: base_model``) or a random model
    (``init: random``)."""
    special = {
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
    }
    if params.init == "base_model":
        policy = base_model.load()
        assert isinstance(policy, MTPTransformer)
        if policy.args.vocab_size != tokenizer.vocab_size:
            raise ValueError(
                f"{base_model.path}: vocab_size {policy.args.vocab_size} differs from the "
                f"tokenizer's {tokenizer.vocab_size}; rebuild base_model with this tokenizer"
            )
        model = causal_lm_from_mtp(policy, **special)
        logger.info(
            "micro-ref: %s's trunk + head 0 as a %d-layer causal LM (%d parameters)",
            base_model.path,
            model.config.num_hidden_layers,
            sum(p.numel() for p in model.parameters()),
        )
        return model, tokenizer
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
        **special,
    )
    logger.info(
        "micro-ref: %d parameters, vocab %d",
        sum(p.numel() for p in model.parameters()),
        tokenizer.vocab_size,
    )
    return model, tokenizer


def pretrain_micro_model(
    params: PretrainParams, *, init_model: ModelDirectory, **inputs: Any
) -> tuple[ModelDirectory, pd.DataFrame]:
    """Pretrain the random micro MTP model into the embedded default's ``base_model``.

    A released 7B_1T_4 has read a great deal of code before anyone fine-tunes it; a random
    micro model has read nothing, and every method compared downstream (above all the critic,
    whose value head reads a frozen trunk) assumes a trunk that already models code. This is
    one training job like the methods' (same launcher, loop and loss: uniform MTP), on the
    training split's rows as they come, correct or not, the way a code LM sees unfiltered code.
    With ``enabled: false`` the random model is the base model as it is.
    """
    if not params.enabled:
        logger.info(
            "micro-mtp pretraining disabled: %s is the base model as it is", init_model.path
        )
        return init_model, pd.DataFrame()
    return train_policy(PRETRAIN_METHOD, params, init_model=init_model, **inputs)
