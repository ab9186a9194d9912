"""Greedy decoding tokens/s with the KV cache vs recomputing the whole prefix every step.

Both decoders generate the same ``--new`` tokens from the same prompt (asserted); the cached
one prefills the prompt once and then feeds one token per step.

    .venv/bin/python benchmarks/kv_cache_decoding.py [--new 256 --prompt 32 --batch 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from weighted_mtp.models import MTPTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, from any cwd
from bench_common import add_model_options, build_model, init_torch, timed  # noqa: E402


@torch.no_grad()
def decode_cached(model: MTPTransformer, prompt: torch.Tensor, n_new: int, all_heads: bool):
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + n_new)
    logits = model(prompt, cache=cache, return_all_heads=all_heads)
    out = [logits[:, -1, 0].argmax(-1, keepdim=True)]
    for i in range(n_new - 1):
        logits = model(
            out[-1], start_pos=prompt.shape[1] + i, cache=cache, return_all_heads=all_heads
        )
        out.append(logits[:, -1, 0].argmax(-1, keepdim=True))
    return torch.cat(out, dim=1)


@torch.no_grad()
def decode_recompute(model: MTPTransformer, prompt: torch.Tensor, n_new: int):
    seq = prompt
    for _ in range(n_new):
        nxt = model(seq, return_all_heads=False)[:, -1, 0].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    return seq[:, prompt.shape[1] :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, vocab=4000)
    parser.add_argument("--future", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    opts = parser.parse_args()
    init_torch(opts.threads)
    model = build_model(
        opts, n_future_tokens=opts.future, max_seq_len=opts.prompt + opts.new
    ).eval()
    prompt = torch.randint(0, opts.vocab, (opts.batch, opts.prompt))
    decode_cached(model, prompt, 4, all_heads=False)  # warm-up

    timings = {}
    results = {}
    runs = {
        "KV cache, head 0 only": lambda: decode_cached(model, prompt, opts.new, False),
        f"KV cache, all {opts.future} heads": lambda: decode_cached(model, prompt, opts.new, True),
        "recompute full prefix, head 0": lambda: decode_recompute(model, prompt, opts.new),
    }
    for name, run in runs.items():
        results[name], timings[name] = timed(run)
    first = next(iter(results.values()))
    assert all(torch.equal(first, r) for r in results.values()), "decoders disagree"

    print(
        f"shape: dim={opts.dim} blocks={opts.layers} heads={opts.future} vocab={opts.vocab} "
        f"batch={opts.batch} prompt={opts.prompt} new={opts.new} threads={opts.threads}"
    )
    n_tokens = opts.batch * opts.new
    for name, seconds in timings.items():
        print(f"{name:32s} {n_tokens / seconds:9.1f} tokens/s  ({seconds:.2f} s)")
    speedup = timings["recompute full prefix, head 0"] / timings["KV cache, head 0 only"]
    print(f"speed-up KV cache / recompute (head 0): {speedup:.1f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
