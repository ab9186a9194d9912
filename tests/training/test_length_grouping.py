"""Length-grouped steps in the data plan (``data_plan.group_by_length``): the sample, each row's
epoch and window are kept, each step holds a band of similar lengths, padding falls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from weighted_mtp.training.config import PARAMS_BY_METHOD
from weighted_mtp.training.data_plan import build_data_plan, group_by_length


def _metadata(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "row": np.arange(n, dtype=np.int64),
            "offset": np.arange(n, dtype=np.int64) * 100,
            "length": np.full(n, 100, dtype=np.int64),
            "is_correct": rng.random(n) < 0.6,
            "difficulty": rng.integers(1, 13, n),
            "task_id": [f"t{i // 4}" for i in range(n)],
            "n_prompt_tokens": rng.integers(20, 700, n),
            "n_output_tokens": rng.integers(5, 120, n),
        }
    )


def _padded(order: np.ndarray, tokens: np.ndarray, batch: int) -> int:
    """Tokens after padding each step to its longest row (the obvious loop)."""
    total = 0
    for start in range(0, len(order), batch):
        total += int(tokens[start : start + batch].max()) * len(order[start : start + batch])
    return total


@pytest.mark.parametrize(("n", "batch", "window", "epoch"), [(96, 4, 3, 96), (70, 4, 4, 30)])
def test_grouping_keeps_windows_epochs_and_bands(n, batch, window, epoch):
    rng = np.random.default_rng(1)
    order = rng.permutation(n) + 1000
    lengths = rng.integers(10, 500, n)
    tokens_of = dict(zip(order.tolist(), lengths.tolist(), strict=True))
    out = group_by_length(
        order, lengths, global_batch=batch, window_steps=window, epoch_size=epoch, seed=7
    )
    cuts = sorted({*range(0, n, window * batch), *range(0, n, epoch), n})
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        # The same rows in every window (hence every epoch), nothing moved across.
        assert sorted(out[lo:hi].tolist()) == sorted(order[lo:hi].tolist())
        # Each step slot of the window is a contiguous band of the window's sorted lengths.
        slot_bounds = sorted({lo, hi, *range(-(-lo // batch) * batch, hi, batch)} - {hi}) + [hi]
        bands = []
        for a, b in zip(slot_bounds[:-1], slot_bounds[1:], strict=True):
            band = sorted(tokens_of[r] for r in out[a:b].tolist())
            bands.append((band[0], band[-1]))
        bands.sort()
        for (_, high), (low, _) in zip(bands[:-1], bands[1:], strict=True):
            assert high <= low
    out_tokens = np.array([tokens_of[r] for r in out.tolist()])
    assert _padded(out, out_tokens, batch) < _padded(order, lengths, batch)
    again = group_by_length(
        order, lengths, global_batch=batch, window_steps=window, epoch_size=epoch, seed=7
    )
    np.testing.assert_array_equal(out, again)


def test_window_of_one_step_is_the_sampled_order():
    order = np.arange(20)[::-1].copy()
    out = group_by_length(
        order, np.arange(20), global_batch=4, window_steps=1, epoch_size=20, seed=0
    )
    np.testing.assert_array_equal(out, order)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="entries"):
        group_by_length(np.arange(4), np.arange(3), global_batch=2, window_steps=2,
                        epoch_size=4, seed=0)  # fmt: skip
    with pytest.raises(ValueError, match="expected >= 1"):
        group_by_length(np.arange(4), np.arange(4), global_batch=2, window_steps=0,
                        epoch_size=4, seed=0)  # fmt: skip


def test_plan_groups_by_default_and_keeps_each_epoch():
    """The default plan pads less than the sampled order (``length_group_steps=1``), with the
    same rows per epoch and the same validation rows."""
    meta = _metadata(200)
    common = {"max_steps": 60, "warmup_steps": 0, "batch_size": 8, "max_seq_len": 512}
    params = PARAMS_BY_METHOD["pretrain"](**common)
    grouped = build_data_plan("pretrain", params, meta, meta, world_size=1)
    drawn = build_data_plan(
        "pretrain", params.model_copy(update={"length_group_steps": 1}), meta, meta, world_size=1
    )
    tokens = np.minimum(meta["n_prompt_tokens"] + meta["n_output_tokens"] + 2, 512).to_numpy()
    assert _padded(grouped.train_rows, tokens[grouped.train_rows], 8) < 0.85 * _padded(
        drawn.train_rows, tokens[drawn.train_rows], 8
    )
    for start in range(0, 480, 200):  # epochs of 200 rows, the last one cut at 480
        stop = min(start + 200, 480)
        assert sorted(grouped.train_rows[start:stop]) == sorted(drawn.train_rows[start:stop])
    meta_index = meta.set_index("row")
    np.testing.assert_array_equal(
        grouped.train_offsets, meta_index.loc[grouped.train_rows, "offset"].to_numpy()
    )
    np.testing.assert_array_equal(grouped.valid_rows, drawn.valid_rows)
