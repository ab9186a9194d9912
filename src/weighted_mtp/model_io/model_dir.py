"""Model directory export/import: write and read ``params.json``, safetensors weights,
``tokenizer.model`` and ``metadata.json``, locally or on any fsspec filesystem (``s3://...``).

A model directory is a finished model to hand over (evaluation, serving, the next stage), not a
training checkpoint: it holds no optimizer, scheduler or data-loader state.

Layout (docs/contracts.md)::

    params.json                     ModelArgs (Meta's fields + max_seq_len)
    model.safetensors               all weights, Meta key names ...
      | model-00001-of-0000N.safetensors + model.safetensors.index.json   (HF's index format)
    tokenizer.model                 SentencePiece model
    metadata.json                   {"dtype", "files": {name: sha256}, "origin", ...}

Writes are atomic. Locally the directory is filled under a temporary sibling and renamed into
place. Object stores have no rename, so there the destination is cleared, the files are uploaded
and ``metadata.json`` goes last: it is the commit marker, and a directory without it is an
interrupted write.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec
import safetensors.torch
import torch
from torch import nn

# Dtype spellings (model_io.dtypes) and file access (model_io.files: fsspec, atomic writes,
# SHA256, cached copies) live apart; their public names stay importable from here so that callers
# need one import for everything about a model directory.
from weighted_mtp.model_io.dtypes import (  # noqa: F401 - re-exports
    SAFETENSORS_DTYPES,
    dtype_name,
    parse_dtype,
)
from weighted_mtp.model_io.files import (  # noqa: F401 - re-exports
    CACHE_ENV,
    ModelDirectoryError,
    ModelFileNotFoundError,
    default_cache_dir,
    is_local,
    local_model_dir,
    open_fs,
    sha256_file,
    write_directory_atomically,
)
from weighted_mtp.models.args import ModelArgs

PARAMS_FILE = "params.json"
HF_CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.model"
METADATA_FILE = "metadata.json"
VALUE_HEAD_PREFIX = "value_head."
FORMAT_NAME = "weighted-mtp-model-directory"
FORMAT_VERSION = 1


class ChecksumMismatchError(ModelDirectoryError):
    """A file's SHA256 differs from the one recorded in ``metadata.json``."""


class MissingKeyError(ModelDirectoryError):
    """A weight the model needs is not in the directory's safetensors files."""


class UnexpectedKeyError(ModelDirectoryError):
    """The safetensors files hold a weight the model does not have."""


class ShapeMismatchError(ModelDirectoryError):
    """A stored weight has a different shape than the model expects."""


class DtypeMismatchError(ModelDirectoryError):
    """A stored weight has a different dtype than ``metadata.json`` records."""


# --------------------------------------------------------------------------- writing
@dataclass
class ModelDirectoryContents:
    """What :func:`save_model_dir` writes: the value a Kedro node returns for a model directory
    dataset (``ModelDirectoryDataset.save``)."""

    model: nn.Module | Mapping[str, torch.Tensor]
    args: ModelArgs
    tokenizer: bytes | str | os.PathLike | Any
    value_head: nn.Module | None = None
    dtype: str | torch.dtype | None = None
    origin: str = "unknown"
    extra_metadata: dict[str, Any] = field(default_factory=dict)


def tokenizer_bytes(
    tokenizer: bytes | str | os.PathLike | Any, storage_options: Mapping[str, Any] | None = None
) -> bytes:
    """The serialized SentencePiece model from bytes, a path/URL, or an object with
    ``model_proto`` (``weighted_mtp.data.tokenizer.Tokenizer``)."""
    if isinstance(tokenizer, bytes | bytearray):
        return bytes(tokenizer)
    proto = getattr(tokenizer, "model_proto", None)
    if isinstance(proto, bytes | bytearray):
        return bytes(proto)
    if isinstance(tokenizer, str | os.PathLike):
        fs, path = open_fs(tokenizer, storage_options)
        if not fs.exists(path):
            raise ModelFileNotFoundError(f"tokenizer file {tokenizer} does not exist")
        return fs.cat_file(path)
    raise TypeError(
        f"tokenizer must be bytes, a path or have .model_proto, got {type(tokenizer).__name__}"
    )


def collect_state_dict(
    model: nn.Module | Mapping[str, torch.Tensor],
    *,
    value_head: nn.Module | Mapping[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Persistent tensors of ``model`` (+ ``value_head`` under ``value_head.``), detached, on CPU,
    contiguous, floating ones cast to ``dtype``; storage shared between keys is copied since
    safetensors refuses aliases."""
    parts: list[tuple[str, Mapping[str, torch.Tensor]]] = [
        ("", model.state_dict() if isinstance(model, nn.Module) else model)
    ]
    if value_head is not None:
        head_sd = value_head.state_dict() if isinstance(value_head, nn.Module) else value_head
        parts.append((VALUE_HEAD_PREFIX, head_sd))
    out: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for prefix, state in parts:
        for key, tensor in state.items():
            name = prefix + key
            if name in out:
                raise ModelDirectoryError(f"duplicate weight key {name!r}")
            t = tensor.detach()
            if t.device.type != "cpu":
                t = t.cpu()
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            t = t.contiguous()
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen_storage and t.numel():
                t = t.clone()
            seen_storage.add(t.untyped_storage().data_ptr())
            out[name] = t
    return out


def write_safetensors(
    tensors: Mapping[str, torch.Tensor], directory: Path, max_shard_bytes: int | None = None
) -> list[str]:
    """Write ``model.safetensors``, or shards + ``model.safetensors.index.json`` when the total
    exceeds ``max_shard_bytes``. Shards are filled greedily in state-dict order (a tensor larger
    than the limit gets a shard of its own). Returns the file names written."""
    sizes = {k: t.numel() * t.element_size() for k, t in tensors.items()}
    total = sum(sizes.values())
    file_meta = {"format": "pt"}
    if max_shard_bytes is None or total <= max_shard_bytes:
        safetensors.torch.save_file(dict(tensors), str(directory / WEIGHTS_FILE), file_meta)
        return [WEIGHTS_FILE]
    groups: list[list[str]] = [[]]
    filled = 0
    for key in tensors:
        if groups[-1] and filled + sizes[key] > max_shard_bytes:
            groups.append([])
            filled = 0
        groups[-1].append(key)
        filled += sizes[key]
    names = [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    weight_map: dict[str, str] = {}
    for name, keys in zip(names, groups, strict=True):
        safetensors.torch.save_file({k: tensors[k] for k in keys}, str(directory / name), file_meta)
        weight_map.update(dict.fromkeys(keys, name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return [*names, INDEX_FILE]


def save_model_dir(
    model: nn.Module | Mapping[str, torch.Tensor],
    args: ModelArgs,
    tokenizer: bytes | str | os.PathLike | Any,
    out_dir: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    value_head: nn.Module | Mapping[str, torch.Tensor] | None = None,
    origin: str = "unknown",
    max_shard_bytes: int | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Write a model directory (local path or fsspec URL) atomically.

    Args:
        model: an ``MTPTransformer`` or its state dict (Meta key names).
        args: written to ``params.json``.
        tokenizer: SentencePiece model as bytes, a path/URL, or a ``Tokenizer``.
        out_dir: the directory to create or replace.
        dtype: cast floating weights to it (default: keep each tensor's dtype).
        value_head: saved under ``value_head.`` in the same safetensors files.
        origin: provenance recorded in ``metadata.json`` (e.g. ``"meta:7B_1T_4"``).
        max_shard_bytes: shard above this many bytes (HF index format).
        extra_metadata: more ``metadata.json`` fields.
        storage_options: fsspec options (credentials, endpoint) for ``out_dir``.

    Returns:
        ``out_dir`` as a string.
    """
    tensors = collect_state_dict(model, value_head=value_head, dtype=parse_dtype(dtype))
    float_dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(float_dtypes) > 1:
        raise DtypeMismatchError(
            f"{out_dir}: weights mix dtypes {sorted(map(dtype_name, float_dtypes))}; pass dtype="
        )
    stored = dtype_name(float_dtypes.pop()) if float_dtypes else None
    proto = tokenizer_bytes(tokenizer, storage_options)

    def fill(directory: Path) -> None:
        files = write_safetensors(tensors, directory, max_shard_bytes)
        args.to_json(directory / PARAMS_FILE)
        (directory / TOKENIZER_FILE).write_bytes(proto)
        files += [PARAMS_FILE, TOKENIZER_FILE]
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "dtype": stored,
            "files": {name: sha256_file(directory / name) for name in sorted(files)},
            "origin": origin,
            "n_parameters": sum(t.numel() for k, t in tensors.items()),
            "has_value_head": any(k.startswith(VALUE_HEAD_PREFIX) for k in tensors),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **dict(extra_metadata or {}),
        }
        (directory / METADATA_FILE).write_text(
            json.dumps(metadata, indent=2) + "\n", encoding="utf-8"
        )

    return write_directory_atomically(
        out_dir, fill, commit_file=METADATA_FILE, storage_options=storage_options
    )


# --------------------------------------------------------------------------- reading
def read_json_file(fs: fsspec.AbstractFileSystem, path: str, label: str) -> dict[str, Any]:
    """A JSON object from ``path``; ``label`` names the file in errors."""
    if not fs.exists(path):
        raise ModelFileNotFoundError(f"{label} does not exist")
    try:
        raw = json.loads(fs.cat_file(path))
    except json.JSONDecodeError as exc:
        raise ModelDirectoryError(f"{label}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ModelDirectoryError(f"{label}: expected a JSON object, got {type(raw).__name__}")
    return raw


def read_metadata(
    model_dir: str | os.PathLike, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """``metadata.json`` of a model directory, or None when it has none (e.g. a HF directory)."""
    fs, root = open_fs(model_dir, storage_options)
    path = f"{root}/{METADATA_FILE}"
    return read_json_file(fs, path, f"{model_dir}/{METADATA_FILE}") if fs.exists(path) else None


def safetensors_header(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any]:
    """The JSON header of a safetensors file (names, dtypes, shapes) without reading tensors."""
    with fs.open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100 << 20:
            raise ModelDirectoryError(f"{path}: implausible safetensors header ({length} bytes)")
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header


@dataclass(frozen=True)
class StoredTensor:
    """Where a weight lives and what it looks like, from the safetensors headers."""

    file: str
    dtype: torch.dtype | str
    shape: tuple[int, ...]


def read_weight_index(
    model_dir: str | os.PathLike, storage_options: Mapping[str, Any] | None = None
) -> dict[str, StoredTensor]:
    """``{key: StoredTensor}`` for a single-file or sharded (index) directory, headers only."""
    fs, root = open_fs(model_dir, storage_options)
    index_path = f"{root}/{INDEX_FILE}"
    if fs.exists(index_path):
        index = read_json_file(fs, index_path, f"{model_dir}/{INDEX_FILE}")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelDirectoryError(f"{model_dir}/{INDEX_FILE}: no 'weight_map' object")
        files = sorted(set(weight_map.values()))
    elif fs.exists(f"{root}/{WEIGHTS_FILE}"):
        weight_map, files = None, [WEIGHTS_FILE]
    else:
        raise ModelFileNotFoundError(f"{model_dir}: neither {WEIGHTS_FILE} nor {INDEX_FILE} exists")
    out: dict[str, StoredTensor] = {}
    for name in files:
        path = f"{root}/{name}"
        if not fs.exists(path):
            raise ModelFileNotFoundError(
                f"{model_dir}/{name} does not exist (listed in {model_dir}/{INDEX_FILE})"
            )
        for key, info in safetensors_header(fs, path).items():
            if weight_map is not None and weight_map.get(key) != name:
                raise ModelDirectoryError(
                    f"{model_dir}/{name}: holds {key!r}, which {INDEX_FILE} maps to "
                    f"{weight_map.get(key)!r}"
                )
            dtype = SAFETENSORS_DTYPES.get(info["dtype"], info["dtype"])
            out[key] = StoredTensor(name, dtype, tuple(info["shape"]))
    if weight_map is not None:
        for key, name in weight_map.items():
            if key not in out:
                raise MissingKeyError(
                    f"{model_dir}/{INDEX_FILE} maps {key!r} to {name}, which does not hold it"
                )
    return out


def read_state_dict(
    model_dir: str | os.PathLike, storage_options: Mapping[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """All tensors of a single-file or sharded directory, on CPU. Local files are memory-mapped;
    remote ones are read whole (use :func:`local_model_dir` first for large models)."""
    fs, root = open_fs(model_dir, storage_options)
    files = sorted({info.file for info in read_weight_index(model_dir, storage_options).values()})
    if not files:  # a directory with an empty weight file
        files = [WEIGHTS_FILE] if fs.exists(f"{root}/{WEIGHTS_FILE}") else []
    out: dict[str, torch.Tensor] = {}
    for name in files:
        path = f"{root}/{name}"
        if is_local(fs):
            out.update(safetensors.torch.load_file(path))
        else:
            out.update(safetensors.torch.load(fs.cat_file(path)))
    return out


def verify_checksums(
    model_dir: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Check every file listed in ``metadata.json`` against its SHA256.

    Raises:
        ModelFileNotFoundError: a listed file is absent.
        ChecksumMismatchError: names the file, the expected and the actual digest.
    """
    fs, root = open_fs(model_dir, storage_options)
    if metadata is None:
        metadata = read_metadata(model_dir, storage_options)
    if metadata is None:
        raise ModelFileNotFoundError(f"{model_dir}/{METADATA_FILE} does not exist")
    files = metadata.get("files")
    if not isinstance(files, dict):
        raise ModelDirectoryError(f"{model_dir}/{METADATA_FILE}: no 'files' object")
    for name, expected in sorted(files.items()):
        path = f"{root}/{name}"
        if not fs.exists(path):
            raise ModelFileNotFoundError(
                f"{model_dir}/{name} does not exist (listed in {METADATA_FILE})"
            )
        actual = sha256_file(path, fs)
        if actual != expected:
            raise ChecksumMismatchError(
                f"{model_dir}/{name}: sha256 {actual} does not match {expected} recorded in "
                f"{METADATA_FILE} (corrupt or partial copy)"
            )
