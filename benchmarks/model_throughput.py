"""Training-step throughput: our MTPTransformer (n_future_tokens=1) vs HF LlamaForCausalLM.

Both models have the same shape and dtype and run the same step: forward, next-token
cross-entropy, backward, AdamW. Steps alternate between the two models so that load from
other processes on a shared machine hits both alike; the median step time is reported.

    .venv/bin/python benchmarks/model_throughput.py [--dim 256 --layers 6 --batch 8 --seq 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from weighted_mtp.models import ModelArgs, MTPTransformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    dtype = getattr(torch, opts.dtype)
    torch.manual_seed(0)

    args = ModelArgs(
        dim=opts.dim,
        n_layers=opts.layers,
        n_heads=opts.heads,
        n_kv_heads=opts.kv_heads,
        vocab_size=opts.vocab,
        multiple_of=32,
        n_future_tokens=1,
        max_seq_len=opts.seq,
    )
    ours = MTPTransformer(args).to(dtype)
    hf = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=args.dim,
            intermediate_size=args.ffn_hidden_dim,
            num_hidden_layers=args.n_layers,
            num_attention_heads=args.n_heads,
            num_key_value_heads=args.kv_heads,
            rms_norm_eps=args.norm_eps,
            rope_theta=args.rope_theta,
            vocab_size=args.vocab_size,
            max_position_embeddings=args.max_seq_len,
            tie_word_embeddings=False,
            attn_implementation="sdpa",
        )
    ).to(dtype)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_hf = sum(p.numel() for p in hf.parameters())
    assert n_ours == n_hf, (n_ours, n_hf)

    tokens = torch.randint(0, args.vocab_size, (opts.batch, opts.seq))
    targets = tokens[:, 1:].reshape(-1)

    def step_ours(opt: torch.optim.Optimizer) -> None:
        logits = ours(tokens, return_all_heads=False)[:, :-1, 0]
        F.cross_entropy(logits.reshape(-1, args.vocab_size).float(), targets).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def step_hf(opt: torch.optim.Optimizer) -> None:
        logits = hf(input_ids=tokens).logits[:, :-1]
        F.cross_entropy(logits.reshape(-1, args.vocab_size).float(), targets).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    runs = {
        "ours (MTPTransformer, 1 head)": (step_ours, torch.optim.AdamW(ours.parameters())),
        "transformers LlamaForCausalLM": (step_hf, torch.optim.AdamW(hf.parameters())),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(opts.warmup + opts.steps):
        for name, (step, opt) in runs.items():
            start = time.perf_counter()
            step(opt)
            if i >= opts.warmup:
                times[name].append(time.perf_counter() - start)

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
