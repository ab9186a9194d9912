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
order is kept step by step (up to ``length_group_steps``: within each window of that many
steps the drawn rows are regrouped by length, :func:`group_by_length`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
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
    params_group,
)

logger = logging.getLogger(__name__)


class DataPlanError(ValueError):
    """The metadata cannot provide what the training parameters ask for."""


def _no_rows() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class DataPlan:
    """Row numbers with their byte offsets and lengths: train (in order), validation (the
    loss panel: correct held-out rows, the same for every method given the seed and
    ``val_samples``) and the value panel (balanced held-out rows, value-head methods only;
    empty otherwise and in plans written before it existed)."""

    train_rows: np.ndarray
    train_offsets: np.ndarray
    train_lengths: np.ndarray
    valid_rows: np.ndarray
    valid_offsets: np.ndarray
    valid_lengths: np.ndarray
    epoch_size: int
    value_rows: np.ndarray = field(default_factory=_no_rows)
    value_offsets: np.ndarray = field(default_factory=_no_rows)
    value_lengths: np.ndarray = field(default_factory=_no_rows)

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
        names = ["train_rows", "train_offsets", "valid_rows", "valid_offsets"]
        if len(self.value_rows):  # plans without a value panel keep their old fingerprint
            names += ["value_rows", "value_offsets"]
        for name in names:
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

    def valid_positions(self, rank: int, world: int, panel: str = "loss") -> np.ndarray:
        """This rank's rows of a validation panel (``loss``: ``valid_*``; ``value``:
        ``value_*``): every ``world``-th, so that ranks have equal shares."""
        rows = self.valid_rows if panel == "loss" else self.value_rows
        usable = (len(rows) // world) * world
        return np.arange(rank, usable, world)

    def panel(self, panel: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, offsets, lengths)`` of validation panel ``loss`` or ``value``."""
        if panel == "loss":
            return self.valid_rows, self.valid_offsets, self.valid_lengths
        if panel == "value":
            return self.value_rows, self.value_offsets, self.value_lengths
        raise ValueError(f"unknown validation panel {panel!r}: expected 'loss' or 'value'")


def fits_sequence(metadata: pd.DataFrame, max_seq_len: int) -> np.ndarray:
    """Rows whose output (with EOS) fits beside BOS in ``max_seq_len`` tokens; the prompt may
    still be cut from the left, the output never is."""
    return (metadata["n_output_tokens"].to_numpy(np.int64) + 1) <= max_seq_len


def _row_tokens(meta_index: pd.DataFrame, rows: np.ndarray, max_seq_len: int) -> np.ndarray:
    """Each row's collated length in tokens (BOS + prompt + output + EOS, the prompt cut to
    fit ``max_seq_len``), from the metadata's token counts."""
    total = (
        meta_index.loc[rows, "n_prompt_tokens"].to_numpy(np.int64)
        + meta_index.loc[rows, "n_output_tokens"].to_numpy(np.int64)
        + 2
    )
    return np.minimum(total, max_seq_len)


def group_by_length(
    order: np.ndarray,
    n_tokens: np.ndarray,
    *,
    global_batch: int,
    window_steps: int,
    epoch_size: int,
    seed: int,
) -> np.ndarray:
    """``order`` with the rows of every window of ``window_steps`` steps regrouped so that
    each step holds rows of similar length.

    A micro-batch is padded to its longest row, and attention costs the square of that width:
    drawn at random, a step of 8 rows is padded to about 1.4x its tokens (``max_seq_len``
    512, a quarter of the rows at the limit). Inside a window (its bounds on the step grid,
    never across an epoch's end, so each epoch still sees each of its rows once), the rows are
    sorted by ``n_tokens`` (stable: ties keep the sampled order), cut into the window's step
    slots, and the slots are filled in a seeded random order, so that length does not rise
    step by step through a window. The sample is unchanged, and so is each row's epoch and
    its window of steps; which rows share a step changes (the training numerics do too).
    ``window_steps == 1`` returns ``order`` unchanged.

    Args:
        order: the sampled row order (every epoch, concatenated, cut to the steps' rows).
        n_tokens: ``[len(order)]`` each row's collated length.
        global_batch: rows per optimizer step.
        window_steps: steps per window (>= 1).
        epoch_size: rows per epoch; windows never straddle an epoch boundary.
        seed: seed of the slots' order.
    """
    if len(n_tokens) != len(order):
        raise ValueError(f"n_tokens has {len(n_tokens)} entries for {len(order)} rows")
    if window_steps < 1 or global_batch < 1 or epoch_size < 1:
        raise ValueError(
            f"window_steps={window_steps}, global_batch={global_batch}, "
            f"epoch_size={epoch_size}: expected >= 1 each"
        )
    if window_steps == 1:
        return order
    window = window_steps * global_batch
    n = len(order)
    cuts = [*np.union1d(np.arange(0, n, window), np.arange(0, n, epoch_size)).tolist(), n]
    rng = np.random.default_rng(seed)
    out = order.copy()
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        # The window's step slots: its span cut at the step grid.
        grid = np.arange(-(-lo // global_batch) * global_batch, hi, global_batch)
        bounds = np.union1d(grid[grid > lo], [lo, hi])
        slots = list(zip(bounds[:-1], bounds[1:], strict=True))
        by_length = order[lo:hi][np.argsort(n_tokens[lo:hi], kind="stable")]
        taken = 0
        for i in rng.permutation(len(slots)):
            start, stop = slots[i]
            out[start:stop] = by_length[taken : taken + stop - start]
            taken += stop - start
    return out


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


def _validation_draw(metadata: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    # The loss panel: correct rows, drawn alike for every method, so that val/loss compares
    # methods on the same rows (issue 16 item 5).
    return sample_correct(metadata, n, seed=seed, on_shortfall="shrink")


def _value_panel_draw(
    params: TrainingParams, metadata: pd.DataFrame, seed: int, world_size: int
) -> np.ndarray:
    # The value panel: balanced, for the value AUC, its interval and the bug diagnostics.
    n = getattr(params, "value_val_samples", 0)
    if n <= 0 or metadata.empty:
        return _no_rows()
    rows = sample_balanced(metadata, n, seed=seed, on_shortfall="shrink")
    if len(rows) < n:
        logger.warning(
            "value panel: asked for %d balanced held-out rows, the valid split offers %d "
            "(%d incorrect); raise data_engineering.synthetic.n_valid_tasks",
            n,
            len(rows),
            int((~metadata["is_correct"].to_numpy(bool)).sum()),
        )
    return rows[: (len(rows) // world_size) * world_size]


def _locate(metadata: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = metadata.set_index("row")
    return (
        index.loc[rows, "offset"].to_numpy(np.int64),
        index.loc[rows, "length"].to_numpy(np.int64),
    )


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
    A control (``verifiable_uniform``) draws exactly as the method it controls: same rows, same
    order, same validation rows.

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
    drawn_as = params_group(method)
    epoch = _draw(drawn_as, params, eligible, n_request, params.seed)
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
        epochs.append(epoch if drawn_as == "verifiable" else rng.permutation(epoch))
    meta_index = train_metadata.set_index("row")
    drawn = np.concatenate(epochs)[:needed]
    order = group_by_length(
        drawn,
        _row_tokens(meta_index, drawn, params.max_seq_len),
        global_batch=global_batch,
        window_steps=params.length_group_steps,
        epoch_size=len(epoch),
        seed=params.seed + 3,
    )

    offsets = meta_index.loc[order, "offset"].to_numpy(np.int64)
    lengths = meta_index.loc[order, "length"].to_numpy(np.int64)

    vrows = value_rows = _no_rows()
    if valid_metadata is not None and len(valid_metadata):
        valid_eligible = valid_metadata[fits_sequence(valid_metadata, params.max_seq_len)]
        if params.val_samples > 0:
            vrows = _validation_draw(valid_eligible, params.val_samples, params.seed + 2)
            vrows = vrows[: (len(vrows) // world_size) * world_size]
        value_rows = _value_panel_draw(params, valid_eligible, params.seed + 3, world_size)
    voffsets, vlengths = _locate(valid_metadata, vrows) if len(vrows) else (_no_rows(),) * 2
    value_offsets, value_lengths = (
        _locate(valid_metadata, value_rows) if len(value_rows) else (_no_rows(),) * 2
    )
    logger.info(
        "%s: %d training rows (%d per epoch, %.2f epochs), %d validation rows (correct), "
        "%d value-panel rows (balanced), global batch %d",
        method,
        len(order),
        len(epoch),
        len(order) / len(epoch),
        len(vrows),
        len(value_rows),
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
        value_rows=np.asarray(value_rows, dtype=np.int64),
        value_offsets=value_offsets,
        value_lengths=value_lengths,
    )
