"""Completions per second: the evaluation's generation by 2 torchrun workers against 1.

The evaluation node's data-parallel path (``weighted_mtp.evaluation.parallel_generation``:
the training launcher, one worker per process, each decoding a share of the length-sorted
batches) runs the same problems with ``nproc_per_node`` 1 and 2, one thread per worker
(``runtime.omp_threads = 1``), and, as the named alternative, the in-process path the node
takes with one process (``complete_problems``, 1 thread). All three must give the same
completions (the script checks).

Two rates per run:

- **end to end**: completions / wall time of the whole call (torchrun, interpreter and torch
  imports, model load in every worker, generation, gathering the shards);
- **generation**: completions / the slowest worker's decoding time (its batches' seconds,
  which the shards record): what the split itself buys once the workers are up.

The model is a random MTP model of the default experiment's micro shape (dim 256, 8 heads, 4
blocks of which head 0 decodes through 3, vocabulary 1024; ``--dim`` etc. change it), saved as
a model directory with a SentencePiece tokenizer trained on the generated prompts. Problems
are CodeContests-style instruction prompts of mixed lengths, greedy (``--temperature 0``) or
sampled, ``--new`` tokens at most (EOS may end a row earlier, identically on every path).

    .venv/bin/python benchmarks/parallel_generation.py [--problems 96 --new 96 --batch 16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.evaluation.parallel_generation import (
    complete_problems_in_workers,
    plan_work,
)
from weighted_mtp.evaluation.prompts import (
    PromptFormat,
    SamplingSettings,
    complete_problems,
    encode_prompts,
)
from weighted_mtp.evaluation.sampling import assign_batches
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.model_dir import save_model_dir
from weighted_mtp.models import ModelArgs, MTPTransformer
from weighted_mtp.training.config import RuntimeParams

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, from any cwd
from bench_common import add_model_options  # noqa: E402

WORDS = [
    "read",
    "the",
    "integers",
    "n",
    "and",
    "k",
    "then",
    "print",
    "the",
    "sum",
    "of",
    "every",
    "pair",
    "whose",
    "product",
    "is",
    "even",
]
FORMATS = {"codecontests": PromptFormat("instruction", ("\n### ",))}


def make_problems(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "task_id": f"bench/{i}",
            "dataset": "codecontests",
            "prompt": " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 160))),
        }
        for i in range(n)
    ]


def _spin(seconds: float, out: multiprocessing.Queue) -> None:
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)
        n += 1
    out.put(n)


def machine_capacity(seconds: float = 3.0) -> float:
    """What this machine gives two 1-thread processes now: the matmuls two concurrent
    processes complete over those one process completes alone in the same time (2.0 on two
    idle cores; less when other jobs hold the CPUs)."""
    ctx = multiprocessing.get_context("spawn")
    totals = []
    for n_procs in (1, 2):
        out = ctx.Queue()
        procs = [ctx.Process(target=_spin, args=(seconds, out)) for _ in range(n_procs)]
        for proc in procs:
            proc.start()
        totals.append(sum(out.get() for _ in procs))
        for proc in procs:
            proc.join()
    return totals[1] / totals[0]


def slowest_worker_seconds(run_dir: Path, world_size: int) -> float:
    """The largest sum of ``batch_seconds`` over one rank's shard lines."""
    import json

    per_rank = []
    for rank in range(world_size):
        lines = (run_dir / "shards" / f"rank_{rank}.jsonl").read_text().splitlines()
        per_rank.append(sum(json.loads(line)["batch_seconds"] for line in lines))
    return max(per_rank)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, vocab=1024)
    parser.set_defaults(layers=4)
    parser.add_argument("--problems", type=int, default=96)
    parser.add_argument("--new", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    opts = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    problems = make_problems(opts.problems, seed=1)
    texts = [p["prompt"] for p in problems]
    tokenizer = train_tokenizer(texts * 5, vocab_size=opts.vocab)
    args = ModelArgs(
        dim=opts.dim,
        n_layers=opts.layers,
        n_heads=opts.heads,
        vocab_size=tokenizer.vocab_size,
        multiple_of=32,
        n_future_tokens=2,
        max_seq_len=1024,
    )
    model = MTPTransformer(args)
    model.init_weights(std=0.1)  # peaked logits: completions depend on the prompt
    settings = SamplingSettings(
        n_samples=opts.samples,
        batch_size=opts.batch,
        max_new_tokens=opts.new,
        temperature=opts.temperature,
        top_p=0.95,
        seed=1234,
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(save_model_dir(model, args, tokenizer, Path(tmp) / "model", origin="bench"))
        prompts = {
            "codecontests": encode_prompts(tokenizer, problems, FORMATS["codecontests"], settings)
        }
        work = plan_work(prompts, settings)
        n_completions = sum(len(b.rows) for b in work)

        started = time.perf_counter()
        loaded = ModelDirectory(model_dir).load(device="cpu", dtype="float32").eval()
        reference, _ = complete_problems(loaded, tokenizer, problems, FORMATS, settings)
        in_process = time.perf_counter() - started
        # The strongest simple alternative on this machine: one process using every core
        # through torch's intra-op threads (what the node does with nproc_per_node 1).
        torch.set_num_threads(opts.workers)
        started = time.perf_counter()
        threaded, _ = complete_problems(loaded, tokenizer, problems, FORMATS, settings)
        in_process_threads = time.perf_counter() - started
        torch.set_num_threads(1)
        if threaded != reference:
            raise SystemExit(f"{opts.workers} threads gave other completions than one thread")

        rates: dict[int, tuple[float, float]] = {}
        for workers in (1, opts.workers):
            run_dir = Path(tmp) / f"run_{workers}"
            started = time.perf_counter()
            samples, _, _ = complete_problems_in_workers(
                model_dir,
                tokenizer,
                problems,
                FORMATS,
                settings,
                RuntimeParams(nproc_per_node=workers, omp_threads=1),
                run_dir,
                show_progress=False,
            )
            wall = time.perf_counter() - started
            if samples != reference:
                raise SystemExit(f"{workers} worker(s) gave other completions than one process")
            rates[workers] = (wall, slowest_worker_seconds(run_dir, workers))

    capacity = machine_capacity()
    n_tokens = sum(s["n_generated_tokens"] for s in reference)
    costs = [b.cost for b in work]
    shares = assign_batches(costs, opts.workers)
    print(
        f"shape: dim={args.dim} layers={args.n_layers} heads={args.n_heads} vocab="
        f"{args.vocab_size}; {opts.problems} problems x {opts.samples} sample(s), "
        f"{len(work)} batches of <= {opts.batch}, new<={opts.new}, temperature "
        f"{opts.temperature}; {os.cpu_count()} CPU(s), 1 thread per process; torch "
        f"{torch.__version__}; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"batches per worker with {opts.workers}: {[len(s) for s in shares]} (planned cost "
        f"{[sum(costs[i] for i in s) for s in shares]})"
    )
    print(
        f"completions identical on every path: True; {n_tokens / n_completions:.1f} generated "
        f"tokens per completion on average"
    )
    print(
        f"machine capacity now: 2 one-thread processes do {capacity:.2f}x the matmuls of one "
        "(2.00 on two idle cores)"
    )
    print(
        f"{'in process (1 thread)':28s} {n_completions / in_process:7.2f} completions/s end to end"
    )
    print(
        f"{f'in process ({opts.workers} threads)':28s} "
        f"{n_completions / in_process_threads:7.2f} completions/s end to end"
    )
    for workers, (wall, gen) in rates.items():
        print(
            f"{f'{workers} worker(s)':28s} {n_completions / wall:7.2f} completions/s end to end "
            f"({wall:.1f} s), {n_completions / gen:7.2f} in generation ({gen:.1f} s slowest worker)"
        )
    (w1, g1), (wn, gn) = rates[1], rates[opts.workers]
    print(
        f"ratio {opts.workers} workers / in process with {opts.workers} threads: end to end "
        f"{in_process_threads / wn:.2f}, generation {in_process_threads / gn:.2f}"
    )
    print(
        f"ratio {opts.workers} workers / 1 worker: end to end {w1 / wn:.2f}, generation {g1 / gn:.2f}"
    )


if __name__ == "__main__":
    main()
