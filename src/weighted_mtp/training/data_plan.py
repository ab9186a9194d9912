"""The data plan of a training run: which rows, in which order, split how across ranks.

The Kedro node draws the sample from the metadata table (the method's sampler), once, and
writes the plan beside the job spec; every worker reads its own share of it. Keeping the
whole order in one file makes a run reproducible and resumable and lets tests check that no
row is seen twice in an epoch.

Order and split: the plan is the *global* order of training rows. Optimizer step ``s`` uses
rows ``order[s*G : (s+1)*G]`` with ``G = batch_size * grad_accum_steps * world_size``; inside
a step, micro-batch ``m`` of rank ``r`` takes the ``B`` rows at ``(m * world + r) * B``.
The set of rows of a step does not depend on the world size, so a 2-process run and a
1-process run with twice the accumulation see the same global batches, and the curriculum's
order is kept step by step.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from weighted_mtp.data.sampling import (
    CurriculumConfig,
    sample_balanced,
    sample_correct,
    sample_curriculum,
)
from weighted_mtp.training.config import (
    CriticParams,
    PretrainParams,
    TrainingParams,
    VerifiableParams,
)

logger = logging.getLogger(__name__)


class DataPlanError(ValueError):
    """The metadata cannot provide what the training parameters ask for."""


@dataclass
class DataPlan:
    """Row numbers with their byte offsets and lengths, train (in order) and validation."""

    train_rows: np.ndarray
    train_offsets: np.ndarray
    train_lengths: np.ndarray
    valid_rows: np.ndarray
    valid_offsets: np.ndarray
    valid_lengths: np.ndarray
    epoch_size: int

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            **{k: np.asarray(v) for k, v in self.__dict__.items()},
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> DataPlan:
        with np.load(path) as data:
            return cls(**{k: (int(data[k]) if k == "epoch_size" else data[k]) for k in data.files})

    def fingerprint(self) -> str:
        """sha256 of the training and validation order: a resumed run must use the same."""
        digest = hashlib.sha256()
        for name in ("train_rows", "train_offsets", "valid_rows", "valid_offsets"):
            digest.update(np.ascontiguousarray(getattr(self, name), dtype=np.int64).tobytes())
        return digest.hexdigest()

    def step_rows(self, step: int, global_batch: int) -> np.ndarray:
        """Positions (into ``train_*``) of optimizer step ``step`` (0-based)."""
        return np.arange(step * global_batch, (step + 1) * global_batch)

    def micro_batch_positions(
        self, step: int, micro: int, rank: int, *, batch_size: int, grad_accum: int, world: int
    ) -> np.ndarray:
        """Positions of rank ``rank``'s micro-batch ``micro`` in step ``step``."""
        global_batch = batch_size * grad_accum * world
        start = step * global_batch + (micro * world + rank) * batch_size
        return np.arange(start, start + batch_size)

    def valid_positions(self, rank: int, world: int) -> np.ndarray:
        """This rank's validation rows: every ``world``-th, so that ranks have equal shares."""
        usable = (len(self.valid_rows) // world) * world
        return np.arange(rank, usable, world)


def fits_sequence(metadata: pd.DataFrame, max_seq_len: int) -> np.ndarray:
    """Rows whose output (with EOS) fits beside BOS in ``max_seq_len`` tokens; the prompt may
    still be cut from the left, the output never is."""
    return (metadata["n_output_tokens"].to_numpy(np.int64) + 1) <= max_seq_len


def _draw(
    method: str, params: TrainingParams, metadata: pd.DataFrame, n: int, seed: int
) -> np.ndarray:
    if method == "critic":
        assert isinstance(params, CriticParams)
        return sample_balanced(
            metadata,
            n,
            seed=seed,
            correct_fraction=params.correct_fraction,
            on_shortfall="shrink",
        )
    if method == "verifiable":
        assert isinstance(params, VerifiableParams)
        cur = params.curriculum
        config = CurriculumConfig(
            difficulty_bins={k: list(v) for k, v in cur.difficulty_bins.items()},
            phase_ends=list(cur.phase_ends),
            phase_mixes=[dict(m) for m in cur.phase_mixes],
            correct_fraction=cur.correct_fraction,
        )
        return sample_curriculum(metadata, n, seed=seed, config=config, on_shortfall="shrink")
    if method == "pretrain":
        assert isinstance(params, PretrainParams)
        if params.correct_fraction is None:
            rows = metadata["row"].to_numpy(np.int64)
            return np.random.default_rng(seed).permutation(rows)[:n]
        return sample_balanced(
            metadata, n, seed=seed, correct_fraction=params.correct_fraction, on_shortfall="shrink"
        )
    return sample_correct(metadata, n, seed=seed, on_shortfall="shrink")


def _validation_draw(
    method: str, params: TrainingParams, metadata: pd.DataFrame, n: int, seed: int
) -> np.ndarray:
    # Critic and verifiable report value accuracy / AUC, which needs both classes.
    if method in ("critic", "verifiable"):
        return sample_balanced(metadata, n, seed=seed, on_shortfall="shrink")
    return sample_correct(metadata, n, seed=seed, on_shortfall="shrink")


def build_data_plan(
    method: str,
    params: TrainingParams,
    train_metadata: pd.DataFrame,
    valid_metadata: pd.DataFrame | None,
    *,
    world_size: int,
) -> DataPlan:
    """Sample the rows of a run (see the module docstring for order and split).

    ``params.n_samples`` rows are drawn (default: exactly what ``max_steps`` global batches
    need); when fewer are drawn or available, further epochs repeat them, each epoch in a new
    seeded order, except the curriculum (``verifiable``), whose epochs repeat its phase order.

    Raises:
        DataPlanError: no row fits ``max_seq_len`` or the sampler finds nothing to draw.
    """
    global_batch = params.batch_size * params.grad_accum_steps * world_size
    needed = params.max_steps * global_batch
    fits = fits_sequence(train_metadata, params.max_seq_len)
    n_dropped = int((~fits).sum())
    if n_dropped:
        logger.info(
            "%s: %d of %d training rows have an output longer than max_seq_len=%d and are skipped",
            method,
            n_dropped,
            len(train_metadata),
            params.max_seq_len,
        )
    eligible = train_metadata[fits]
    if eligible.empty:
        raise DataPlanError(
            f"{method}: no training row fits max_seq_len={params.max_seq_len} "
            f"({len(train_metadata)} rows in the metadata)"
        )
    n_request = params.n_samples or needed
    epoch = _draw(method, params, eligible, n_request, params.seed)
    if len(epoch) == 0:
        raise DataPlanError(
            f"{method}: the sampler drew no row from {len(eligible)} eligible rows (a "
            "correct-only method needs correct solutions, the critic both classes)"
        )
    if len(epoch) < n_request:
        logger.info("%s: asked for %d rows, the data offers %d", method, n_request, len(epoch))
    epochs = [epoch]
    rng = np.random.default_rng(params.seed + 1)
    while sum(len(e) for e in epochs) < needed:
        epochs.append(epoch if method == "verifiable" else rng.permutation(epoch))
    order = np.concatenate(epochs)[:needed]

    meta_index = train_metadata.set_index("row")
    offsets = meta_index.loc[order, "offset"].to_numpy(np.int64)
    lengths = meta_index.loc[order, "length"].to_numpy(np.int64)

    if valid_metadata is not None and params.val_samples > 0 and len(valid_metadata):
        valid_eligible = valid_metadata[fits_sequence(valid_metadata, params.max_seq_len)]
        vrows = _validation_draw(
            method, params, valid_eligible, params.val_samples, params.seed + 2
        )
        vrows = vrows[: (len(vrows) // world_size) * world_size]
        vindex = valid_metadata.set_index("row")
        voffsets = vindex.loc[vrows, "offset"].to_numpy(np.int64)
        vlengths = vindex.loc[vrows, "length"].to_numpy(np.int64)
    else:
        vrows = voffsets = vlengths = np.zeros(0, dtype=np.int64)
    logger.info(
        "%s: %d training rows (%d per epoch, %.2f epochs), %d validation rows, global batch %d",
        method,
        len(order),
        len(epoch),
        len(order) / len(epoch),
        len(vrows),
        global_batch,
    )
    return DataPlan(
        train_rows=order.astype(np.int64),
        train_offsets=offsets,
        train_lengths=lengths,
        valid_rows=np.asarray(vrows, dtype=np.int64),
        valid_offsets=voffsets,
        valid_lengths=vlengths,
        epoch_size=len(epoch),
    )
