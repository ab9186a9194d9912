"""Training-step throughput and step peak memory with 4 heads vs 1 head, same number of blocks.

``n_layers`` counts every block, so both models have the same parameters (n_layers=6: 1 head =
5 trunk blocks + 1 head block; 4 heads = 2 trunk blocks + 4 head blocks). The steps alternate,
each forward + backward + ``clip_grad_norm_`` + AdamW + ``zero_grad``:

- 1 head, the project's step (``MTPTrainingModule`` + ``BaselineMethod``: the fused chunked
  loss, which for one head is the usual next-token loss),
- 4 heads, the project's step,
- 4 heads, plain PyTorch (``model(tokens)`` -> ``[B, T, 4, V]`` logits, cross-entropy through
  autograd; ``bench_common.plain_mtp_loss``), one side per ``--plain`` variant (default
  ``flat,heads``, as in ``training_step.py``: ``heads`` is one ``F.cross_entropy`` per head),
  unless ``--no-plain``. The comparison with plain uses the best plain figure of each metric
  (the fastest for tokens/s, the leanest for step peak), as ``training_step.py`` does.

Step peak memory is measured in this process as in ``training_step.py`` (``VmHWM`` reset before
each step, minus the RSS before it); ``--no-memory`` skips it.

    .venv/bin/python benchmarks/mtp_heads_throughput.py [--dim 256 --layers 6 --batch 8 --seq 256]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from weighted_mtp.alignment import shift_labels
from weighted_mtp.losses.methods import BaselineMethod
from weighted_mtp.training.module import MTPTrainingModule

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, from any cwd
from bench_common import (  # noqa: E402
    PLAIN_VARIANTS,
    add_model_options,
    build_model,
    init_torch,
    measure_alternating,
    module_step,
    plain_step,
    reset_peak_rss,
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
    parser.add_argument(
        "--plain",
        type=lambda s: s.split(","),
        default=["flat", "heads"],
        help=f"comma-separated plain variants among {','.join(PLAIN_VARIANTS)}",
    )
    parser.add_argument("--no-plain", action="store_true", help="skip the plain 4-head step")
    parser.add_argument("--no-memory", action="store_true", help="skip the step peak memory")
    opts = parser.parse_args()
    for variant in opts.plain:
        if variant not in PLAIN_VARIANTS:
            parser.error(f"--plain: unknown variant {variant!r} (one of {PLAIN_VARIANTS})")
    init_torch(opts.threads)
    one = build_model(opts, n_future_tokens=1, max_seq_len=opts.seq)
    many = build_model(opts, n_future_tokens=opts.future, max_seq_len=opts.seq)
    assert sum(p.numel() for p in one.parameters()) == sum(p.numel() for p in many.parameters())
    tokens = torch.randint(0, opts.vocab, (opts.batch, opts.seq))
    targets = shift_labels(tokens)

    def ours(model: torch.nn.Module):
        module = MTPTrainingModule(model, None, BaselineMethod())
        return module_step(module, tokens, targets, chunk_size=opts.chunk)

    runs = {
        "1 head, ours": ours(one),
        f"{opts.future} heads, ours": ours(many),
    }
    plain_names: list[str] = []
    if not opts.no_plain:
        torch.manual_seed(1)
        # The plain variants share one model (each with its own AdamW): they differ only in
        # how the loss reads the logits, and the timing does not depend on the weights' values.
        plain_model = build_model(opts, n_future_tokens=opts.future, max_seq_len=opts.seq)
        for variant in opts.plain:
            plain_names.append(f"{opts.future} heads, plain[{variant}]")
            runs[plain_names[-1]] = plain_step(plain_model, tokens, targets, variant=variant)
    memory = not opts.no_memory and reset_peak_rss()
    samples = measure_alternating(runs, warmup=opts.warmup, steps=opts.steps, memory=memory)

    n_tokens = opts.batch * opts.seq
    print(
        f"shape: dim={opts.dim} blocks={opts.layers} vocab={opts.vocab} "
        f"batch={opts.batch}x{opts.seq} chunk={opts.chunk} threads={opts.threads} "
        f"steps={opts.steps}"
    )
    rates = {name: n_tokens / s.median_s for name, s in samples.items()}
    for name, rate in rates.items():
        peak = samples[name].median_peak_mib
        mem = "" if peak is None else f", step peak {peak:6.0f} MiB"
        print(f"{name:28s} {rate:10.0f} tokens/s  (median step {n_tokens / rate:.3f} s{mem})")
    names = list(rates)
    print(f"ratio {names[1]} / {names[0]}: {rates[names[1]] / rates[names[0]]:.2f}x (goal >= 0.85)")
    if memory:
        peak_ratio = samples[names[1]].median_peak_mib / samples[names[0]].median_peak_mib
        print(f"step peak {names[1]} / {names[0]}: {peak_ratio:.2f}x (goal <= 1.5x)")
    if plain_names:
        fastest = max(plain_names, key=lambda name: rates[name])
        print(f"ratio {fastest} / {names[0]}: {rates[fastest] / rates[names[0]]:.2f}x")
        print(
            f"ratio {names[1]} / plain (fastest, {fastest}): {rates[names[1]] / rates[fastest]:.2f}x"
        )
        if memory:
            leanest = min(plain_names, key=lambda name: samples[name].median_peak_mib)
            peak_ratio = samples[names[1]].median_peak_mib / samples[leanest].median_peak_mib
            print(f"step peak {names[1]} / plain (leanest, {leanest}): {peak_ratio:.2f}x")


if __name__ == "__main__":
    main()
