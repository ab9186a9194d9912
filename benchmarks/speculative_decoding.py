"""Self-speculative decoding (heads 1..n-1 draft, head 0 verifies) vs plain greedy decoding.

Both decode the same prompts one at a time with a KV cache; the outputs must be identical
(the script checks). Reported: generated tokens per second of each, the speed-up, the
acceptance rate of the drafted tokens and the tokens committed per forward.

Speculation pays off only when the extra heads guess well, i.e. on a trained MTP model. With
``--model-dir`` the script uses that model directory (e.g. ``data/06_models/micro-mtp``);
without it, it trains a small MTP model (dim 128, 10 layers: 6 trunk blocks + 4 head blocks)
on a highly predictable synthetic corpus of Python programs for ``--train-minutes`` with the
project's training step (``MTPTrainingModule`` + ``BaselineMethod``: the MTP loss in one forward,
one backward).

Each prompt is decoded ``--repeats`` times by each method, interleaved, and the fastest run
of each is kept: on a shared machine the minimum is the least noisy estimate of the cost.

    .venv/bin/python benchmarks/speculative_decoding.py --train-minutes 4
    .venv/bin/python benchmarks/speculative_decoding.py --model-dir data/06_models/micro-mtp
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from weighted_mtp.alignment import IGNORE_INDEX, head_valid_counts
from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.evaluation.generation import generate
from weighted_mtp.evaluation.speculative import SpeculativeStats, speculative_generate
from weighted_mtp.losses.methods import BaselineMethod, LossContext
from weighted_mtp.models import ModelArgs, MTPTransformer, load_model
from weighted_mtp.training.module import MTPTrainingModule

NAMES = ["total", "count", "value", "answer", "result", "best", "acc", "score"]
OPS = ["+", "-", "*"]


def synthetic_programs(n: int, seed: int) -> list[str]:
    """Templated stdin/stdout programs: the structure repeats, only names and numbers vary."""
    rng = random.Random(seed)
    programs = []
    for _ in range(n):
        name, other = rng.sample(NAMES, 2)
        op = rng.choice(OPS)
        k = rng.randint(1, 9)
        programs.append(
            "import sys\n\n\n"
            "def solve():\n"
            "    data = sys.stdin.read().split()\n"
            "    n = int(data[0])\n"
            "    values = list(map(int, data[1:n + 1]))\n"
            f"    {name} = 0\n"
            "    for x in values:\n"
            f"        {name} = {name} {op} x * {k}\n"
            f"    {other} = {name} % 1000000007\n"
            f"    print({other})\n\n\n"
            'if __name__ == "__main__":\n'
            "    solve()\n"
        )
    return programs


def train_model(minutes: float, seed: int, seq_len: int = 160) -> tuple[MTPTransformer, object]:
    torch.manual_seed(seed)
    texts = synthetic_programs(4000, seed)
    tokenizer = train_tokenizer(texts[:500], vocab_size=512)
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer.encode(text, bos=True, eos=True))
    data = torch.tensor(stream)
    # Heads are whole transformer blocks: a verification forward runs all 4, a greedy step
    # only head 0. A trunk deeper than the heads (as in 7B_1T_4: 29 trunk blocks, 4 heads)
    # keeps that extra cost small relative to the tokens gained.
    args = ModelArgs(
        dim=128,
        n_layers=10,  # 6 trunk blocks + head 0 + 3 extra heads
        n_heads=4,
        n_kv_heads=4,
        vocab_size=tokenizer.vocab_size,
        multiple_of=32,
        n_future_tokens=4,
        max_seq_len=512,
    )
    model = MTPTransformer(args)
    module = MTPTrainingModule(model, None, BaselineMethod())
    optimizer = torch.optim.AdamW(module.parameters(), lr=2e-3, weight_decay=0.0)
    deadline = time.monotonic() + minutes * 60
    step = 0
    model.train()
    while time.monotonic() < deadline:
        starts = torch.randint(0, len(data) - seq_len - 1, (16,))
        tokens = torch.stack([data[s : s + seq_len] for s in starts.tolist()])
        targets = torch.full_like(tokens, IGNORE_INDEX)
        targets[:, :-1] = tokens[:, 1:]
        optimizer.zero_grad(set_to_none=True)
        ctx = LossContext(denominators=head_valid_counts(targets, args.n_future_tokens).double())
        loss, metrics = module(tokens, targets, ctx=ctx)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 100 == 0:
            values = metrics.finalize()
            heads = ", ".join(
                f"{values[f'train/head_{k}_loss']:.3f}" for k in range(args.n_future_tokens)
            )
            print(f"step {step}: loss {values['train/loss']:.3f} (heads {heads})", flush=True)
    print(f"trained {step} steps in {minutes:.1f} min")
    return model.eval(), tokenizer


def prompts_for(tokenizer, n: int, seed: int) -> list[list[int]]:
    """Prompts that stop mid-program, so the rest is predictable continuation."""
    prompts = []
    for text in synthetic_programs(n, seed + 1):
        cut = text.index("    for x in values:")
        prompts.append(tokenizer.encode(text[:cut], bos=True))
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="an MTP model directory (default: train one)")
    parser.add_argument("--train-minutes", type=float, default=4.0)
    parser.add_argument("--n-prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.model_dir:
        from weighted_mtp.data.tokenizer import Tokenizer

        model = load_model(args.model_dir, dtype="float32")
        tokenizer = Tokenizer.from_file(f"{args.model_dir}/tokenizer.model")
    else:
        model, tokenizer = train_model(args.train_minutes, args.seed)
    prompts = prompts_for(tokenizer, args.n_prompts, args.seed)
    budget = args.max_new_tokens

    # Warm-up (allocator, kernels) outside the timings.
    generate(model, [prompts[0]], max_new_tokens=8)
    speculative_generate(model, prompts[0], max_new_tokens=8)

    greedy, fast = [], []
    greedy_s = spec_s = 0.0
    total = SpeculativeStats()
    for p in prompts:
        best_greedy = best_spec = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            [plain] = generate(model, [p], max_new_tokens=budget, eos_id=tokenizer.eos_id)
            best_greedy = min(best_greedy, time.perf_counter() - started)
            started = time.perf_counter()
            generation, stats = speculative_generate(
                model, p, max_new_tokens=budget, eos_id=tokenizer.eos_id
            )
            best_spec = min(best_spec, time.perf_counter() - started)
        greedy.append(plain)
        fast.append(generation)
        total += stats
        greedy_s += best_greedy
        spec_s += best_spec

    identical = all(a.token_ids == b.token_ids for a, b in zip(greedy, fast, strict=True))
    n_tokens = sum(g.n_tokens for g in greedy)
    print(
        f"model: dim {model.args.dim}, {model.args.n_layers} layers, "
        f"{model.n_future_tokens} heads, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params"
    )
    print(
        f"prompts: {len(prompts)}, generated tokens: {n_tokens} (max {budget} each), "
        f"threads: {args.threads}"
    )
    print(f"outputs identical: {identical}")
    print(f"greedy:      {n_tokens / greedy_s:8.1f} tokens/s  ({greedy_s:.2f} s)")
    print(f"speculative: {n_tokens / spec_s:8.1f} tokens/s  ({spec_s:.2f} s)")
    print(f"speed-up: {greedy_s / spec_s:.2f}x")
    print(
        f"acceptance rate: {total.acceptance_rate:.3f}, tokens per forward: "
        f"{total.tokens_per_forward:.2f}"
    )
    print("sample completion:\n" + tokenizer.decode(fast[0].token_ids))
    if not identical:
        raise SystemExit("speculative output differs from greedy")


if __name__ == "__main__":
    main()
