"""Training-step throughput with 4 heads (head-by-head loss) vs 1 head, same number of blocks.

``n_layers`` counts every block, so both models have the same parameters (n_layers=6: 1 head =
5 trunk blocks + 1 head block; 4 heads = 2 trunk blocks + 4 head blocks). Three steps are
timed, alternating, each forward + backward + AdamW:

- 1 head, ``mtp_loss_head_by_head`` (degenerates to the usual next-token loss),
- 4 heads, ``mtp_loss_head_by_head``,
- 4 heads, ``mtp_loss_naive`` (all heads' logits at once, ``logits[:, :T-k, k]`` slicing).

    .venv/bin/python benchmarks/mtp_heads_throughput.py [--dim 256 --layers 6 --batch 8 --seq 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from weighted_mtp.models import mtp_loss_head_by_head, mtp_loss_naive, shift_labels

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, from any cwd
from bench_common import (  # noqa: E402
    add_model_options,
    build_model,
    init_torch,
    time_alternating,
    training_step,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, vocab=4000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--future", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive 4-head loss")
    opts = parser.parse_args()
    init_torch(opts.threads)
    one = build_model(opts, n_future_tokens=1, max_seq_len=opts.seq)
    many = build_model(opts, n_future_tokens=opts.future, max_seq_len=opts.seq)
    assert sum(p.numel() for p in one.parameters()) == sum(p.numel() for p in many.parameters())
    tokens = torch.randint(0, opts.vocab, (opts.batch, opts.seq))
    targets = shift_labels(tokens)

    def naive() -> None:
        mtp_loss_naive(many, tokens, targets).loss.backward()

    runs = {
        "1 head, head-by-head loss": training_step(
            one, lambda: mtp_loss_head_by_head(one, tokens, targets, chunk_size=opts.chunk)
        ),
        f"{opts.future} heads, head-by-head loss": training_step(
            many, lambda: mtp_loss_head_by_head(many, tokens, targets, chunk_size=opts.chunk)
        ),
    }
    if not opts.no_naive:
        runs[f"{opts.future} heads, naive all-heads loss"] = training_step(many, naive)
    times = time_alternating(runs, warmup=opts.warmup, steps=opts.steps)

    n_tokens = opts.batch * opts.seq
    print(
        f"shape: dim={opts.dim} blocks={opts.layers} vocab={opts.vocab} "
        f"batch={opts.batch}x{opts.seq} chunk={opts.chunk} threads={opts.threads} "
        f"steps={opts.steps}"
    )
    rates = {name: n_tokens / statistics.median(samples) for name, samples in times.items()}
    for name, rate in rates.items():
        print(f"{name:36s} {rate:10.0f} tokens/s  (median step {n_tokens / rate:.3f} s)")
    names = list(rates)
    print(f"ratio {names[1]} / {names[0]}: {rates[names[1]] / rates[names[0]]:.2f}x (goal >= 0.85)")
    if len(names) > 2:
        print(f"ratio {names[2]} / {names[0]}: {rates[names[2]] / rates[names[0]]:.2f}x")


if __name__ == "__main__":
    main()
