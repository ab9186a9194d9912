"""Loading a model directory (local path or fsspec URL) into a ready ``MTPTransformer``.

``load_model`` is the public entry point (ARCHITECTURE.md). It reads the architecture from
``params.json`` (Meta) or a Hugging Face ``config.json``, checks the safetensors headers against
the model (every key, shape and dtype, before any tensor is read), verifies the SHA256 sums of
``metadata.json`` when present, and builds the model on the meta device so that a 7B checkpoint
is never held twice in memory. Remote directories are first copied to a local cache.

The distributed workers' way in is :func:`weighted_mtp.model_io.meta_model.build_meta_model`:
the same checks (:func:`open_checked`), the model left on the meta device, each rank's own
shard read once the job has sharded it.

HF-named weights are renamed and un-permuted by :mod:`weighted_mtp.model_io.hf_config`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from weighted_mtp.model_io.hf_config import (
    HF_EMBEDDING_KEY,
    args_from_hf_config,
    hf_to_meta_state_dict,
    meta_key_name,
)
from weighted_mtp.model_io.model_dir import (
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

# Submodules, not the package: weighted_mtp.models re-exports load_model from here.
from weighted_mtp.models.args import ModelArgs
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.models.value_head import ValueHead

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- architecture
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


# --------------------------------------------------------------------------- opening
@dataclass
class CheckedDirectory:
    """A model directory whose files were found to fit the model built on the meta device."""

    source: str
    local: Path
    args: ModelArgs
    model: MTPTransformer  # on the meta device
    raw_keys: dict[str, str]  # Meta name -> name in the files
    files: dict[str, str]  # name in the files -> file holding it
    hf_names: bool
    tied: bool


def open_checked(
    model_dir: str | os.PathLike,
    *,
    verify: bool,
    cache_dir: str | os.PathLike | None,
    storage_options: Mapping[str, Any] | None,
) -> CheckedDirectory:
    source = str(model_dir)
    local = local_model_dir(model_dir, cache_dir=cache_dir, storage_options=storage_options)
    args = read_model_args(local)
    metadata = read_metadata(local)
    if verify and metadata is not None:
        verify_checksums(local, metadata)
    raw_index = read_weight_index(local)
    hf_names = HF_EMBEDDING_KEY in raw_index
    raw_keys = {meta_key_name(k) if hf_names else k: k for k in raw_index}
    stored = {name: raw_index[raw] for name, raw in raw_keys.items()}

    with torch.device("meta"):
        model = MTPTransformer(args)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    tied = hf_names and "output.weight" not in stored and _tied_embeddings(local)
    if tied:
        stored["output.weight"] = stored["tok_embeddings.weight"]
        raw_keys["output.weight"] = raw_keys["tok_embeddings.weight"]
    _check_stored_weights(
        stored,
        expected,
        model_dir=source,
        stored_dtype=(metadata or {}).get("dtype"),
        sharded=(local / INDEX_FILE).exists(),
    )
    return CheckedDirectory(
        source=source,
        local=local,
        args=args,
        model=model,
        raw_keys=raw_keys,
        files={k: v.file for k, v in raw_index.items()},
        hf_names=hf_names,
        tied=tied,
    )


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
            copied to ``cache_dir`` (default ``files.default_cache_dir()``) first.
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

    Every process that calls this holds the whole model; a distributed job should build it
    with :func:`~weighted_mtp.model_io.meta_model.build_meta_model` instead and fill each
    rank's shard.
    """
    opened = open_checked(
        model_dir, verify=verify, cache_dir=cache_dir, storage_options=storage_options
    )
    source, local, args, model = opened.source, opened.local, opened.args, opened.model
    tensors = read_state_dict(local)
    if opened.hf_names:
        tensors = hf_to_meta_state_dict(tensors, args)
    if opened.tied:
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
        head.load_state_dict(value_head_state(head_state, source), strict=True)
    else:
        warn_fresh_head(source)
    head.to(device=device, dtype=target or model.tok_embeddings.weight.dtype).eval()
    return model, head


def value_head_state(head_state: Mapping[str, torch.Tensor], source: str) -> dict:
    """A stored value head's tensors (keys without ``value_head.``), checked against
    :attr:`ValueHead.STATE_KEYS`.

    Raises:
        MissingKeyError: the weight is missing, or another of the head's tensors: a directory
            with ``weight`` (and ``bias``) only was written by an older linear head (per
            position, then over the running mean), whose function the running-max head
            (:class:`ValueHead`) does not compute; the message says to retrain the critic.
        UnexpectedKeyError: an unknown key.
    """
    state = dict(head_state)
    if "weight" not in state:
        raise MissingKeyError(f"{source}: value head weight {VALUE_HEAD_PREFIX}'weight' missing")
    unknown = sorted(set(state) - set(ValueHead.STATE_KEYS))
    if unknown:
        raise UnexpectedKeyError(
            f"{source}: unexpected value head tensor {VALUE_HEAD_PREFIX}{unknown[0]!r} "
            f"(expected {', '.join(ValueHead.STATE_KEYS)})"
        )
    missing = [k for k in ValueHead.STATE_KEYS if k not in state]
    if missing:
        raise MissingKeyError(
            f"{source}: value head without {VALUE_HEAD_PREFIX}{missing[0]!r}: it was trained "
            "as an older linear value head, which the running-max value head (per-token "
            "features) does not read the same way; retrain the critic "
            "(kedro run --pipelines critic)"
        )
    return state


def warn_fresh_head(source: str) -> None:
    logger.warning(
        "%s has no %s* weights: the value head starts from a fresh initialisation",
        source,
        VALUE_HEAD_PREFIX,
    )


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
