"""The identity of a training job: a digest of everything that changes its result.

Resume checkpoints live under ``<checkpoints>/<identity[:16]>/`` and ``resume: auto`` continues
only a checkpoint of the same identity, so a changed learning rate, a retrained critic or a new
data plan starts from step 1 instead of silently continuing (or republishing) another
experiment. What goes in (:func:`run_identity`):

- ``method`` and the method's parameters, all but :data:`OPERATIONAL_PARAMS`;
- ``runtime``: the world size (``nproc_per_node * nnodes``: how the ranks are spread over nodes
  does not change the maths) and every field but :data:`OPERATIONAL_RUNTIME` (``strategy``,
  ``dtype``, ``seed``, ``device``);
- the input models' fingerprints (:func:`model_fingerprint`): the init model (the critic, for
  ``verifiable``) and the Rho-1 reference;
- the data plan's SHA256 (the order of every training and validation row).

A field missing from the exclusion lists is in the identity: a parameter added later makes
resume start afresh when it changes (safe) rather than continue a different run (wrong).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from weighted_mtp.model_io.files import is_local, open_fs, sha256_file
from weighted_mtp.model_io.model_dir import read_metadata
from weighted_mtp.training.config import RuntimeParams, TrainingParams

#: Bumped when the meaning of a component changes: old checkpoints then never match.
IDENTITY_VERSION = 1

#: Method parameters that do not change the trained weights.
OPERATIONAL_PARAMS: frozenset[str] = frozenset(
    {
        "resume",  # where to continue from, not what is trained
        "save_every",  # checkpoints are written, never read back into the step
        "keep_last",
        "log_every",  # metrics are read from the step, they do not feed it
        "eval_every",  # validation runs without gradients, in eval mode, on its own rows
        "val_samples",  # likewise (the data plan's digest still covers the validation rows)
        # Rows of logits alive at once in the chunked loss: the same per-token losses, summed
        # in another order (rounding-level differences, like activation checkpointing). Out,
        # so that a run that ran out of memory can resume with a smaller chunk.
        "chunk_size",
        # rho1: the tuned reference enters through its own fingerprint, not its recipe.
        "reference_tuning",
        "enabled",  # pretrain / reference tuning: whether the job runs at all
    }
)

#: Runtime fields that do not change the result beyond floating-point summation order.
OPERATIONAL_RUNTIME: frozenset[str] = frozenset(
    {
        # Replaced by their product, the world size: 2 nodes x 2 and 1 node x 4 are one job.
        "nproc_per_node",
        "nnodes",
        "node_rank",
        "rdzv_endpoint",
        "omp_threads",  # CPU threads per rank: same maths
        # Recomputes each block's forward in the backward with the same kernels, dtype and
        # inputs, so the recomputed activations are the ones of the first pass (the issue's
        # check: `blocks` gives `none`'s per-step losses). Out, so that a run that ran out of
        # memory resumes with it switched on.
        "activation_checkpointing",
        "collective_timeout_s",  # how long a rank waits, not what it computes
    }
)

# A model directory without recorded checksums (a Hugging Face directory): local files up to
# this size are hashed in full (the laptop's micro models: milliseconds), larger ones and
# remote ones are named by their size and the store's stamp (S3's ETag, set from the content;
# else the modification time). Never a full re-hash of a 7B model at every launch; the price
# is a needless fresh start after a copy that changes the modification time of a big file.
_HASH_LOCAL_UP_TO = 256 << 20
_CONTENT_STAMPS = ("ETag", "etag", "md5Hash", "crc32c")
_TIME_STAMPS = ("mtime", "LastModified", "last_modified", "updated", "created")


class RunIdentity(BaseModel):
    """``digest``: SHA256 of the canonical JSON of ``components`` (what was hashed, kept so
    that a refused resume can name the fields that differ)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    digest: str
    components: dict[str, Any]

    @property
    def short(self) -> str:
        """The first 16 hex digits: the name of this identity's checkpoint directory."""
        return self.digest[:16]

    @classmethod
    def of(cls, components: Mapping[str, Any]) -> RunIdentity:
        canonical = json.dumps(components, sort_keys=True, separators=(",", ":"))
        return cls(
            digest=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
            components=json.loads(canonical),
        )


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


def _file_stamp(fs: Any, path: str, info: Mapping[str, Any]) -> str:
    size = int(info.get("size") or 0)
    if is_local(fs) and size <= _HASH_LOCAL_UP_TO:
        return f"{size}:sha256:{sha256_file(path)}"
    for key in (*_CONTENT_STAMPS, *_TIME_STAMPS):
        if info.get(key) is not None:
            return f"{size}:{key}:{info[key]}"
    return f"{size}"


def model_fingerprint(
    model_dir: str | os.PathLike, storage_options: Mapping[str, Any] | None = None
) -> str:
    """A cheap content identity of a model directory (local path or fsspec URL).

    With a ``metadata.json`` that lists the SHA256 of every file (our model directories: the
    released model converted, the critic, every trained policy), the digest of that list: the
    weights' content, read from one small file; retraining the critic changes it, copying the
    directory elsewhere does not (the loader refuses files that differ from those sums).
    Otherwise (a Hugging Face directory) the digest of each file's name, size and content
    stamp (see ``_HASH_LOCAL_UP_TO``).

    Returns:
        ``files:<sha256>`` or ``stat:<sha256>``.

    Raises:
        FileNotFoundError: the directory does not exist or holds no file.
    """
    metadata = read_metadata(model_dir, storage_options)
    if metadata and metadata.get("files"):
        return "files:" + _digest(metadata["files"])
    fs, root = open_fs(model_dir, storage_options)
    entries = fs.find(root, detail=True) if fs.exists(root) else {}
    stamps = {
        path[len(root) :].lstrip("/"): _file_stamp(fs, path, info)
        for path, info in sorted(entries.items())
        if info.get("type", "file") == "file"
    }
    if not stamps:
        raise FileNotFoundError(f"{model_dir}: no model directory there (no files to identify)")
    return "stat:" + _digest(stamps)


def run_identity(
    method: str,
    params: TrainingParams,
    runtime: RuntimeParams,
    *,
    plan_sha256: str,
    init_model: str,
    reference_model: str | None = None,
    init_storage_options: Mapping[str, Any] | None = None,
    reference_storage_options: Mapping[str, Any] | None = None,
) -> RunIdentity:
    """The identity of one training job (see the module docstring for what is in it).

    ``params`` is the validated parameter model, so a default spelled out and a default left
    implicit give the same identity. The storage options reach the model directories (the Kedro
    node passes its catalog entries', credentials included; the workers read theirs from the
    environment).
    """
    runtime_fields = {
        k: v for k, v in runtime.model_dump(mode="json").items() if k not in OPERATIONAL_RUNTIME
    }
    runtime_fields["world_size"] = runtime.nproc_per_node * runtime.nnodes
    return RunIdentity.of(
        {
            "version": IDENTITY_VERSION,
            "method": method,
            "params": {
                k: v
                for k, v in params.model_dump(mode="json").items()
                if k not in OPERATIONAL_PARAMS
            },
            "runtime": runtime_fields,
            "models": {
                "init_model": model_fingerprint(init_model, init_storage_options),
                "reference_model": (
                    model_fingerprint(reference_model, reference_storage_options)
                    if reference_model is not None
                    else None
                ),
            },
            "data_plan": plan_sha256,
        }
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    # Digests and fingerprints: their first 12 characters tell two apart.
    return text if len(text) <= 40 else text[:20] + "..."


def identity_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``["params.lr: 0.001 -> 0.002", "models.init_model: files:ab12... -> files:cd34..."]``:
    the dotted fields whose values differ between two identities' components."""
    before, after = _flatten(old), _flatten(new)
    missing = object()
    changes = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, missing), after.get(key, missing)
        if a != b:
            left = "absent" if a is missing else _show(a)
            right = "absent" if b is missing else _show(b)
            changes.append(f"{key}: {left} -> {right}")
    return changes
