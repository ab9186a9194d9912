"""Convert a Meta MTP release to a model directory.

    python -m weighted_mtp.model_io.convert_meta SRC_DIR DST_DIR [--dtype bfloat16]
        [--max-shard-size 5GB] [--max-seq-len N]

``SRC_DIR`` (local) holds ``params.json``, ``tokenizer.model`` and ``consolidated.pth``, or the
model-parallel split ``consolidated.00.pth``, ``consolidated.01.pth``, ... ``DST_DIR`` is a local
path or fsspec URL (``s3://...``). Meta's key names are kept (the model uses them), the stored
dtype is kept unless ``--dtype`` says otherwise, and every key and shape is checked against the
model built from ``params.json`` before anything is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from weighted_mtp.model_io.model_dir import (
    PARAMS_FILE,
    TOKENIZER_FILE,
    MissingKeyError,
    ModelDirectoryError,
    ModelFileNotFoundError,
    ShapeMismatchError,
    UnexpectedKeyError,
    parse_dtype,
    save_model_dir,
)
from weighted_mtp.models.args import ModelArgs, ModelArgsError
from weighted_mtp.models.transformer import MTPTransformer

logger = logging.getLogger(__name__)

# How Meta's model-parallel layers split a weight across consolidated.NN.pth files
# (fairscale: ColumnParallelLinear splits the output rows, RowParallelLinear the input columns,
# ParallelEmbedding the embedding dimension); norms are replicated.
_CONCAT_DIM = {
    "tok_embeddings": 1,
    "output": 0,
    "wq": 0,
    "wk": 0,
    "wv": 0,
    "w1": 0,
    "w3": 0,
    "wo": 1,
    "w2": 1,
}
# RoPE frequencies that some Meta checkpoints store; the model rebuilds them.
_DROPPED = re.compile(r"(^|\.)rope\.freqs$")


class MetaCheckpointError(ModelDirectoryError):
    """A Meta release directory that cannot be converted."""


def _shard_files(src: Path) -> list[Path]:
    single = src / "consolidated.pth"
    shards = sorted(src.glob("consolidated.[0-9][0-9].pth"))
    if single.is_file() and shards:
        raise MetaCheckpointError(f"{src}: both consolidated.pth and {shards[0].name} exist")
    if single.is_file():
        return [single]
    if not shards:
        raise ModelFileNotFoundError(
            f"{src}: no consolidated.pth (or consolidated.00.pth ...) checkpoint"
        )
    return shards


def _concat_dim(key: str) -> int | None:
    """Dimension along which ``key`` is split across model-parallel shards (None: replicated)."""
    parts = key.split(".")
    return _CONCAT_DIM.get(parts[-2]) if len(parts) >= 2 else None


def load_meta_state_dict(src: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The merged state dict of ``src``'s ``consolidated*.pth`` (memory-mapped, weights only)
    and the names of the files read."""
    src = Path(src)
    files = _shard_files(src)
    parts = []
    for path in files:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises several types for a corrupt/legacy file
            raise MetaCheckpointError(
                f"{path}: cannot be read as a weights-only checkpoint: {exc}"
            ) from exc
        if not isinstance(state, dict):
            raise MetaCheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
        parts.append({k: v for k, v in state.items() if not _DROPPED.search(k)})
    if len(parts) == 1:
        return parts[0], [p.name for p in files]
    keys = list(parts[0])
    for path, part in zip(files[1:], parts[1:], strict=True):
        if set(part) != set(keys):
            odd = sorted(set(part) ^ set(keys))[0]
            raise MetaCheckpointError(f"{path}: key set differs from {files[0].name} at {odd!r}")
    merged: dict[str, torch.Tensor] = {}
    for key in keys:
        dim = _concat_dim(key)
        tensors = [part[key] for part in parts]
        merged[key] = tensors[0] if dim is None or tensors[0].ndim < 2 else torch.cat(tensors, dim)
    return merged, [p.name for p in files]


def check_against_model(state: dict[str, torch.Tensor], args: ModelArgs, source: str) -> None:
    """Every key and shape of ``state`` against ``MTPTransformer(args)`` (built on meta)."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in MTPTransformer(args).state_dict().items()}
    for key, shape in expected.items():
        if key not in state:
            raise MissingKeyError(f"{source}: weight {key!r} (shape {tuple(shape)}) is missing")
        if state[key].shape != shape:
            raise ShapeMismatchError(
                f"{source}: {key!r} has shape {tuple(state[key].shape)}, params.json implies "
                f"{tuple(shape)}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise UnexpectedKeyError(f"{source}: unexpected weight {extra[0]!r} ({len(extra)} in all)")


def parse_size(text: str) -> int:
    """``"5GB"`` -> 5_000_000_000, ``"512MiB"`` -> 536_870_912, ``"1000"`` -> 1000."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 5GB, 512MiB)")
    value, unit = float(match.group(1)), (match.group(2) or "B").upper()
    power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
    return int(value * (1024 if "I" in unit else 1000) ** power)


def convert(
    src: str | Path,
    dst: str,
    *,
    dtype: str | torch.dtype | None = None,
    max_shard_bytes: int | None = None,
    max_seq_len: int | None = None,
    storage_options: dict | None = None,
) -> str:
    """Convert the Meta release in ``src`` to a model directory at ``dst``; returns ``dst``."""
    src = Path(src)
    if not src.is_dir():
        raise ModelFileNotFoundError(f"source directory {src} does not exist")
    for name in (PARAMS_FILE, TOKENIZER_FILE):
        if not (src / name).is_file():
            raise ModelFileNotFoundError(f"{src}/{name} does not exist")
    raw = json.loads((src / PARAMS_FILE).read_text(encoding="utf-8"))
    if max_seq_len is not None:
        raw["max_seq_len"] = max_seq_len
    args = ModelArgs.from_dict(raw, source=str(src / PARAMS_FILE))
    state, files = load_meta_state_dict(src)
    check_against_model(state, args, f"{src}/{files[0] if len(files) == 1 else 'consolidated.*'}")
    target = parse_dtype(dtype)
    if target is None:
        kinds = {t.dtype for t in state.values() if t.is_floating_point()}
        if len(kinds) > 1:
            raise MetaCheckpointError(
                f"{src}: weights mix dtypes {sorted(map(str, kinds))}; choose one with --dtype"
            )
    logger.info("converting %s (%s) -> %s", src, ", ".join(files), dst)
    return save_model_dir(
        state,
        args,
        src / TOKENIZER_FILE,
        dst,
        dtype=target,
        origin=f"meta:{src.resolve().name}",
        max_shard_bytes=max_shard_bytes,
        extra_metadata={"source_files": files},
        storage_options=storage_options,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m weighted_mtp.model_io.convert_meta",
        description=(
            "Convert a Meta MTP release (consolidated.pth or consolidated.NN.pth, params.json, "
            "tokenizer.model) to a model directory (params.json, safetensors, tokenizer.model, "
            "metadata.json)."
        ),
    )
    parser.add_argument("src", metavar="SRC_DIR", help="local directory of the Meta release")
    parser.add_argument("dst", metavar="DST_DIR", help="output directory: a path or s3:// URL")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="cast floating weights (default: keep the release's dtype)",
    )
    parser.add_argument(
        "--max-shard-size",
        type=parse_size,
        default=None,
        help="shard the safetensors above this size, e.g. 5GB (default: one file)",
    )
    parser.add_argument(
        "--max-seq-len",
        type=int,
        default=None,
        help="RoPE table size stored in params.json (default: ModelArgs' default)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = convert(
            options.src,
            options.dst,
            dtype=options.dtype,
            max_shard_bytes=options.max_shard_size,
            max_seq_len=options.max_seq_len,
        )
    except (ModelDirectoryError, ModelArgsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
