"""Kedro datasets for model directories, local or on any fsspec filesystem (``s3://``).

``load`` returns a light handle, not a model: a 7B model directory is passed between nodes (and
to the torchrun workers, which load it themselves on their device) by location. Call
``handle.load(device, dtype, with_value_head)`` where the weights are actually needed.

Catalog example::

    base_model:
      type: weighted_mtp.datasets.ModelDirectoryDataset
      path: s3://bucket/models/meta-llama-mtp-7b_1t_4
      credentials: s3_credentials
      read_only: true
"""

from __future__ import annotations

import shutil
from copy import deepcopy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.model_dir import (
    HF_CONFIG_FILE,
    METADATA_FILE,
    PARAMS_FILE,
    ModelDirectoryContents,
    local_model_dir,
    open_fs,
    save_model_dir,
    write_directory_atomically,
)
from weighted_mtp.model_io.reference import HFModelDirectory, save_reference_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _storage_options(credentials: dict[str, Any] | None, fs_args: dict[str, Any] | None) -> dict:
    # Kedro convention: credentials and fs_args both go to the fsspec filesystem constructor.
    return {**deepcopy(credentials or {}), **deepcopy(fs_args or {})}


class _DirectoryDataset(AbstractDataset):
    """Shared plumbing: a directory URL, fsspec options, read-only guard. Nothing is touched
    before ``load``/``save``/``exists`` (no filesystem is created in the constructor)."""

    _commit_file: str = METADATA_FILE

    def __init__(
        self,
        *,
        path: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        read_only: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """
        Args:
            path: the directory, a local path or fsspec URL (``s3://bucket/models/x``).
            credentials: fsspec credentials (``key``, ``secret``, ``client_kwargs``...).
            fs_args: more fsspec filesystem arguments.
            cache_dir: where remote directories are copied for loading (default
                ``$WMTP_MODEL_CACHE`` or ``~/.cache/weighted_mtp/models``).
            read_only: refuse ``save`` (protects released models from being overwritten).
            metadata: free-form, ignored by Kedro (kedro-viz shows it).
        """
        self._path = str(path)
        self._protocol, _ = get_protocol_and_path(self._path)
        self._storage_options = _storage_options(credentials, fs_args)
        self._cache_dir = cache_dir
        self._read_only = read_only
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {
            "path": self._path,
            "protocol": self._protocol,
            "read_only": self._read_only,
            "cache_dir": self._cache_dir,
        }

    def _exists(self) -> bool:
        fs, root = open_fs(self._path, self._storage_options)
        return fs.exists(f"{root}/{self._commit_file}")

    def _check_writable(self) -> None:
        if self._read_only:
            raise DatasetError(
                f"{self._path} is read-only in this environment (read_only: true in the "
                f"catalog): it holds a released model that a pipeline must not overwrite"
            )

    def _is_own_directory(self, data: Any) -> bool:
        # A node passing its input through (rho1's tune_reference with tuning disabled) hands
        # back a handle on the directory this entry names: copying it onto itself would clear
        # it on an object store, so saving it is a no-op.
        path = getattr(data, "path", None)
        if not isinstance(path, str):
            return False
        (p1, a), (p2, b) = get_protocol_and_path(path), get_protocol_and_path(self._path)
        same_local = p1 == p2 == "file" and Path(a).resolve() == Path(b).resolve()
        return same_local or (p1 == p2 and a.rstrip("/") == b.rstrip("/"))

    def _copy_from(self, source: ModelDirectory | HFModelDirectory) -> None:
        """Copy another directory's files here (e.g. publish a local model to S3)."""
        local = local_model_dir(
            source.path, cache_dir=source.cache_dir, storage_options=source.storage_options
        )

        def fill(directory: Path) -> None:
            for item in sorted(local.iterdir()):
                if item.is_file() and not item.name.startswith("."):
                    shutil.copyfile(item, directory / item.name)

        write_directory_atomically(
            self._path, fill, commit_file=self._commit_file, storage_options=self._storage_options
        )


class ModelDirectoryDataset(_DirectoryDataset):
    """An MTP model directory (``params.json``, safetensors, ``tokenizer.model``,
    ``metadata.json``).

    ``load`` -> :class:`~weighted_mtp.model_io.loading.ModelDirectory` (a handle; raises
    ``DatasetError`` when the directory has no ``params.json``/``config.json``).
    ``save`` accepts a :class:`~weighted_mtp.model_io.model_dir.ModelDirectoryContents` (written
    with ``save_model_dir``) or a ``ModelDirectory`` (its files are copied).
    """

    def load(self) -> ModelDirectory:
        fs, root = open_fs(self._path, self._storage_options)
        if not (fs.exists(f"{root}/{PARAMS_FILE}") or fs.exists(f"{root}/{HF_CONFIG_FILE}")):
            raise DatasetError(
                f"{self._path}: not a model directory (no {PARAMS_FILE} or {HF_CONFIG_FILE})"
            )
        return ModelDirectory(self._path, dict(self._storage_options), self._cache_dir)

    def save(self, data: ModelDirectoryContents | ModelDirectory) -> None:
        if isinstance(data, ModelDirectory) and self._is_own_directory(data):
            return
        self._check_writable()
        if isinstance(data, ModelDirectory):
            self._copy_from(data)
            return
        if not isinstance(data, ModelDirectoryContents):
            raise DatasetError(
                f"{self._path}: save expects ModelDirectoryContents or ModelDirectory, got "
                f"{type(data).__name__}"
            )
        save_model_dir(
            data.model,
            data.args,
            data.tokenizer,
            self._path,
            dtype=data.dtype,
            value_head=data.value_head,
            origin=data.origin,
            extra_metadata=data.extra_metadata,
            storage_options=self._storage_options,
        )


class HFModelDirectoryDataset(_DirectoryDataset):
    """A Hugging Face model directory (``config.json`` + safetensors), e.g. the Rho-1
    reference.

    ``load`` -> :class:`~weighted_mtp.model_io.reference.HFModelDirectory` (a handle whose
    ``load(device, dtype, expected_vocab_size)`` gives the frozen reference model). ``save``
    accepts a ``PreTrainedModel`` (``save_pretrained``, safetensors), a ``(model, tokenizer)``
    pair (the SentencePiece model is added as ``tokenizer.model``) or an ``HFModelDirectory``.
    """

    _commit_file = HF_CONFIG_FILE

    def load(self) -> HFModelDirectory:
        fs, root = open_fs(self._path, self._storage_options)
        if not fs.exists(f"{root}/{HF_CONFIG_FILE}"):
            raise DatasetError(f"{self._path}: not a Hugging Face model directory (no config.json)")
        return HFModelDirectory(self._path, dict(self._storage_options), self._cache_dir)

    def save(self, data: PreTrainedModel | tuple[PreTrainedModel, Any] | HFModelDirectory) -> None:
        if isinstance(data, HFModelDirectory) and self._is_own_directory(data):
            return
        self._check_writable()
        if isinstance(data, HFModelDirectory):
            self._copy_from(data)
            return
        model, tokenizer = data if isinstance(data, tuple) else (data, None)
        if not callable(getattr(model, "save_pretrained", None)):
            raise DatasetError(
                f"{self._path}: save expects a PreTrainedModel, got {type(model).__name__}"
            )
        save_reference_model(
            model, self._path, tokenizer=tokenizer, storage_options=self._storage_options
        )
