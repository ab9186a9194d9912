"""The Rho-1 reference model: a frozen Hugging Face causal LM read from a local directory.

Rho-1 compares the policy's token loss with the reference's for the same target token, so the
two must share a vocabulary: a reference whose ``vocab_size`` differs from the policy's is
refused before its weights are read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from weighted_mtp.model_io.model_dir import (
    HF_CONFIG_FILE,
    ModelDirectoryError,
    ModelFileNotFoundError,
    local_model_dir,
    parse_dtype,
    tokenizer_bytes,
    write_directory_atomically,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from weighted_mtp.models.transformer import MTPTransformer

logger = logging.getLogger(__name__)


class ReferenceVocabMismatchError(ModelDirectoryError):
    """The reference model's vocabulary differs from the policy's."""


class ReferenceModel(nn.Module):
    """A frozen causal LM exposing per-token logits and log-probabilities.

    Parameters never require grad and the module stays in eval mode; calls run under
    ``torch.no_grad`` (not ``inference_mode``: the results are combined with policy losses
    that autograd records).
    """

    def __init__(self, model: PreTrainedModel, source: str = "<memory>") -> None:
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.source = source
        super().train(False)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    def train(self, mode: bool = True) -> ReferenceModel:
        # Frozen: dropout and friends never switch on, whatever a caller's .train() does.
        super().train(False)
        return self

    @torch.no_grad()
    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``tokens [B, T]`` (and optional ``attention_mask [B, T]``, 1 = real token) ->
        logits ``[B, T, V]``: position t predicts token t+1."""
        return self.model(input_ids=tokens, attention_mask=attention_mask, use_cache=False).logits

    def logits(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Same as calling the module: logits ``[B, T, V]``."""
        return self(tokens, attention_mask)

    def log_probs(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Log-probabilities ``[B, T, V]`` (float32 whatever the model dtype)."""
        return F.log_softmax(self(tokens, attention_mask).float(), dim=-1)

    def token_log_probs(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``log p(targets[b, t] | tokens[b, :t+1])`` as ``[B, T]`` float32; targets outside
        ``[0, V)`` (e.g. an ignore index of -100) give 0."""
        logp = self.log_probs(tokens, attention_mask)
        valid = (targets >= 0) & (targets < logp.shape[-1])
        picked = logp.gather(-1, targets.clamp(0, logp.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
        return picked.masked_fill(~valid, 0.0)


# Meta (LLaMA release) block names -> Hugging Face LlamaDecoderLayer names.
_META_TO_HF_LAYER = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def _permute_qk(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Meta's interleaved RoPE rows (re0, im0, re1, im1, ...) of each head -> HF's (real
    parts, imaginary parts), the permutation of HF's LLaMA conversion script."""
    out_dim, in_dim = weight.shape
    half = out_dim // n_heads // 2
    return weight.view(n_heads, half, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def causal_lm_from_mtp(
    model: MTPTransformer,
    *,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> PreTrainedModel:
    """Head 0 of an MTP model as the ``LlamaForCausalLM`` a Rho-1 reference is: the trunk
    blocks then head 0's block (``layers`` in order), the shared final norm and unembedding.
    Its logits equal the MTP model's head-0 logits; the extra heads are left out.

    This is how the micro reference starts from the pretrained base model: Rho-1's reference
    is a model like the policy's start, tuned on the high-quality data (here the correct
    solutions), so that it predicts them better than the policy does.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    args = model.args
    config = LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.dim,
        intermediate_size=args.ffn_hidden_dim,
        num_hidden_layers=len(model.layers),
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_seq_len,
        rms_norm_eps=args.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta},
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    meta = model.state_dict()
    hf: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": meta["tok_embeddings.weight"],
        "model.norm.weight": meta["norm.weight"],
        "lm_head.weight": meta["output.weight"],
    }
    for i in range(len(model.layers)):
        for meta_name, hf_name in _META_TO_HF_LAYER.items():
            weight = meta[f"layers.{i}.{meta_name}.weight"]
            if meta_name == "attention.wq":
                weight = _permute_qk(weight, args.n_heads)
            elif meta_name == "attention.wk":
                weight = _permute_qk(weight, args.kv_heads)
            hf[f"model.layers.{i}.{hf_name}.weight"] = weight
    # HF initialises from the global RNG before the weights are overwritten: leave it as it was.
    with torch.random.fork_rng(devices=[]):
        causal_lm = LlamaForCausalLM(config)
    causal_lm.to(next(model.parameters()).dtype)
    causal_lm.load_state_dict(hf, strict=True)
    return causal_lm.eval()


def load_reference_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    expected_vocab_size: int | None = None,
) -> ReferenceModel:
    """Load a local Hugging Face causal-LM directory (``config.json`` + safetensors).

    Args:
        path: local directory (remote ones: ``HFModelDirectory.load`` copies them first).
        device: where the model ends up.
        dtype: ``"bfloat16"``, ``torch.float32``...; None keeps the checkpoint's dtype.
        expected_vocab_size: the policy's vocabulary size; a different ``vocab_size`` in
            ``config.json`` raises :class:`ReferenceVocabMismatchError` before loading weights.

    Returns:
        A frozen :class:`ReferenceModel` in eval mode.
    """
    # Imported here: transformers takes seconds to import and the Kedro datasets that import
    # this module should not pay for it in every run.
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    if not (path / HF_CONFIG_FILE).is_file():
        raise ModelFileNotFoundError(f"{path}/{HF_CONFIG_FILE} does not exist")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    vocab = getattr(config, "vocab_size", None)
    if expected_vocab_size is not None and vocab != expected_vocab_size:
        raise ReferenceVocabMismatchError(
            f"{path}/{HF_CONFIG_FILE}: reference vocab_size {vocab} differs from the policy's "
            f"{expected_vocab_size}; Rho-1 compares losses token by token, so both models need "
            f"the same tokenizer"
        )
    target = parse_dtype(dtype)
    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, dtype=target if target is not None else "auto"
    )
    embed_rows = model.get_input_embeddings().weight.shape[0]
    if expected_vocab_size is not None and embed_rows != expected_vocab_size:
        raise ReferenceVocabMismatchError(
            f"{path}: embedding has {embed_rows} rows, expected {expected_vocab_size}"
        )
    model.to(device)
    logger.info("reference model %s: %s, vocab %d", path, type(model).__name__, vocab)
    return ReferenceModel(model, source=str(path))


def save_reference_model(
    model: PreTrainedModel,
    out_dir: str | os.PathLike,
    *,
    tokenizer: bytes | str | os.PathLike | Any | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """``save_pretrained`` (safetensors; transformers 5 writes nothing else) into ``out_dir``,
    local or fsspec URL, atomically; ``tokenizer`` (SentencePiece) is added as
    ``tokenizer.model``. ``config.json`` is the commit file on object stores."""
    proto = tokenizer_bytes(tokenizer) if tokenizer is not None else None

    def fill(directory: Path) -> None:
        model.save_pretrained(directory)
        if proto is not None:
            (directory / "tokenizer.model").write_bytes(proto)

    return write_directory_atomically(
        out_dir, fill, commit_file=HF_CONFIG_FILE, storage_options=storage_options
    )


@dataclass(frozen=True)
class HFModelDirectory:
    """A light handle on a Hugging Face model directory (``HFModelDirectoryDataset.load``)."""

    path: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    cache_dir: str | None = None

    def local_path(self) -> Path:
        """A local copy (the path itself when local)."""
        return local_model_dir(
            self.path, cache_dir=self.cache_dir, storage_options=self.storage_options
        )

    def load(
        self,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        expected_vocab_size: int | None = None,
    ) -> ReferenceModel:
        """:func:`load_reference_model` on a local copy of this directory."""
        return load_reference_model(self.local_path(), device, dtype, expected_vocab_size)
