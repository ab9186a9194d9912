"""Resume checkpoints: everything needed to continue a run exactly where it stopped.

Not a model export (that is :mod:`weighted_mtp.model_io.model_dir`): a checkpoint holds the
model and optimizer state as ``torch.distributed.checkpoint`` shards (under FSDP2 each rank
writes only its shard, so no rank ever gathers 7B of optimizer state), the scheduler, the step
and tokens seen, each rank's RNG states, and the data plan's fingerprint (the sampler's
position is the step: the plan fixes the order of every row).

Layout of ``<root>/step_00000050/``::

    state/.metadata, state/__<rank>_0.distcp     model + optimizer (DCP)
    rng_rank<r>.pt                               torch (+ CUDA) RNG state of rank r
    trainer_state.json                           step, tokens, scheduler, plan sha256, world
    manifest.json                                sha256 and size of every file above

Atomicity: ranks write into ``.step_00000050.partial``; rank 0 writes the manifest last and
renames the directory into place, so a directory named ``step_*`` with a manifest is complete.
Resuming verifies every file against the manifest; ``auto`` falls back to the previous
complete checkpoint when the newest one is damaged, and says so.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from weighted_mtp.model_io.files import sha256_file

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
STATE_FILE = "trainer_state.json"
CHECKPOINT_NAME = re.compile(r"^step_(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (missing, incomplete, corrupt or from another run)."""


@dataclass
class TrainerState:
    """The loop's counters and provenance saved beside the weights."""

    step: int
    tokens_seen: int
    plan_sha256: str
    world_size: int
    method: str
    scheduler: dict
    skipped_sequences: int = 0


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (a manifest is present) under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = CHECKPOINT_NAME.match(entry.name)
        if match and (entry / MANIFEST_FILE).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def verify_checkpoint(path: Path) -> None:
    """Check every file of ``path`` against its manifest; raise :class:`CheckpointError`
    naming the first missing or corrupt file."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST_FILE} (an interrupted write)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{manifest_path}: not valid JSON ({exc})") from None
    for name, entry in sorted(manifest["files"].items()):
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing (listed in {manifest_path})")
        if file.stat().st_size != entry["size"]:
            raise CheckpointError(
                f"{file}: {file.stat().st_size} bytes, the manifest says {entry['size']}"
            )
        if sha256_file(file) != entry["sha256"]:
            raise CheckpointError(f"{file}: sha256 differs from {manifest_path}")


def read_trainer_state(path: Path) -> TrainerState:
    return TrainerState(**json.loads((path / STATE_FILE).read_text(encoding="utf-8")))


def incompatibility(state: TrainerState, *, plan_sha256: str, world_size: int) -> str | None:
    """Why a checkpoint cannot continue this run, or None when it can."""
    if state.plan_sha256 != plan_sha256:
        return (
            "it was made with a different data plan (the data or the sampling/batch "
            "parameters changed since)"
        )
    if state.world_size != world_size:
        return (
            f"it was saved by {state.world_size} processes and this run has {world_size} "
            "(the global batch and the RNG streams would differ)"
        )
    return None


def choose_checkpoint(root: Path, resume: str, *, plan_sha256: str, world_size: int) -> Path | None:
    """The checkpoint to resume from.

    ``never`` -> None. A path -> that checkpoint, verified and compatible, else
    :class:`CheckpointError`. ``auto`` -> the newest complete checkpoint under ``root`` that
    verifies and belongs to this run (same data plan and world size); damaged or foreign ones
    are skipped with a warning that names the reason (so a changed configuration starts
    afresh instead of failing); None when none qualifies.
    """
    if resume == "never":
        return None
    if resume != "auto":
        path = Path(resume)
        verify_checkpoint(path)
        reason = incompatibility(
            read_trainer_state(path), plan_sha256=plan_sha256, world_size=world_size
        )
        if reason:
            raise CheckpointError(f"{path}: cannot continue this run: {reason}")
        return path
    for step, path in reversed(list_checkpoints(root)):
        try:
            verify_checkpoint(path)
        except CheckpointError as exc:
            logger.warning(
                "checkpoint of step %d is unusable (%s); falling back to an older one", step, exc
            )
            continue
        reason = incompatibility(
            read_trainer_state(path), plan_sha256=plan_sha256, world_size=world_size
        )
        if reason:
            logger.warning("not resuming from %s: %s; starting afresh", path, reason)
            return None
        return path
    return None


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_checkpoint(
    root: Path,
    wrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    *,
    keep_last: int,
    extra_files: dict[str, Path] | None = None,
) -> Path:
    """Write the checkpoint of ``state.step`` under ``root`` (collective: every rank calls
    it). ``extra_files`` (rank 0's, e.g. the metric history so far) are copied in under their
    names. Returns the final directory. Checkpoints beyond the newest ``keep_last`` are
    removed."""
    name = checkpoint_name(state.step)
    final = root / name
    partial = root / f".{name}.partial"
    rank = dist.get_rank() if dist.is_initialized() else 0
    if _is_rank0():
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
    _barrier()
    model_sd, optim_sd = get_state_dict(wrapped, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(partial / "state"))
    torch.save(_rng_state(), partial / f"rng_rank{rank}.pt")
    _barrier()
    if _is_rank0():
        (partial / STATE_FILE).write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
        for name, source in (extra_files or {}).items():
            if source.is_file():
                shutil.copyfile(source, partial / name)
        files = {
            str(p.relative_to(partial)): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(partial.rglob("*"))
            if p.is_file()
        }
        manifest = {"step": state.step, "files": files}
        tmp = partial / (MANIFEST_FILE + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        os.replace(tmp, partial / MANIFEST_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for _, old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(
    path: Path,
    wrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    plan_sha256: str,
    world_size: int,
) -> TrainerState:
    """Restore model, optimizer and this rank's RNG from ``path`` (collective); returns the
    trainer state (the caller restores the scheduler from ``state.scheduler``)."""
    state = read_trainer_state(path)
    reason = incompatibility(state, plan_sha256=plan_sha256, world_size=world_size)
    if reason:
        raise CheckpointError(f"{path}: cannot continue this run: {reason}")
    model_sd, optim_sd = get_state_dict(wrapped, optimizer)
    container = {"model": model_sd, "optim": optim_sd}
    dcp.load(container, checkpoint_id=str(path / "state"))
    set_state_dict(
        wrapped,
        optimizer,
        model_state_dict=container["model"],
        optim_state_dict=container["optim"],
    )
    rank = dist.get_rank() if dist.is_initialized() else 0
    rng = torch.load(path / f"rng_rank{rank}.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state
