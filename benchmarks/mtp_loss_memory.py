"""Peak memory of one MTP loss forward + backward: head-by-head vs naive vs a 1-head model.

Method: each variant runs in a fresh subprocess (so allocator caches and earlier peaks do not
mix); the child builds the model and batch, records its resident set size (RSS), runs one
loss forward + backward, and reports the peak RSS (``ru_maxrss``) minus the RSS before the
step. That "step peak" is the activation + logits + gradient memory of the step; parameters
are the same in every variant (``n_layers`` counts all blocks). Large CPU tensors are
mmap-ed by glibc and returned on free, so RSS follows tensor memory closely.

    .venv/bin/python benchmarks/mtp_loss_memory.py [--vocab 32000 --batch 4 --seq 512]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, from any cwd
from bench_common import (  # noqa: E402
    add_model_options,
    build_model,
    init_torch,
    peak_rss_mib,
    rss_mib,
    run_child,
)

VARIANTS = {
    "1 head, plain CE on [B,T,V] logits": (1, "plain"),
    "1 head, head-by-head (chunked)": (1, "head_by_head"),
    "4 heads, naive all-heads": (4, "naive"),
    "4 heads, head-by-head (chunked)": (4, "head_by_head"),
    "4 heads, head-by-head (no chunking)": (4, "head_by_head_nochunk"),
}


def child(opts: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    from weighted_mtp.models import mtp_loss_head_by_head, mtp_loss_naive, shift_labels

    init_torch(opts.threads)
    model = build_model(opts, n_future_tokens=opts.future, max_seq_len=opts.seq)
    tokens = torch.randint(0, opts.vocab, (opts.batch, opts.seq))
    targets = shift_labels(tokens)
    # Parameter gradients exist in a training step anyway: allocate them before measuring.
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = rss_mib()
    if opts.mode == "plain":
        logits = model(tokens, return_all_heads=False)[:, :-1, 0]
        F.cross_entropy(logits.reshape(-1, opts.vocab), tokens[:, 1:].reshape(-1)).backward()
    elif opts.mode == "naive":
        mtp_loss_naive(model, tokens, targets).loss.backward()
    else:
        chunk = None if opts.mode == "head_by_head_nochunk" else opts.chunk
        mtp_loss_head_by_head(model, tokens, targets, chunk_size=chunk)
    print(json.dumps({"before_mib": before, "peak_mib": peak_rss_mib()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, vocab=32000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--future", type=int, default=4, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.mode:
        child(opts)
        return

    shared = [
        f"--{name}={getattr(opts, name)}"
        for name in ("dim", "layers", "heads", "vocab", "batch", "seq", "chunk", "threads")
    ]
    print(
        f"shape: dim={opts.dim} blocks={opts.layers} vocab={opts.vocab} "
        f"batch={opts.batch}x{opts.seq} chunk={opts.chunk} rows; logits of one head in fp32 = "
        f"{opts.batch * opts.seq * opts.vocab * 4 / 2**20:.0f} MiB"
    )
    results = {}
    for name, (future, mode) in VARIANTS.items():
        res = run_child(__file__, [*shared, f"--mode={mode}", f"--future={future}"])
        results[name] = res["peak_mib"] - res["before_mib"]
        print(
            f"{name:38s} step peak {results[name]:8.0f} MiB  "
            f"(process peak {res['peak_mib']:.0f} MiB)"
        )
    base = results["1 head, plain CE on [B,T,V] logits"]
    for name in ("4 heads, head-by-head (chunked)", "4 heads, naive all-heads"):
        print(f"{name} / 1 head plain: {results[name] / base:.2f}x")
    base_hbh = results["1 head, head-by-head (chunked)"]
    print(
        f"4 heads, head-by-head (chunked) / 1 head head-by-head: "
        f"{results['4 heads, head-by-head (chunked)'] / base_hbh:.2f}x (goal <= 1.5x)"
    )


if __name__ == "__main__":
    main()
