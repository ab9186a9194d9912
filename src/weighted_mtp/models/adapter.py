"""The adapter: a model directory (local path or fsspec URL) to a ready ``MTPTransformer``.

``load_model`` is the public entry point (ARCHITECTURE.md). It reads the architecture from
``params.json`` (Meta) or a Hugging Face ``config.json``, checks the safetensors headers against
the model (every key, shape and dtype, before any tensor is read), verifies the SHA256 sums of
``metadata.json`` when present, and builds the model on the meta device so that a 7B checkpoint
is never held twice in memory. Remote directories are first copied to a local cache.

Hugging Face directories may hold Meta key names, or HF LLaMA names
(``model.layers.N.self_attn.q_proj.weight``...), which are renamed and whose q/k rows are
un-permuted back to Meta's interleaved RoPE layout. Extra MTP heads keep Meta names
(``extra_heads.N...``) in either case.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from weighted_mtp.models.args import ModelArgs, ModelArgsError
from weighted_mtp.models.checkpoint import (
    HF_CONFIG_FILE,
    INDEX_FILE,
    METADATA_FILE,
    PARAMS_FILE,
    TOKENIZER_FILE,
    VALUE_HEAD_PREFIX,
    WEIGHTS_FILE,
    DtypeMismatchError,
    MissingKeyError,
    ModelDirectoryError,
    ModelFileNotFoundError,
    ShapeMismatchError,
    StoredTensor,
    UnexpectedKeyError,
    dtype_name,
    local_model_dir,
    open_fs,
    parse_dtype,
    read_json_file,
    read_metadata,
    read_state_dict,
    read_weight_index,
    verify_checksums,
)
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.models.value_head import ValueHead

logger = logging.getLogger(__name__)

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


def read_model_args(
    model_dir: str | os.PathLike, storage_options: Mapping[str, Any] | None = None
) -> ModelArgs:
    """``ModelArgs`` from ``params.json``, else from a HF ``config.json``."""
    fs, root = open_fs(model_dir, storage_options)
    if fs.exists(f"{root}/{PARAMS_FILE}"):
        label = f"{model_dir}/{PARAMS_FILE}"
        return ModelArgs.from_dict(read_json_file(fs, f"{root}/{PARAMS_FILE}", label), source=label)
    if fs.exists(f"{root}/{HF_CONFIG_FILE}"):
        label = f"{model_dir}/{HF_CONFIG_FILE}"
        return args_from_hf_config(
            read_json_file(fs, f"{root}/{HF_CONFIG_FILE}", label), source=label
        )
    raise ModelFileNotFoundError(f"{model_dir}: neither {PARAMS_FILE} nor {HF_CONFIG_FILE} exists")


# --------------------------------------------------------------------------- HF key names
def _meta_name(key: str) -> str:
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
        name = _meta_name(key)
        if key.endswith("self_attn.q_proj.weight"):
            tensor = _unpermute_qk(tensor, args.n_heads)
        elif key.endswith("self_attn.k_proj.weight"):
            tensor = _unpermute_qk(tensor, args.kv_heads)
        out[name] = tensor
    return out


# --------------------------------------------------------------------------- checks
def _check_stored_weights(
    stored: Mapping[str, StoredTensor],
    expected: Mapping[str, torch.Size],
    *,
    model_dir: str,
    stored_dtype: str | None,
    sharded: bool,
) -> None:
    """Keys, shapes and dtypes of the files (Meta names) against the model's state dict."""
    where = INDEX_FILE if sharded else WEIGHTS_FILE
    for key, shape in expected.items():
        if key not in stored:
            raise MissingKeyError(
                f"{model_dir}: weight {key!r} (shape {tuple(shape)}) is missing from {where}"
            )
        info = stored[key]
        if info.shape != tuple(shape):
            raise ShapeMismatchError(
                f"{model_dir}/{info.file}: {key!r} has shape {info.shape}, "
                f"the model expects {tuple(shape)}"
            )
    for key, info in stored.items():
        if key not in expected and not key.startswith(VALUE_HEAD_PREFIX):
            raise UnexpectedKeyError(
                f"{model_dir}/{info.file}: unexpected weight {key!r} (not in the model built "
                f"from its params)"
            )
        if isinstance(info.dtype, str):
            raise DtypeMismatchError(
                f"{model_dir}/{info.file}: {key!r} has unsupported dtype {info.dtype}"
            )
        if (
            stored_dtype is not None
            and info.dtype.is_floating_point
            and dtype_name(info.dtype) != stored_dtype
        ):
            raise DtypeMismatchError(
                f"{model_dir}/{info.file}: {key!r} is {dtype_name(info.dtype)}, "
                f"{METADATA_FILE} says {stored_dtype}"
            )


def _materialise(model: torch.nn.Module) -> None:
    """Give buffers still on the meta device (the non-persistent RoPE tables) real storage;
    ``MTPTransformer._apply`` then recomputes them on the next ``.to()``."""
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.is_meta:
                module._buffers[name] = torch.empty_like(buf, device="cpu")


# --------------------------------------------------------------------------- entry point
def load_model(
    model_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    with_value_head: bool = False,
    *,
    verify: bool = True,
    cache_dir: str | os.PathLike | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> MTPTransformer | tuple[MTPTransformer, ValueHead]:
    """Load a model directory into a ready ``MTPTransformer`` (eval mode).

    Args:
        model_dir: local path or fsspec URL (``s3://bucket/models/x``); remote directories are
            copied to ``cache_dir`` (default ``checkpoint.default_cache_dir()``) first.
        device: where the model ends up.
        dtype: cast floating weights to it (``"bfloat16"``, ``torch.float32``...); None keeps
            the stored dtype.
        with_value_head: also return the value head (see Returns).
        verify: check the SHA256 sums of ``metadata.json`` when the directory has one.
        storage_options: fsspec options (credentials, ``client_kwargs.endpoint_url``).

    Returns:
        The model; with ``with_value_head=True`` the tuple ``(model, value_head)``: the value
        head is a separate module (not attached to the model) so that the model's state dict
        keeps Meta's keys. A directory without ``value_head.*`` weights gives a freshly
        initialised head (normal, std 0.02) and a warning: that is how the critic starts from
        the base model.

    Raises:
        ModelFileNotFoundError: params/config, weights, index or a shard is missing.
        MissingKeyError / UnexpectedKeyError / ShapeMismatchError / DtypeMismatchError: the
            weights do not fit the architecture; the message names the key and the file.
        ChecksumMismatchError: a file differs from its SHA256 in ``metadata.json``.
    """
    source = str(model_dir)
    local = local_model_dir(model_dir, cache_dir=cache_dir, storage_options=storage_options)
    args = read_model_args(local)
    metadata = read_metadata(local)
    if verify and metadata is not None:
        verify_checksums(local, metadata)
    raw_index = read_weight_index(local)
    hf_names = "model.embed_tokens.weight" in raw_index
    stored = {_meta_name(k): v for k, v in raw_index.items()} if hf_names else dict(raw_index)

    with torch.device("meta"):
        model = MTPTransformer(args)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    tied = hf_names and "output.weight" not in stored and _tied_embeddings(local)
    if tied:
        stored["output.weight"] = stored["tok_embeddings.weight"]
    _check_stored_weights(
        stored,
        expected,
        model_dir=source,
        stored_dtype=(metadata or {}).get("dtype"),
        sharded=(local / INDEX_FILE).exists(),
    )

    tensors = read_state_dict(local)
    if hf_names:
        tensors = hf_to_meta_state_dict(tensors, args)
    if tied:
        tensors["output.weight"] = tensors["tok_embeddings.weight"]
    head_state = {
        k[len(VALUE_HEAD_PREFIX) :]: tensors.pop(k)
        for k in list(tensors)
        if k.startswith(VALUE_HEAD_PREFIX)
    }
    model.load_state_dict(tensors, strict=True, assign=True)
    _materialise(model)
    target = parse_dtype(dtype)
    model.to(device=device, dtype=target)
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise ModelDirectoryError(f"{source}: tensors left uninitialised: {still_meta}")
    model.eval()
    if not with_value_head:
        return model

    head = ValueHead(args.dim)
    if head_state:
        missing = sorted(set(head.state_dict()) - set(head_state))
        if missing:
            raise MissingKeyError(
                f"{source}: value head weight {VALUE_HEAD_PREFIX}{missing[0]!r} missing"
            )
        head.load_state_dict(head_state, strict=True)
    else:
        logger.warning(
            "%s has no %s* weights: the value head starts from a fresh initialisation",
            source,
            VALUE_HEAD_PREFIX,
        )
    head.to(device=device, dtype=target or model.tok_embeddings.weight.dtype).eval()
    return model, head


def _tied_embeddings(local: Path) -> bool:
    config = local / HF_CONFIG_FILE
    return config.is_file() and bool(json.loads(config.read_text()).get("tie_word_embeddings"))


from_pretrained = load_model
"""Alias of :func:`load_model` for readers used to Hugging Face's name."""


# --------------------------------------------------------------------------- handle
@dataclass(frozen=True)
class ModelDirectory:
    """A light handle on a model directory: what ``ModelDirectoryDataset.load`` returns.

    Nothing is read until asked, so a pipeline can pass a 7B model's location between nodes
    (and to the torchrun workers, via ``path``) without loading it in the Kedro process.
    ``storage_options`` may hold credentials and is left out of ``repr``.
    """

    path: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    cache_dir: str | None = None

    def load(
        self,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        with_value_head: bool = False,
        *,
        verify: bool = True,
    ) -> MTPTransformer | tuple[MTPTransformer, ValueHead]:
        """:func:`load_model` on this directory."""
        return load_model(
            self.path,
            device,
            dtype,
            with_value_head,
            verify=verify,
            cache_dir=self.cache_dir,
            storage_options=self.storage_options,
        )

    def local_path(self) -> Path:
        """A local copy (the path itself when local)."""
        return local_model_dir(
            self.path, cache_dir=self.cache_dir, storage_options=self.storage_options
        )

    def read_args(self) -> ModelArgs:
        return read_model_args(self.path, self.storage_options)

    def read_metadata(self) -> dict[str, Any] | None:
        return read_metadata(self.path, self.storage_options)

    def tokenizer_bytes(self) -> bytes:
        """The directory's ``tokenizer.model``."""
        fs, root = open_fs(self.path, self.storage_options)
        if not fs.exists(f"{root}/{TOKENIZER_FILE}"):
            raise ModelFileNotFoundError(f"{self.path}/{TOKENIZER_FILE} does not exist")
        return fs.cat_file(f"{root}/{TOKENIZER_FILE}")
