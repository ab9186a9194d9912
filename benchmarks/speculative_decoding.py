"""Self-speculative greedy decoding (heads 1..n-1 draft, head 0 verifies) vs our own lean
batched greedy ``generate()``, on the synthetic CodeContests test problems.

Prompts are real evaluation prompts: the test split of the synthetic CodeContests generator
(``weighted_mtp.data.synthetic``), converted by the data-engineering code into evaluation
problems and formatted as the default experiment formats CodeContests prompts (Alpaca
``instruction`` style, stops ``"\\n### "`` and ``"\\n```\\n"``, EOS). Both methods decode the
same prompts one at a time (batch 1, as ``evaluation.generation.speculative: true`` does)
with a KV cache; the outputs must be identical (the script checks). Reported: generated tokens
per second of each, the speed-up, the acceptance rate of the drafted tokens and the tokens
committed per forward.

The model: ``--model-dir`` (e.g. the default experiment's ``data/06_models/baseline``), or
by default one trained here with the project's training step (``PromptOutputCollator`` +
``MTPTrainingModule`` + ``BaselineMethod``: the MTP loss on the output tokens) on the
synthetic CodeContests train split for ``--train-steps`` steps (or ``--train-minutes``,
whichever comes first), with a tokenizer trained on
the same split. ``--save-model-dir`` keeps it for later runs; ``--init-model-dir`` continues
training a saved one (fresh optimizer state).

Each prompt is decoded ``--repeats`` times by each method and the fastest run of each is kept:
on a shared machine the minimum is the least noisy estimate of the cost. The prompt's forward
is also timed alone (one generated token), to report the speed-up after it: speculation
shortens only the token-by-token part.

    .venv/bin/python benchmarks/speculative_decoding.py --train-steps 600 --save-model-dir /tmp/spec-model
    .venv/bin/python benchmarks/speculative_decoding.py --model-dir /tmp/spec-model
    .venv/bin/python benchmarks/speculative_decoding.py --model-dir data/06_models/baseline

``--batch-sizes 1,2,4,8,16,32`` adds where speculation stops paying: speculative decoding
decodes one prompt at a time, while the evaluation's greedy ``generate_samples`` decodes
``batch_size`` rows per forward. The same prompts are decoded by ``generate_samples`` at each
batch size (length-sorted batches, EOS and stop sequences, as the evaluation runs them; best of
``--repeats``), and each rate is set against speculative decoding's: the smallest batch size at
which batched greedy is faster is where ``evaluation.generation.speculative`` stops paying.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from weighted_mtp.alignment import head_valid_counts, shift_labels
from weighted_mtp.data.codecontests import convert_codecontests
from weighted_mtp.data.collator import PromptOutputCollator
from weighted_mtp.data.synthetic import generate_codecontests_rows
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.evaluation.generation import fit_prompts, generate, generate_samples
from weighted_mtp.evaluation.prompts import PromptFormat, build_prompt
from weighted_mtp.evaluation.speculative import SpeculativeStats, speculative_generate
from weighted_mtp.losses.methods import BaselineMethod, LossContext
from weighted_mtp.model_io import load_model
from weighted_mtp.model_io.model_dir import save_model_dir
from weighted_mtp.models import ModelArgs, MTPTransformer
from weighted_mtp.training.module import MTPTrainingModule

# The default experiment's CodeContests prompt format (conf/base/parameters_evaluation.yml).
CODECONTESTS_FORMAT = PromptFormat(style="instruction", stop=("\n### ", "\n```\n"))


def training_records(n_tasks: int, seed: int) -> list[dict]:
    rows = generate_codecontests_rows(n_tasks, seed, split="train")
    return convert_codecontests(rows, split="train", max_solutions_per_task=4).records


def test_prompts(tokenizer: Tokenizer, n: int, seed: int) -> list[list[int]]:
    """The first ``n`` synthetic CodeContests test problems as the evaluation tokenizes them."""
    rows = generate_codecontests_rows(n, seed + 2, split="test")  # the test split's own seed
    problems = convert_codecontests(rows, split="test").problems
    return [tokenizer.encode(build_prompt(p, CODECONTESTS_FORMAT), bos=True) for p in problems]


def train_model(
    steps: int,
    minutes: float,
    seed: int,
    n_tasks: int,
    batch_size: int,
    max_length: int,
    init_dir: str | None = None,
) -> tuple[MTPTransformer, Tokenizer]:
    torch.manual_seed(seed)
    records = training_records(n_tasks, seed)
    if init_dir:
        # Continue training a saved model (e.g. one this script saved), with its tokenizer.
        model = load_model(init_dir, dtype="float32")
        tokenizer = Tokenizer.from_file(f"{init_dir}/tokenizer.model")
        # Other batches than the first run drew: a string seed of its own.
        rng = random.Random(f"{seed}/continue/{init_dir}")
        return _train(model, tokenizer, records, steps, minutes, rng, batch_size, max_length)
    texts = [r["instruction"] + "\n" + r["output"] for r in records]
    tokenizer = train_tokenizer(texts[:2000], vocab_size=1024)
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
        max_seq_len=1024,
    )
    model = MTPTransformer(args)
    rng = random.Random(seed)
    return _train(model, tokenizer, records, steps, minutes, rng, batch_size, max_length)


def _train(
    model: MTPTransformer,
    tokenizer: Tokenizer,
    records: list[dict],
    steps: int,
    minutes: float,
    rng: random.Random,
    batch_size: int,
    max_length: int,
) -> tuple[MTPTransformer, Tokenizer]:
    args = model.args
    module = MTPTrainingModule(model, None, BaselineMethod())
    optimizer = torch.optim.AdamW(module.parameters(), lr=2e-3, weight_decay=0.0)
    collator = PromptOutputCollator(tokenizer, max_length)
    started = time.monotonic()
    model.train()
    step = 0
    while step < steps and time.monotonic() - started < minutes * 60:
        step += 1
        batch = collator(rng.sample(records, batch_size))
        targets = shift_labels(batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        ctx = LossContext(denominators=head_valid_counts(targets, args.n_future_tokens).double())
        loss, metrics = module(batch["input_ids"], targets, ctx=ctx)
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            values = metrics.finalize()
            heads = ", ".join(
                f"{values[f'train/head_{k}_loss']:.3f}" for k in range(args.n_future_tokens)
            )
            print(f"step {step}: loss {values['train/loss']:.3f} (heads {heads})", flush=True)
    print(
        f"trained {step} steps (batch {batch_size}, {len(records)} records) in "
        f"{(time.monotonic() - started) / 60:.1f} min"
    )
    return model.eval(), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="an MTP model directory (default: train one)")
    parser.add_argument("--save-model-dir", help="where to save the model trained here")
    parser.add_argument("--init-model-dir", help="continue training this model (default: new)")
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--train-minutes", type=float, default=60.0, help="cap on training time")
    parser.add_argument("--train-tasks", type=int, default=2000)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-max-length", type=int, default=512)
    parser.add_argument("--n-prompts", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--batch-sizes", default="", help="e.g. 1,2,4,8,16,32: batched greedy against speculative"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.model_dir:
        model = load_model(args.model_dir, dtype="float32")
        tokenizer = Tokenizer.from_file(f"{args.model_dir}/tokenizer.model")
    else:
        model, tokenizer = train_model(
            args.train_steps,
            args.train_minutes,
            args.seed,
            args.train_tasks,
            args.train_batch,
            args.train_max_length,
            args.init_model_dir,
        )
        if args.save_model_dir:
            save_model_dir(model, model.args, tokenizer, args.save_model_dir, origin="benchmark")
            print(f"saved the model to {args.save_model_dir}")
    budget = args.max_new_tokens
    # Longer prompts keep their last tokens, as the evaluation clips them.
    prompts = fit_prompts(model, test_prompts(tokenizer, args.n_prompts, args.seed), budget)
    options = dict(
        max_new_tokens=budget,
        eos_id=tokenizer.eos_id,
        decode=tokenizer.decode,
        stop=CODECONTESTS_FORMAT.stop,
    )

    # Warm-up (allocator, kernels) outside the timings.
    generate(model, [prompts[0]], max_new_tokens=8)
    speculative_generate(model, prompts[0], max_new_tokens=8)

    def best_of(run) -> float:  # noqa: ANN001 - a no-argument callable
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        return best

    greedy, fast = [], []
    greedy_s = spec_s = greedy_prompt_s = spec_prompt_s = 0.0
    total = SpeculativeStats()
    for p in prompts:
        [plain] = generate(model, [p], **options)
        generation, stats = speculative_generate(model, p, **options)
        greedy.append(plain)
        fast.append(generation)
        total += stats
        greedy_s += best_of(lambda p=p: generate(model, [p], **options))
        spec_s += best_of(lambda p=p: speculative_generate(model, p, **options))
        # The prompt's forward alone (one token generated): the part speculation cannot
        # shorten, and where it writes three more heads' keys/values than greedy decoding.
        greedy_prompt_s += best_of(lambda p=p: generate(model, [p], max_new_tokens=1))
        spec_prompt_s += best_of(lambda p=p: speculative_generate(model, p, max_new_tokens=1))

    identical = all(
        a.token_ids == b.token_ids and a.text == b.text and a.finish_reason == b.finish_reason
        for a, b in zip(greedy, fast, strict=True)
    )
    n_tokens = sum(g.n_tokens for g in greedy)
    reasons = {r: sum(g.finish_reason == r for g in greedy) for r in ("eos", "stop", "length")}
    print(
        f"model: dim {model.args.dim}, {model.args.n_layers} layers "
        f"({model.n_trunk_blocks} trunk blocks), {model.n_future_tokens} heads, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params"
    )
    print(
        f"prompts: {len(prompts)} synthetic CodeContests test problems "
        f"({sum(map(len, prompts)) / len(prompts):.0f} tokens on average), generated tokens: "
        f"{n_tokens} (max {budget} each; finished by {reasons}), threads: {args.threads}"
    )
    print(f"outputs identical: {identical}")
    print(f"lean greedy generate(): {n_tokens / greedy_s:8.1f} tokens/s  ({greedy_s:.2f} s)")
    print(f"speculative:            {n_tokens / spec_s:8.1f} tokens/s  ({spec_s:.2f} s)")
    print(
        f"prompt forward alone: greedy {greedy_prompt_s:.2f} s, speculative "
        f"{spec_prompt_s:.2f} s; after it: greedy {greedy_s - greedy_prompt_s:.2f} s, "
        f"speculative {spec_s - spec_prompt_s:.2f} s, speed-up "
        f"{(greedy_s - greedy_prompt_s) / (spec_s - spec_prompt_s):.2f}x"
    )
    print(
        f"acceptance rate: {total.acceptance_rate:.3f}, tokens per forward: "
        f"{total.tokens_per_forward:.2f}"
    )
    print("sample completion:\n" + fast[0].text)
    if not identical:
        raise SystemExit("speculative output differs from greedy")
    print(f"speed-up speculative / lean greedy: {greedy_s / spec_s:.2f}x")
    if args.batch_sizes:
        batched_greedy(model, prompts, options, spec_s, n_tokens, best_of, args.batch_sizes)


def batched_greedy(model, prompts, options, spec_s, n_tokens, best_of, sizes: str) -> None:  # noqa: ANN001
    """Batched greedy decoding of ``prompts`` at each batch size against speculative decoding's
    ``spec_s`` seconds (one prompt at a time) for the same ``n_tokens``. Batch 1 is also
    measured head to head above (prompt by prompt, interleaved), the fairer figure there."""
    print(
        f"batched greedy (generate_samples) against speculative ({n_tokens / spec_s:.1f} tokens/s):"
    )
    ratios = {}
    for size in (int(s) for s in sizes.split(",")):
        out = generate_samples(model, prompts, batch_size=size, **options)
        tokens = sum(g.n_tokens for [g] in out)
        seconds = best_of(
            lambda size=size: generate_samples(model, prompts, batch_size=size, **options)
        )
        ratios[size] = (tokens / seconds) / (n_tokens / spec_s)
        print(
            f"  batch {size:3d}: {tokens / seconds:8.1f} tokens/s ({tokens} tokens, "
            f"{seconds:.2f} s), {ratios[size]:.2f}x speculative"
        )
    # The smallest batch size from which batched greedy is faster at every larger size.
    paying = [s for s in sorted(ratios) if all(ratios[t] > 1 for t in ratios if t >= s)]
    print(
        "batched greedy is faster than speculative decoding from batch size "
        + (str(paying[0]) if paying else "(none measured)")
    )


if __name__ == "__main__":
    main()
