"""Positioned reads of single tensors, or a block of rows of one, from local safetensors files.

Sharded loading reads only this rank's rows of each weight (FSDP2 shards dim 0) and writes them
straight into the parameter's storage with ``readinto``: no memory map is touched, so the bytes
go through the page cache (shared by the processes of a node) and never count twice in a
process's resident memory, and nothing of the model but this rank's shard is ever allocated.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from weighted_mtp.model_io.dtypes import SAFETENSORS_DTYPES
from weighted_mtp.model_io.files import ModelDirectoryError, ModelFileNotFoundError

_HEADER_LIMIT = 100 << 20


@dataclass(frozen=True)
class _Location:
    path: Path
    start: int  # absolute byte offset of the tensor's first element
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]


class SafetensorsRows:
    """Reads tensors by name from the safetensors files of one local directory.

    ``files`` maps each tensor name to the file (relative to ``directory``) that holds it, as
    ``read_weight_index`` reports it. Headers are parsed once, here; each read opens its file.
    """

    def __init__(self, directory: str | Path, files: Mapping[str, str]) -> None:
        self.directory = Path(directory)
        self._where: dict[str, _Location] = {}
        for name in sorted(set(files.values())):
            self._where.update(self._parse(self.directory / name, name))
        missing = sorted(set(files) - set(self._where))
        if missing:
            raise ModelFileNotFoundError(f"{self.directory}: no tensor {missing[0]!r} in its files")

    @staticmethod
    def _parse(path: Path, name: str) -> dict[str, _Location]:
        if not path.is_file():
            raise ModelFileNotFoundError(f"{path} does not exist")
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > _HEADER_LIMIT:
                raise ModelDirectoryError(
                    f"{path}: implausible safetensors header ({length} bytes)"
                )
            header = json.loads(handle.read(length))
        header.pop("__metadata__", None)
        out: dict[str, _Location] = {}
        for key, info in header.items():
            dtype = SAFETENSORS_DTYPES.get(info["dtype"])
            if dtype is None:
                raise ModelDirectoryError(f"{path}: {key!r} has unsupported dtype {info['dtype']}")
            begin, end = info["data_offsets"]
            shape = tuple(info["shape"])
            if end - begin != math.prod(shape) * dtype.itemsize:
                raise ModelDirectoryError(
                    f"{path}: {key!r} spans {end - begin} bytes, its shape {shape} and dtype "
                    f"{info['dtype']} need {math.prod(shape) * dtype.itemsize}"
                )
            out[key] = _Location(path, 8 + length + begin, end - begin, dtype, shape)
        return out

    def shape(self, key: str) -> tuple[int, ...]:
        return self._where[key].shape

    def dtype(self, key: str) -> torch.dtype:
        return self._where[key].dtype

    def read_rows(
        self, key: str, start: int = 0, stop: int | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rows ``start:stop`` of dim 0 of tensor ``key`` (the whole tensor by default).

        With ``out`` (shape ``[stop - start, *shape[1:]]``, any dtype and device) the rows are
        written into it and ``out`` is returned: directly into its memory when it is a
        contiguous CPU tensor of the stored dtype, else through a temporary of the block's size.
        Without ``out``: a new CPU tensor of the stored dtype.
        """
        loc = self._where[key]
        if not loc.shape:  # a scalar has no rows
            start, stop = 0, 1
            block_shape: tuple[int, ...] = ()
        else:
            stop = loc.shape[0] if stop is None else stop
            if not 0 <= start <= stop <= loc.shape[0]:
                raise IndexError(f"{key}: rows {start}:{stop} outside {loc.shape}")
            block_shape = (stop - start, *loc.shape[1:])
        row_bytes = math.prod(loc.shape[1:]) * loc.dtype.itemsize
        if out is not None and tuple(out.shape) != block_shape:
            raise ValueError(f"{key}: rows {start}:{stop} are {block_shape}, out is {out.shape}")
        direct = (
            out is not None
            and out.device.type == "cpu"
            and out.dtype == loc.dtype
            and out.is_contiguous()
        )
        buffer = out if direct else torch.empty(block_shape, dtype=loc.dtype)
        assert buffer is not None
        if buffer.numel():
            view = memoryview(buffer.reshape(-1).view(torch.uint8).numpy())
            with loc.path.open("rb", buffering=0) as handle:
                handle.seek(loc.start + start * row_bytes)
                done = 0
                while done < len(view):
                    n = handle.readinto(view[done:])
                    if not n:
                        raise ModelDirectoryError(f"{loc.path}: file ends inside {key!r}")
                    done += n
        if out is None or direct:
            return buffer
        with torch.no_grad():
            out.copy_(buffer)
        return out
