"""The default micro training step on the default run's data: the sampled order as drawn
(``length_group_steps: 1``, what every job did before) against length-grouped steps (the
default, ``length_group_steps: 16``; ``training/data_plan.py``, ``group_by_length``).

Both sides train the micro MTP model of ``conf/base/parameters_micro_models.yml`` (same
initial weights), with pretraining's data plan (``micro_models.pretraining``: batch 8,
``max_seq_len`` 512, every training row), built by ``build_data_plan`` from the metadata of
``data/05_model_input/codecontests`` and read and collated by ``BatchReader`` with the run's
tokenizer (``data/06_models/tokenizer``), as ``training/loop.py`` does. The step is the loop's:
the step's head counts as denominators, one forward and backward through
``MTPTrainingModule`` (baseline loss), clip, AdamW (``training.optim.build_optimizer``),
zero_grad; batches are collated before the timing (the loop prefetches them).

Fair comparison: a round takes ``--window-steps`` steps (one window of the grouping) at a
round-specific place of the plan; in the grouped plan those steps hold exactly the rows of the
same steps of the drawn plan (a window never mixes rows from outside it), so both sides train
the same rows and tokens per round, only grouped differently. The sides alternate step by step
(before, after, before, ...), so load from other processes hits them alike. Reported per
round: seconds of each side over the window, their ratio (drawn / grouped = the speed-up of a
job with the same steps), padded and real tokens, and the ratio of the process CPU time each
side used (user + system, every thread: with ``--threads 1`` it is the work done, and holds
on a machine that other processes load, where wall-clock time does not); then the median
ratios with their range, and tokens/s (real tokens: prompt and output, no padding) of each
side over all rounds.

    .venv/bin/python benchmarks/training_speed.py                 # 3 rounds of 16 steps
    .venv/bin/python benchmarks/training_speed.py --rounds 5 --threads 1

Needs the default run's data (``kedro run --pipelines data_engineering``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from weighted_mtp.alignment import head_valid_counts
from weighted_mtp.data.collator import PromptOutputCollator
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.losses.methods import BaselineMethod, Batch, LossContext
from weighted_mtp.models import ModelArgs, MTPTransformer
from weighted_mtp.training.batches import BatchReader
from weighted_mtp.training.config import PretrainParams
from weighted_mtp.training.data_plan import DataPlan, build_data_plan
from weighted_mtp.training.module import MTPTrainingModule

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, from any cwd
from bench_common import OptimSettings, make_optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("drawn", "grouped")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data/05_model_input/codecontests")
    parser.add_argument(
        "--tokenizer", type=Path, default=ROOT / "data/06_models/tokenizer/tokenizer.model"
    )
    parser.add_argument(
        "--config", type=Path, default=ROOT / "conf/base/parameters_micro_models.yml"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (the worker's)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    return parser.parse_args()


def build_side(model_cfg: dict, vocab: int, settings: OptimSettings):
    """A fresh micro model (seed 0), its training module and the loop's step."""
    torch.manual_seed(0)
    fields = {k: v for k, v in model_cfg.items() if k not in ("seed", "dtype")}
    module = MTPTrainingModule(
        MTPTransformer(ModelArgs(**fields, vocab_size=vocab)), None, BaselineMethod()
    ).train()
    optimizer = make_optimizer(module, settings)
    trainable = [p for p in module.parameters() if p.requires_grad]

    def step(batch: Batch) -> None:
        ctx = LossContext(
            denominators=head_valid_counts(batch.targets, module.n_heads).to(torch.float64),
            chunk_size=1024,
        )
        loss, _ = module(batch.input_ids, batch.targets, batch.is_correct, None, ctx=ctx)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _cpu_s() -> float:
    """CPU seconds of this process so far, every thread (user + system)."""
    times = os.times()
    return times.user + times.system


def read_steps(reader: BatchReader, path: str, plan: DataPlan, steps: range, bsz: int):
    return [
        reader.read_step(path, plan, s, rank=0, world=1, batch_size=bsz, grad_accum=1).micro[0]
        for s in steps
    ]


def main() -> None:
    opts = parse_args()
    torch.set_num_threads(opts.threads)
    if not (opts.data / "train.metadata.parquet").exists() or not opts.tokenizer.exists():
        sys.exit(
            f"no data at {opts.data} or no tokenizer at {opts.tokenizer}: run "
            "`kedro run --pipelines data_engineering` first"
        )
    config = yaml.safe_load(opts.config.read_text())["micro_models"]
    pre = PretrainParams.model_validate(config["pretraining"])
    if pre.grad_accum_steps != 1:
        sys.exit("this benchmark times one micro-batch per step (grad_accum_steps: 1)")
    metadata = pd.read_parquet(opts.data / "train.metadata.parquet")
    tokenizer = Tokenizer.from_file(opts.tokenizer)
    reader = BatchReader(PromptOutputCollator(tokenizer, pre.max_seq_len), torch.device("cpu"))
    path = str(opts.data / "train.jsonl")
    plans = {
        "drawn": build_data_plan(
            "pretrain",
            pre.model_copy(update={"length_group_steps": 1}),
            metadata,
            None,
            world_size=1,
        ),  # fmt: skip
        "grouped": build_data_plan(
            "pretrain",
            pre.model_copy(update={"length_group_steps": opts.window_steps}),
            metadata,
            None,
            world_size=1,
        ),
    }
    settings = OptimSettings(
        lr=pre.lr, weight_decay=pre.weight_decay, betas=(pre.beta1, pre.beta2),
        grad_clip=pre.grad_clip,
    )  # fmt: skip
    steps = {side: build_side(config["mtp"], tokenizer.vocab_size, settings) for side in SIDES}
    n_windows = pre.max_steps // opts.window_steps
    picks = np.linspace(0, n_windows - 1, opts.rounds).round().astype(int)
    print(
        f"micro MTP dim {config['mtp']['dim']}, {config['mtp']['n_layers']} blocks, vocab "
        f"{tokenizer.vocab_size}; batch {pre.batch_size}, max_seq_len {pre.max_seq_len}; "
        f"{opts.threads} threads; windows of {opts.window_steps} steps at {picks.tolist()}"
    )
    warm = read_steps(reader, path, plans["drawn"], range(opts.warmup), pre.batch_size)
    for side in SIDES:
        for batch in warm:
            steps[side](batch)
    totals = {side: [0.0, 0, 0, 0.0] for side in SIDES}  # s, real, padded tokens, CPU s
    ratios, cpu_ratios = [], []
    for r, window in enumerate(picks):
        span = range(window * opts.window_steps, (window + 1) * opts.window_steps)
        batches = {s: read_steps(reader, path, plans[s], span, pre.batch_size) for s in SIDES}
        rows = {s: sorted(plans[s].train_rows[span.start * 8 : span.stop * 8]) for s in SIDES}
        if rows["drawn"] != rows["grouped"]:
            sys.exit("the two plans' windows hold different rows: not a fair comparison")
        seconds = dict.fromkeys(SIDES, 0.0)
        cpu = dict.fromkeys(SIDES, 0.0)
        for i in range(len(span)):
            for side in SIDES:
                start, start_cpu = time.perf_counter(), _cpu_s()
                steps[side](batches[side][i])
                seconds[side] += time.perf_counter() - start
                cpu[side] += _cpu_s() - start_cpu
        for side in SIDES:
            real = sum(int(b.extras["n_tokens"]) for b in batches[side])
            padded = sum(b.input_ids.numel() for b in batches[side])
            totals[side][0] += seconds[side]
            totals[side][1] += real
            totals[side][2] += padded
            totals[side][3] += cpu[side]
        ratios.append(seconds["drawn"] / seconds["grouped"])
        cpu_ratios.append(cpu["drawn"] / cpu["grouped"])
        print(
            f"round {r + 1}: steps {span.start + 1}-{span.stop}: drawn {seconds['drawn']:.2f} s "
            f"(padded/real {totals['drawn'][2] / totals['drawn'][1]:.2f} so far), grouped "
            f"{seconds['grouped']:.2f} s (padded/real "
            f"{totals['grouped'][2] / totals['grouped'][1]:.2f} so far): ratio {ratios[-1]:.2f}, "
            f"CPU-time ratio {cpu_ratios[-1]:.2f}"
        )
    for side in SIDES:
        sec, real, padded, cpu_s = totals[side]
        n_steps = opts.rounds * opts.window_steps
        print(
            f"{side:8s} {real / sec:8.0f} tokens/s (real), {padded / sec:8.0f} padded tokens/s, "
            f"{sec / n_steps * 1000:.0f} ms/step, {cpu_s / n_steps * 1000:.0f} CPU ms/step"
        )
    print(
        f"step time drawn/grouped: median {statistics.median(ratios):.2f} "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}, {opts.rounds} rounds); CPU time "
        f"drawn/grouped: median {statistics.median(cpu_ratios):.2f} "
        f"(range {min(cpu_ratios):.2f}-{max(cpu_ratios):.2f})"
    )


if __name__ == "__main__":
    main()
