"""Resume checkpoints: everything needed to continue a run exactly where it stopped.

Not a model export (that is :mod:`weighted_mtp.model_io.model_dir`): a checkpoint holds the
model and optimizer state as ``torch.distributed.checkpoint`` shards (under FSDP2 each rank
writes only its shard, so no rank ever gathers 7B of optimizer state), the scheduler, the step
and tokens seen, each rank's RNG states, and the run identity
(:mod:`weighted_mtp.training.run_identity`; the sampler's position is the step: the data plan,
part of the identity, fixes the order of every row).

Layout: one directory per run identity, ``<checkpoints>/<identity[:16]>/``::

    identity.json                                the identity's digest and components
    step_00000050/state/.metadata, __<r>_0.distcp model + optimizer (DCP)
    step_00000050/rng_rank<r>.pt                  torch (+ CUDA) RNG state of rank r
    step_00000050/trainer_state.json              step, tokens, scheduler, identity
    step_00000050/manifest.json                   sha256 and size of every file above

Completeness: ranks write into ``.step_00000050.partial``, rank 0 renames it into place, and the
manifest, written last (atomically), commits it: a ``step_*`` directory with a manifest is
complete. The manifest's SHA256s take minutes at 7B, so the training loop has them computed
off the training thread (:meth:`CheckpointStorage.commit_async
<weighted_mtp.training.checkpoint_storage.CheckpointStorage.commit_async>`); a crash before the
manifest leaves debris that resume ignores and a later commit removes. Resuming verifies every
file against the manifest; ``auto`` falls back to the previous complete checkpoint when the
newest one is damaged, and says so. ``keep_last`` counts the complete checkpoints of one
identity: another run's checkpoints are never pruned.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from weighted_mtp.model_io.files import sha256_file
from weighted_mtp.training.run_identity import RunIdentity, identity_differences

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
STATE_FILE = "trainer_state.json"
IDENTITY_FILE = "identity.json"
CHECKPOINT_NAME = re.compile(r"^step_(\d{8})$")
IDENTITY_DIR_NAME = re.compile(r"^[0-9a-f]{16}$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (missing, incomplete, corrupt or from another run)."""


@dataclass
class TrainerState:
    """The loop's counters and provenance saved beside the weights.

    ``run_identity`` and ``identity_components`` are empty in checkpoints written before run
    identities existed; such checkpoints are never resumed."""

    step: int
    tokens_seen: int
    plan_sha256: str
    world_size: int
    method: str
    scheduler: dict
    skipped_sequences: int = 0
    run_identity: str = ""
    identity_components: dict = field(default_factory=dict)


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def identity_root(base: Path, identity: RunIdentity) -> Path:
    """The checkpoint directory of one run identity under a method's checkpoint location."""
    return Path(base) / identity.short


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


def incompatibility(state: TrainerState, identity: RunIdentity) -> str | None:
    """Why a checkpoint cannot continue the run of ``identity``, or None when it can."""
    if not state.run_identity:
        return (
            "it records no run identity (written before run identities existed), so nothing "
            "says it is the same experiment"
        )
    if state.run_identity != identity.digest:
        changes = identity_differences(state.identity_components, identity.components)
        return (
            f"it belongs to run identity {state.run_identity[:16]} and this run is "
            f"{identity.short}" + (f" ({'; '.join(changes)})" if changes else "")
        )
    return None


def choose_checkpoint(root: Path, resume: str, identity: RunIdentity) -> Path | None:
    """The checkpoint to resume from.

    ``never`` -> None. A path -> that checkpoint, verified and of this run identity, else
    :class:`CheckpointError`. ``auto`` -> the newest complete checkpoint under ``root`` (this
    identity's directory, :func:`identity_root`) that verifies and records this identity;
    damaged ones are skipped with a warning naming the file; None when none qualifies (the
    caller says why, :func:`fresh_start_reason`).
    """
    if resume == "never":
        return None
    if resume != "auto":
        path = Path(resume)
        verify_checkpoint(path)
        reason = incompatibility(read_trainer_state(path), identity)
        if reason:
            raise CheckpointError(
                f"{path}: cannot continue this run: {reason}; set resume: auto (continues only "
                "this identity's checkpoints) or never"
            )
        return path
    for step, path in reversed(list_checkpoints(root)):
        try:
            verify_checkpoint(path)
        except CheckpointError as exc:
            logger.warning(
                "checkpoint of step %d is unusable (%s); falling back to an older one", step, exc
            )
            continue
        reason = incompatibility(read_trainer_state(path), identity)
        if reason:  # copied here by hand, or a 16-digit prefix shared by two digests
            logger.warning("not resuming from %s: %s", path, reason)
            continue
        return path
    return None


@dataclass(frozen=True)
class OtherRun:
    """Another run identity's checkpoint directory (local or remote) beside this run's."""

    where: str
    digest: str
    components: dict
    modified: float


def read_identity_file(path: Path) -> RunIdentity | None:
    try:
        return RunIdentity.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def local_other_runs(base: Path, identity: RunIdentity) -> list[OtherRun]:
    """The other identities' directories under ``base`` (a method's checkpoint location)."""
    if not base.is_dir():
        return []
    runs = []
    for entry in base.iterdir():
        if not IDENTITY_DIR_NAME.match(entry.name) or entry.name == identity.short:
            continue
        other = read_identity_file(entry / IDENTITY_FILE)
        if other is not None:
            modified = (entry / IDENTITY_FILE).stat().st_mtime
            runs.append(OtherRun(str(entry), other.digest, other.components, modified))
    return runs


def legacy_checkpoints(base: Path) -> int:
    """Checkpoints directly under ``base``: written before run identities, never resumed."""
    return len(list_checkpoints(base))


def fresh_start_reason(
    identity: RunIdentity, where: str, others: list[OtherRun], legacy: int = 0
) -> str:
    """One line: why ``resume: auto`` trains from step 1 (the fields in which the most
    recently saved other run differs, when there is one)."""
    line = f"no checkpoint of run identity {identity.short} in {where}"
    if others:
        newest = max(others, key=lambda r: r.modified)
        changes = identity_differences(newest.components, identity.components)
        line += (
            f"; the newest other run there ({newest.where}, identity {newest.digest[:16]}) "
            f"differs in {'; '.join(changes) if changes else 'its digest'}"
        )
    if legacy:
        line += f"; {legacy} checkpoint(s) from before run identities are ignored"
    return line


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


def _write_json_atomically(path: Path, value: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint(
    root: Path,
    wrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    *,
    keep_last: int,
    extra_files: dict[str, Path] | None = None,
    commit: bool = True,
) -> Path:
    """Write the checkpoint of ``state.step`` under ``root`` (collective: every rank calls
    it). ``extra_files`` (rank 0's, e.g. the metric history so far) are copied in under their
    names. Returns the final directory.

    ``commit=True`` writes the manifest and prunes to the newest ``keep_last`` here, on rank
    0; ``commit=False`` leaves both to the caller (:func:`commit_checkpoint`, from a thread
    the other ranks do not wait for): until then the checkpoint is not complete.
    """
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
        for extra, source in (extra_files or {}).items():
            if source.is_file():
                shutil.copyfile(source, partial / extra)
        if state.run_identity:
            # Rewritten at every save: its modification time says which run saved last.
            identity = {"digest": state.run_identity, "components": state.identity_components}
            _write_json_atomically(root / IDENTITY_FILE, identity)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        if commit:
            commit_checkpoint(final, keep_last=keep_last)
    _barrier()
    return final


def commit_checkpoint(path: Path, *, keep_last: int) -> None:
    """Hash every file of ``path`` into its manifest (written last, atomically: the commit),
    then prune ``path.parent`` to its newest ``keep_last`` complete checkpoints. Not a
    collective: rank 0 calls it, inline or from its checkpoint thread."""
    files = {
        str(p.relative_to(path)): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    step = int(CHECKPOINT_NAME.match(path.name).group(1))  # type: ignore[union-attr]
    _write_json_atomically(path / MANIFEST_FILE, {"step": step, "files": files})
    prune_checkpoints(path.parent, keep_last)


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` complete checkpoints of ``root`` (one identity's
    directory); also remove uncommitted ``step_*`` debris older than the newest complete one
    (a crash between rename and manifest)."""
    complete = list_checkpoints(root)
    for _, old in complete[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    if not complete:
        return
    newest = complete[-1][0]
    for entry in root.iterdir():
        match = CHECKPOINT_NAME.match(entry.name)
        if match and int(match.group(1)) < newest and not (entry / MANIFEST_FILE).exists():
            shutil.rmtree(entry, ignore_errors=True)


def load_checkpoint(
    path: Path,
    wrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    identity: RunIdentity,
) -> TrainerState:
    """Restore model, optimizer and this rank's RNG from ``path`` (collective); returns the
    trainer state (the caller restores the scheduler from ``state.scheduler``).

    Raises:
        CheckpointError: ``path`` belongs to another run identity.
    """
    state = read_trainer_state(path)
    reason = incompatibility(state, identity)
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


# --------------------------------------------------------------------------- rank 0's long I/O
# Rank 0 alone downloads and verifies the checkpoint to resume from (81 GB at 7B with the
# optimizer state), and at the end writes the model and waits for the last upload, while the
# other ranks wait. They must not wait inside a collective of the training process group: on
# CUDA that is an NCCL kernel watched by NCCL's timeout, the same timeout that should catch a
# genuinely hung step. They wait instead on a CPU (gloo) group made for this, in
# ``torch.distributed.monitored_barrier`` (gloo only) with an explicit timeout,
# ``runtime.collective_timeout_s``; when it expires, rank 0 names the rank that did not arrive.
# The group is created once, by every rank at the same point (the loop's resume point), before
# rank 0 starts any I/O: creating it is itself a rendezvous.
_IO_GROUP: dict[str, tuple[object, object]] = {}


def _io_group(timeout_s: float) -> dist.ProcessGroup:
    world = dist.group.WORLD
    cached = _IO_GROUP.get("group")
    if cached is not None and cached[0] is world:
        return cached[1]  # type: ignore[return-value]
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    _IO_GROUP["group"] = (world, group)
    return group


def io_group(timeout_s: float) -> dist.ProcessGroup | None:
    """The CPU group rank 0's I/O waits and hand-overs use (None on one process). Every rank
    must make the first call at the same point."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    return _io_group(timeout_s)


def wait_for_rank0(timeout_s: float) -> None:
    """Every rank waits here until rank 0 arrives, at most ``timeout_s`` seconds (rank 0's
    long I/O before it), outside the training process group's collectives."""
    group = io_group(timeout_s)
    if group is not None:
        dist.monitored_barrier(group=group, timeout=timedelta(seconds=timeout_s))


@contextlib.contextmanager
def rank0_io(timeout_s: float) -> Iterator[dist.ProcessGroup | None]:
    """``with rank0_io(t) as group:`` rank 0 does its long I/O in the body while the other
    ranks wait at the end of it (:func:`wait_for_rank0`); yields the I/O group (None on one
    process), on which a small result can then be broadcast. An exception in the body skips
    the wait: the rank exits and torchrun stops the others."""
    group = io_group(timeout_s)
    yield group
    wait_for_rank0(timeout_s)
