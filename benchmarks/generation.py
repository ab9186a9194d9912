"""Batched generation tokens/s: our ``generate()`` vs ``transformers``' ``generate()``, same weights.

A 1-head ``MTPTransformer`` gets the weights of a ``LlamaForCausalLM`` through the project's
Hugging Face mapping (``weighted_mtp.model_io.hf_config.hf_to_meta_state_dict``: renamed keys,
q/k rows un-permuted), so both compute the same function. Both generate from the same
left-padded batch of prompts of mixed lengths (``--batch`` rows, lengths drawn in
``[--prompt-min, --prompt-max]``), ``--new`` tokens per row, fp32 on CPU, each with its KV
cache (ours: the preallocated ``KVCache``; transformers: its default ``DynamicCache``):

- greedy: ``do_sample=False``; the generated tokens must be identical (the script checks);
- sampled: temperature 0.8, top-p 0.95 (transformers' default top-k 50 switched off, so both
  sample from the same nucleus); tokens differ (different random streams), speed is compared.

A third line runs greedy decoding with the obvious cached loop our ``generate()`` used before
it was made lean (the full forward with a padding mask and positions rebuilt at every step,
every prompt position unembedded; the same tokens): what the lean loop gains on its own.

No EOS and no stop sequence: every row runs to ``--new`` tokens on both sides, so both do the
same work. tokens/s = generated tokens / wall time of the whole call (prompt forward included).
The runs alternate for ``--rounds`` rounds after a warm-up, so load from other processes on
a shared machine hits them alike; the ratios use each run's fastest round (on a loaded machine
the minimum is the least noisy estimate of the cost; the median is printed beside it).

The default shape is the head-0 path of the default experiment's micro model
(``conf/base/parameters_micro_models.yml``: dim 256, 8 heads, 2 trunk blocks + head 0 = 3
blocks, vocabulary 1024) with the evaluation's batch of 8. The weights are drawn with std
``--init-std`` (0.1) instead of 0.02: a random model's logits are then peaked enough that fp32
rounding differences between the two implementations never flip a greedy argmax.

    .venv/bin/python benchmarks/generation.py [--dim 256 --layers 3 --batch 8 --new 96]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from weighted_mtp.evaluation.generation import generate, left_pad
from weighted_mtp.model_io.hf_config import hf_to_meta_state_dict
from weighted_mtp.models import MTPTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, from any cwd
from bench_common import add_model_options, hf_llama, init_torch, model_args  # noqa: E402

TEMPERATURE, TOP_P = 0.8, 0.95
PAD = 0


@torch.no_grad()
def obvious_greedy(model: MTPTransformer, prompts: list[list[int]], n_new: int) -> list[list[int]]:
    """Greedy decoding the obvious way (our ``generate()`` before it was made lean)."""
    tokens, prompt_valid = left_pad(prompts, PAD)
    batch, width = tokens.shape
    valid = torch.ones(batch, width + n_new, dtype=torch.bool)
    valid[:, :width] = prompt_valid
    lengths = prompt_valid.sum(dim=1)
    cache = model.new_cache(batch, width + n_new)
    logits = model(
        tokens,
        cache=cache,
        return_all_heads=False,
        positions=(prompt_valid.long().cumsum(dim=1) - 1).clamp(min=0),
        key_padding_mask=prompt_valid,
    )[:, -1, 0]
    out = torch.empty(batch, n_new, dtype=torch.long)
    for step in range(n_new):
        out[:, step] = next_tokens = logits.argmax(dim=-1)
        if step + 1 < n_new:
            logits = model(
                next_tokens[:, None],
                start_pos=width + step,
                cache=cache,
                return_all_heads=False,
                positions=(lengths + step)[:, None],
                key_padding_mask=valid[:, : width + step + 1],
            )[:, -1, 0]
    return out.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, vocab=1024, kv_heads=True)
    parser.set_defaults(layers=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-min", type=int, default=64)
    parser.add_argument("--prompt-max", type=int, default=320)
    parser.add_argument("--new", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init-std", type=float, default=0.1)
    opts = parser.parse_args()
    init_torch(opts.threads)

    args = model_args(
        opts,
        n_future_tokens=1,
        max_seq_len=opts.prompt_max + opts.new,
        n_kv_heads=opts.kv_heads,
    )
    hf = hf_llama(args).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if not name.endswith("norm.weight"):
                param.normal_(0.0, opts.init_std)
    hf.generation_config.eos_token_id = None
    hf.generation_config.bos_token_id = None
    hf.generation_config.pad_token_id = PAD
    ours = MTPTransformer(args)
    ours.load_state_dict(hf_to_meta_state_dict(hf.state_dict(), args), strict=True)
    ours.eval()

    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(opts.prompt_min, opts.prompt_max + 1, (opts.batch,), generator=gen)
    prompts = [
        torch.randint(PAD + 1, args.vocab_size, (int(n),), generator=gen).tolist() for n in lengths
    ]
    input_ids, attention_mask = left_pad(prompts, PAD)
    width = input_ids.shape[1]

    def ours_run(sampled: bool) -> list[list[int]]:
        extra = dict(temperature=TEMPERATURE, top_p=TOP_P) if sampled else {}
        out = generate(
            ours,
            prompts,
            max_new_tokens=opts.new,
            pad_id=PAD,
            generator=torch.Generator().manual_seed(0),
            **extra,
        )
        return [g.token_ids for g in out]

    def hf_run(sampled: bool) -> list[list[int]]:
        extra = dict(do_sample=True, temperature=TEMPERATURE, top_p=TOP_P, top_k=0)
        torch.manual_seed(0)
        with torch.no_grad():
            out = hf.generate(
                input_ids=input_ids,
                attention_mask=attention_mask.long(),
                max_new_tokens=opts.new,
                min_new_tokens=opts.new,
                use_cache=True,
                **(extra if sampled else dict(do_sample=False)),
            )
        return out[:, width:].tolist()

    greedy_ours, greedy_hf = ours_run(False), hf_run(False)  # also the warm-up
    identical = greedy_ours == greedy_hf
    assert obvious_greedy(ours, prompts, opts.new) == greedy_ours, "lean != obvious loop"
    ours_run(True), hf_run(True)
    assert all(len(t) == opts.new for t in greedy_ours + greedy_hf)

    runs: dict[str, Callable[[], object]] = {
        "greedy, ours": lambda: ours_run(False),
        "greedy, transformers": lambda: hf_run(False),
        "greedy, ours obvious loop": lambda: obvious_greedy(ours, prompts, opts.new),
        "sampled, ours": lambda: ours_run(True),
        "sampled, transformers": lambda: hf_run(True),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(opts.rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)

    n_tokens = opts.batch * opts.new
    import transformers

    print(
        f"shape: dim={args.dim} layers={args.n_layers} heads={args.n_heads}/{args.kv_heads} "
        f"vocab={args.vocab_size} batch={opts.batch} prompts {min(lengths.tolist())}-"
        f"{max(lengths.tolist())} tokens (left-padded to {width}) new={opts.new} fp32 CPU "
        f"threads={opts.threads} rounds={opts.rounds} transformers {transformers.__version__} "
        f"torch {torch.__version__}"
    )
    print(f"greedy tokens identical: {identical}")
    rate = {}
    for name, samples in seconds.items():
        rate[name] = n_tokens / min(samples)
        print(
            f"{name:26s} {rate[name]:8.1f} tokens/s  (fastest round {min(samples):.3f} s, "
            f"median {statistics.median(samples):.3f} s)"
        )
    if not identical:
        raise SystemExit("greedy tokens differ between ours and transformers")
    lean = rate["greedy, ours"] / rate["greedy, ours obvious loop"]
    print(f"ratio lean/obvious loop (greedy, ours): {lean:.2f}")
    greedy = rate["greedy, ours"] / rate["greedy, transformers"]
    sampled = rate["sampled, ours"] / rate["sampled, transformers"]
    print(f"ratio ours/transformers: greedy {greedy:.2f}, sampled {sampled:.2f}")


if __name__ == "__main__":
    main()
