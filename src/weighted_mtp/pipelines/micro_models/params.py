"""Typed parameters of the micro_models pipeline (``params:micro_models.*``).

Kedro builds these from ``conf/base/parameters_micro_models.yml`` (and ``--params``) for the
nodes annotated with them and validates them when the run starts, before any node runs; the
architecture checks are the model's own (:class:`~weighted_mtp.models.args.ModelArgs`), so a
shape the model would refuse is refused here first.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from weighted_mtp.models.args import ModelArgs, ModelArgsError


class _Strict(BaseModel):
    # Unknown keys are typos (``micro_models.mtp.n_layer``): refuse them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class MicroMTPParams(_Strict):
    """Architecture of the micro MTP policy (``ModelArgs`` fields but the vocabulary, which
    comes from the tokenizer), its init seed and stored dtype."""

    dim: int = Field(256, ge=2)
    n_layers: int = Field(6, ge=1)
    n_heads: int = Field(8, ge=1)
    n_kv_heads: int | None = Field(None, ge=1)
    n_future_tokens: int = Field(4, ge=1)
    multiple_of: int = Field(64, ge=1)
    ffn_dim_multiplier: float | None = Field(None, gt=0)
    norm_eps: float = Field(1e-5, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    max_seq_len: int = Field(1024, ge=8)
    seed: int = Field(0, ge=0)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @model_validator(mode="after")
    def _a_valid_model(self) -> MicroMTPParams:
        try:
            # The vocabulary plays no part in these checks; the tokenizer's is used later.
            self.model_args(vocab_size=2)
        except ModelArgsError as exc:
            raise ValueError(str(exc)) from None
        return self

    def model_args(self, vocab_size: int) -> ModelArgs:
        """The ``ModelArgs`` of this architecture with the tokenizer's ``vocab_size``."""
        return ModelArgs(
            dim=self.dim,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            vocab_size=vocab_size,
            multiple_of=self.multiple_of,
            ffn_dim_multiplier=self.ffn_dim_multiplier,
            norm_eps=self.norm_eps,
            rope_theta=self.rope_theta,
            n_future_tokens=self.n_future_tokens,
            max_seq_len=self.max_seq_len,
        )


class MicroReferenceParams(_Strict):
    """How the micro Rho-1 reference (a ``LlamaForCausalLM``) is made.

    ``init: base_model`` (default): the pretrained base model's trunk and head 0 converted to a
    ``LlamaForCausalLM`` (``model_io.reference.causal_lm_from_mtp``); the rho1 pipeline then
    tunes it on correct solutions, so it starts where the policy starts and ends ahead of it
    on those solutions, as Rho-1's reference is (the architecture fields below are unused).
    ``init: random``: a random model of the architecture below, seeded (a reference weaker
    than the policy: Rho-1's premise fails; kept for comparison).
    """

    init: Literal["base_model", "random"] = "base_model"
    dim: int = Field(128, ge=2)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(4, ge=1)
    n_kv_heads: int | None = Field(None, ge=1)
    intermediate_size: int | None = Field(None, ge=1)
    norm_eps: float = Field(1e-5, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    max_seq_len: int = Field(1024, ge=8)
    seed: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _heads_fit(self) -> MicroReferenceParams:
        # What LlamaAttention needs: whole heads, an even head size for RoPE, and query heads
        # grouped evenly over the key/value heads.
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"head_dim={self.dim // self.n_heads} must be even for RoPE")
        kv_heads = self.n_kv_heads or self.n_heads
        if self.n_heads % kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not divisible by n_kv_heads={kv_heads}")
        return self
