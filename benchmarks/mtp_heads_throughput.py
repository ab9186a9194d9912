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
import time
from collections.abc import Callable

import torch

from weighted_mtp.models import (
    ModelArgs,
    MTPTransformer,
    mtp_loss_head_by_head,
    mtp_loss_naive,
    shift_labels,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--future", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive 4-head loss")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)

    def build(n_future: int) -> MTPTransformer:
        return MTPTransformer(
            ModelArgs(
                dim=opts.dim,
                n_layers=opts.layers,
                n_heads=opts.heads,
                vocab_size=opts.vocab,
                multiple_of=32,
                n_future_tokens=n_future,
                max_seq_len=opts.seq,
            )
        )

    one, many = build(1), build(opts.future)
    assert sum(p.numel() for p in one.parameters()) == sum(p.numel() for p in many.parameters())
    tokens = torch.randint(0, opts.vocab, (opts.batch, opts.seq))
    targets = shift_labels(tokens)

    def make_step(model: MTPTransformer, loss: Callable[[], None]) -> Callable[[], None]:
        opt = torch.optim.AdamW(model.parameters())

        def step() -> None:
            loss()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    def naive() -> None:
        mtp_loss_naive(many, tokens, targets).loss.backward()

    runs = {
        "1 head, head-by-head loss": make_step(
            one, lambda: mtp_loss_head_by_head(one, tokens, targets, chunk_size=opts.chunk)
        ),
        f"{opts.future} heads, head-by-head loss": make_step(
            many, lambda: mtp_loss_head_by_head(many, tokens, targets, chunk_size=opts.chunk)
        ),
    }
    if not opts.no_naive:
        runs[f"{opts.future} heads, naive all-heads loss"] = make_step(many, naive)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(opts.warmup + opts.steps):
        for name, step in runs.items():
            start = time.perf_counter()
            step()
            if i >= opts.warmup:
                times[name].append(time.perf_counter() - start)

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
