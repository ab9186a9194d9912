"""A model built on the meta device and filled shard by shard: the distributed workers' way to
load a model directory (:func:`build_meta_model`, :class:`MetaModel`).

The directory passes :func:`weighted_mtp.model_io.loading.load_model`'s checks first; then
FSDP2 shards the meta parameters without allocating them, ``to_empty`` gives them storage and
:meth:`MetaModel.fill` reads into each parameter only the rows of its own shard, so that a node
holds one model however many ranks it runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from weighted_mtp.model_io.hf_config import hf_to_meta_state_dict, meta_key_name
from weighted_mtp.model_io.loading import (
    CheckedDirectory,
    open_checked,
    value_head_state,
    warn_fresh_head,
)
from weighted_mtp.model_io.model_dir import VALUE_HEAD_PREFIX, ModelDirectoryError
from weighted_mtp.model_io.weight_reader import SafetensorsRows
from weighted_mtp.models.args import ModelArgs
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.models.value_head import ValueHead

# Wrappers that prefix parameter names (activation checkpointing, torch.compile, FSDP1).
_WRAPPER_NAME_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def _plain_name(name: str) -> str:
    for part in _WRAPPER_NAME_PARTS:
        name = name.replace(part, "")
    return name


def _local_block(tensor: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
    """``(local tensor, its shape, its offset in the full tensor)``: a DTensor's shard, or the
    whole of a plain tensor."""
    # Imported here: torch.distributed is needed only once a job has sharded the model.
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    if isinstance(tensor, DTensor):
        shape, offset = compute_local_shape_and_global_offset(
            tensor.shape, tensor.device_mesh, tensor.placements
        )
        return tensor.to_local(), tuple(shape), tuple(offset)
    return tensor, tuple(tensor.shape), (0,) * tensor.dim()


def _block(full: torch.Tensor, shape: tuple[int, ...], offset: tuple[int, ...]) -> torch.Tensor:
    return full[tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True))]


@dataclass
class MetaModel:
    """A model (and value head) built on the meta device, to be filled from its directory.

    Build it with :func:`build_meta_model`; wrap it however the job needs (FSDP2
    ``fully_shard`` shards meta parameters without allocating them); give it storage with
    ``module.to_empty(device=...)`` (``MTPTransformer`` recomputes its RoPE tables then); then
    :meth:`fill` writes into each parameter what the directory holds for it: for a DTensor only
    this rank's shard, read straight from the file, so that a node holds one model however many
    ranks it runs.
    """

    model: MTPTransformer
    value_head: ValueHead | None
    args: ModelArgs
    source: str
    _reader: SafetensorsRows = field(repr=False)
    _opened: CheckedDirectory = field(repr=False)
    _fresh_head: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @torch.no_grad()
    def fill(self) -> None:
        """Write the directory's weights into the (materialised) parameters, in their dtype.

        Raises:
            ModelDirectoryError: a parameter or buffer is still on the meta device (call
                ``to_empty`` first).
        """
        parts: list[tuple[str, nn.Module]] = [("", self.model)]
        if self.value_head is not None:
            parts.append((VALUE_HEAD_PREFIX, self.value_head))
        for prefix, part in parts:
            still_meta = [
                n for n, t in [*part.named_parameters(), *part.named_buffers()] if t.is_meta
            ]
            if still_meta:
                raise ModelDirectoryError(
                    f"{self.source}: {still_meta[0]!r} is still on the meta device; call "
                    "module.to_empty(device=...) before MetaModel.fill()"
                )
            for name, param in part.named_parameters():
                self._fill_one(prefix + _plain_name(name), param)

    def _fill_one(self, key: str, param: torch.Tensor) -> None:
        local, shape, offset = _local_block(param)
        if local.numel() == 0:
            return
        rows = (offset[0], offset[0] + shape[0]) if shape else (0, 0)
        rest_full = shape[1:] == tuple(param.shape[1:])
        if key.startswith(VALUE_HEAD_PREFIX) and self._fresh_head is not None:
            fresh = self._fresh_head[key[len(VALUE_HEAD_PREFIX) :]]
            local.copy_(_block(fresh, shape, offset))
            return
        raw = self._opened.raw_keys[key]
        transform = self._hf_transform(raw)
        if transform is None and rest_full:
            self._reader.read_rows(raw, *rows, out=local)
            return
        full = self._reader.read_rows(raw)
        if transform is not None:
            full = transform(full)
        local.copy_(_block(full, shape, offset))

    def _hf_transform(self, raw: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
        if not self._opened.hf_names:
            return None
        if raw.endswith("self_attn.q_proj.weight") or raw.endswith("self_attn.k_proj.weight"):
            # The q/k un-permutation mixes rows across the whole tensor: convert it whole.
            return lambda full: hf_to_meta_state_dict({raw: full}, self.args)[meta_key_name(raw)]
        return None


def build_meta_model(
    model_dir: str | os.PathLike,
    with_value_head: bool = False,
    *,
    seed: int = 0,
    verify: bool = True,
    cache_dir: str | os.PathLike | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> MetaModel:
    """Check a model directory and build its model (and value head) on the meta device.

    The checks are :func:`load_model`'s (keys, shapes, dtypes, SHA256 sums), made before any
    weight is read; a remote directory is copied once per machine first. Parameters are
    float32 (the master weights) whatever the stored dtype. Without ``value_head.*`` weights
    the value head's fresh initialisation is drawn from a generator seeded with ``seed``, the
    same on every rank (and equal to ``torch.manual_seed(seed); ValueHead(dim)``).

    Returns:
        A :class:`MetaModel`; see there for the order of wrapping, ``to_empty`` and ``fill``.
    """
    opened = open_checked(
        model_dir, verify=verify, cache_dir=cache_dir, storage_options=storage_options
    )
    reader = SafetensorsRows(opened.local, opened.files)
    opened.model.float()  # master weights, whatever torch's default dtype is set to
    head, fresh = None, None
    if with_value_head:
        with torch.device("meta"):
            head = ValueHead(opened.args.dim).float()
        stored_head = {k for k in opened.raw_keys if k.startswith(VALUE_HEAD_PREFIX)}
        if stored_head:
            # Checks the keys only (no tensor is read): ValueHead.STATE_KEYS, no other.
            value_head_state(
                {k[len(VALUE_HEAD_PREFIX) :]: torch.empty(0) for k in stored_head},
                opened.source,
            )
        else:
            warn_fresh_head(opened.source)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                fresh = {
                    k: v.detach().float()
                    for k, v in ValueHead(opened.args.dim).state_dict().items()
                }
    return MetaModel(
        model=opened.model,
        value_head=head,
        args=opened.args,
        source=opened.source,
        _reader=reader,
        _opened=opened,
        _fresh_head=fresh,
    )
