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

A fourth sampled line draws from one generator per row (``generate(generators=...)``, what the
evaluation does so that its samples do not depend on how rows are split between workers)
instead of one generator for the batch: the price of that independence.

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

On a GPU, ``--device cuda --dtype bfloat16 --preset 1b`` compares batched greedy decoding of a
~1B-parameter shape (the head-0 path of an MTP model: dim 2048, 16 blocks, 16 heads,
vocabulary 32000; 0.94B parameters) at batch 64, 256 new tokens, against ``transformers`` on
the same GPU. In bf16 the two implementations' rounding differs, so greedy tokens may diverge
after a near-tie: the script then reports how many rows agree instead of stopping.
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


PRESETS = {
    # The head-0 path of a ~1B MTP model (trunk + head 0; generation never runs the others).
    "1b": dict(dim=2048, layers=16, heads=16, vocab=32000, batch=64, new=256),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def obvious_greedy(model: MTPTransformer, prompts: list[list[int]], n_new: int) -> list[list[int]]:
    """Greedy decoding the obvious way (our ``generate()`` before it was made lean)."""
    device = next(model.parameters()).device
    tokens, prompt_valid = left_pad(prompts, PAD, device)
    batch, width = tokens.shape
    valid = torch.ones(batch, width + n_new, dtype=torch.bool, device=device)
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
    out = torch.empty(batch, n_new, dtype=torch.long, device=device)
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
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--no-obvious", action="store_true", help="skip the obvious loop")
    opts = parser.parse_args()
    if opts.preset:
        for key, value in PRESETS[opts.preset].items():
            setattr(opts, key, value)
    init_torch(opts.threads)
    device, dtype = torch.device(opts.device), getattr(torch, opts.dtype)
    exact = device.type == "cpu" and dtype == torch.float32

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
    hf.to(device=device, dtype=dtype)
    ours.to(device=device, dtype=dtype)
    n_params = sum(p.numel() for p in ours.parameters())

    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(opts.prompt_min, opts.prompt_max + 1, (opts.batch,), generator=gen)
    prompts = [
        torch.randint(PAD + 1, args.vocab_size, (int(n),), generator=gen).tolist() for n in lengths
    ]
    input_ids, attention_mask = left_pad(prompts, PAD, device)
    width = input_ids.shape[1]

    def ours_run(sampled: bool, per_row: bool = False) -> list[list[int]]:
        extra = dict(temperature=TEMPERATURE, top_p=TOP_P) if sampled else {}
        if per_row:
            extra["generators"] = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
        out = generate(
            ours,
            prompts,
            max_new_tokens=opts.new,
            pad_id=PAD,
            generator=torch.Generator(device=device).manual_seed(0),
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
    agree = sum(a == b for a, b in zip(greedy_ours, greedy_hf, strict=True))
    if not opts.no_obvious:
        obvious = obvious_greedy(ours, prompts, opts.new)
        assert obvious == greedy_ours or not exact, "lean != obvious loop"
    ours_run(True), hf_run(True), ours_run(True, per_row=True)
    assert all(len(t) == opts.new for t in greedy_ours + greedy_hf)

    runs: dict[str, Callable[[], object]] = {
        "greedy, ours": lambda: ours_run(False),
        "greedy, transformers": lambda: hf_run(False),
        "sampled, ours": lambda: ours_run(True),
        "sampled, ours per-row streams": lambda: ours_run(True, per_row=True),
        "sampled, transformers": lambda: hf_run(True),
    }
    if not opts.no_obvious:
        runs["greedy, ours obvious loop"] = lambda: obvious_greedy(ours, prompts, opts.new)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(opts.rounds):
        for name, run in runs.items():
            _sync(device)
            started = time.perf_counter()
            run()
            _sync(device)
            seconds[name].append(time.perf_counter() - started)

    n_tokens = opts.batch * opts.new
    import transformers

    print(
        f"shape: dim={args.dim} layers={args.n_layers} heads={args.n_heads}/{args.kv_heads} "
        f"vocab={args.vocab_size} batch={opts.batch} prompts {min(lengths.tolist())}-"
        f"{max(lengths.tolist())} tokens (left-padded to {width}) new={opts.new} {opts.dtype} "
        f"{_device_name(device)} threads={opts.threads} rounds={opts.rounds} "
        f"parameters={n_params / 1e9:.2f}B transformers {transformers.__version__} "
        f"torch {torch.__version__}"
    )
    print(f"greedy tokens identical: {identical} ({agree}/{len(prompts)} rows agree)")
    rate = {}
    for name, samples in seconds.items():
        rate[name] = n_tokens / min(samples)
        print(
            f"{name:30s} {rate[name]:8.1f} tokens/s  (fastest round {min(samples):.3f} s, "
            f"median {statistics.median(samples):.3f} s)"
        )
    if not identical and exact:
        raise SystemExit("greedy tokens differ between ours and transformers")
    if not opts.no_obvious:
        lean = rate["greedy, ours"] / rate["greedy, ours obvious loop"]
        print(f"ratio lean/obvious loop (greedy, ours): {lean:.2f}")
    greedy = rate["greedy, ours"] / rate["greedy, transformers"]
    sampled = rate["sampled, ours"] / rate["sampled, transformers"]
    per_row = rate["sampled, ours per-row streams"] / rate["sampled, ours"]
    print(f"ratio ours/transformers: greedy {greedy:.2f}, sampled {sampled:.2f}")
    print(f"ratio per-row streams/one stream (sampled, ours): {per_row:.2f}")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU"


if __name__ == "__main__":
    main()
