"""Training-step throughput: our MTPTransformer (n_future_tokens=1) vs HF LlamaForCausalLM.

Both models have the same shape and dtype and run the same step: forward, next-token
cross-entropy, backward, AdamW. Steps alternate between the two models so that load from
other processes on a shared machine hits both alike; the median step time is reported.

    .venv/bin/python benchmarks/model_throughput.py [--dim 256 --layers 6 --batch 8 --seq 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from weighted_mtp.models import MTPTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, from any cwd
from bench_common import (  # noqa: E402
    add_model_options,
    hf_llama,
    init_torch,
    model_args,
    time_alternating,
    training_step,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, vocab=4000, kv_heads=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    opts = parser.parse_args()
    init_torch(opts.threads)
    dtype = getattr(torch, opts.dtype)

    args = model_args(opts, n_future_tokens=1, max_seq_len=opts.seq, n_kv_heads=opts.kv_heads)
    ours = MTPTransformer(args).to(dtype)
    hf = hf_llama(args).to(dtype)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_hf = sum(p.numel() for p in hf.parameters())
    assert n_ours == n_hf, (n_ours, n_hf)

    tokens = torch.randint(0, args.vocab_size, (opts.batch, opts.seq))
    targets = tokens[:, 1:].reshape(-1)

    def loss_ours() -> None:
        logits = ours(tokens, return_all_heads=False)[:, :-1, 0]
        F.cross_entropy(logits.reshape(-1, args.vocab_size).float(), targets).backward()

    def loss_hf() -> None:
        logits = hf(input_ids=tokens).logits[:, :-1]
        F.cross_entropy(logits.reshape(-1, args.vocab_size).float(), targets).backward()

    runs = {
        "ours (MTPTransformer, 1 head)": training_step(ours, loss_ours),
        "transformers LlamaForCausalLM": training_step(hf, loss_hf),
    }
    times = time_alternating(runs, warmup=opts.warmup, steps=opts.steps)

    n_tokens = opts.batch * opts.seq
    print(
        f"shape: dim={args.dim} layers={args.n_layers} heads={args.n_heads}/{args.kv_heads} "
        f"vocab={args.vocab_size} batch={opts.batch}x{opts.seq} dtype={opts.dtype} "
        f"threads={opts.threads} params={n_ours / 1e6:.2f}M steps={opts.steps}"
    )
    rates = {}
    for name, samples in times.items():
        rates[name] = n_tokens / statistics.median(samples)
        print(
            f"{name:32s} {rates[name]:10.0f} tokens/s  (median step {statistics.median(samples):.3f} s)"
        )
    ours_rate, hf_rate = rates.values()
    print(f"ratio ours / transformers: {ours_rate / hf_rate:.2f}x (goal >= 1.0)")


if __name__ == "__main__":
    main()
