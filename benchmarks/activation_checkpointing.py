"""Activation checkpointing per block (``runtime.activation_checkpointing: blocks``) against
``none``: peak step memory and tokens/s at the same batch, in one run.

Sides, same weights (same seed), same batch, one process:

- ``none``: ``MTPTrainingModule(model, value_head, method)``, one forward through the module,
  one backward, ``clip_grad_norm_``, AdamW (``bench_common.module_step``, the loop's step);
- ``blocks``: the same module after ``training.parallelize.apply_activation_checkpointing(...,
  "blocks")`` (what ``parallelize`` applies before DDP/FSDP2): every trunk layer and head block
  keeps only its input for the backward and recomputes its forward there.

Check first: on the first warm-up step both sides' losses must agree to float32 rounding (the
same maths; ``tests/training/test_activation_checkpointing.py`` checks gradients in float64).

Measured per side (medians over ``--steps`` alternating rounds after one warm-up round):

- step peak: ``VmHWM - RSS before`` of each step (``bench_common.measure_alternating``: freed
  heap pages are returned with ``malloc_trim`` and the peak-RSS mark is reset before the step),
  i.e. the most memory the step added at any moment: activations, logits chunks, gradients,
  optimizer temporaries;
- activations kept: bytes of the tensors autograd saves in the forward for the backward
  (``saved_tensors_hooks``), one extra forward + backward per side outside the timing;
- tokens/s: valid head-0 target tokens of the batch / median step time.

    .venv/bin/python benchmarks/activation_checkpointing.py                 # dim 256, 6 blocks
    .venv/bin/python benchmarks/activation_checkpointing.py --method verifiable --batch 8
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from weighted_mtp.alignment import IGNORE_INDEX, head_valid_counts, shift_labels
from weighted_mtp.losses.methods import BaselineMethod, LossContext, VerifiableMethod
from weighted_mtp.models import ValueHead
from weighted_mtp.training.module import MTPTrainingModule
from weighted_mtp.training.parallelize import apply_activation_checkpointing

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, from any cwd
from bench_common import (  # noqa: E402
    add_model_options,
    build_model,
    init_torch,
    measure_alternating,
    module_step,
)

SIDES = ("none", "blocks")


def make_module(opts: argparse.Namespace) -> MTPTrainingModule:
    torch.manual_seed(opts.seed)
    model = build_model(opts, n_future_tokens=opts.future, max_seq_len=opts.seq).train()
    if opts.method == "verifiable":
        return MTPTrainingModule(model, ValueHead(opts.dim), VerifiableMethod())
    return MTPTrainingModule(model, None, BaselineMethod())


def saved_bytes(module: MTPTrainingModule, tokens, targets, is_correct, chunk: int) -> int:
    """Bytes autograd keeps from one forward for the backward."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    ctx = LossContext(
        denominators=head_valid_counts(targets, module.n_heads).double(), chunk_size=chunk
    )
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = module(tokens, targets, is_correct, None, ctx=ctx)
    loss.backward()
    module.zero_grad(set_to_none=True)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_options(parser, vocab=32000)
    parser.add_argument("--future", type=int, default=4, help="n_future_tokens")
    parser.add_argument("--method", choices=("baseline", "verifiable"), default="baseline")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(argv)
    init_torch(opts.threads)

    generator = torch.Generator().manual_seed(opts.seed)
    tokens = torch.randint(0, opts.vocab, (opts.batch, opts.seq), generator=generator)
    labels = tokens.clone()
    labels[:, : opts.prompt] = IGNORE_INDEX
    targets = shift_labels(labels)
    is_correct = torch.arange(opts.batch) % 2 == 0
    n_tokens = int((targets != IGNORE_INDEX).sum())

    modules = {"none": make_module(opts)}
    modules["blocks"] = apply_activation_checkpointing(copy.deepcopy(modules["none"]), "blocks")
    kept = {
        name: saved_bytes(m, tokens, targets, is_correct, opts.chunk) for name, m in modules.items()
    }
    steps = {
        name: module_step(m, tokens, targets, is_correct=is_correct, chunk_size=opts.chunk)
        for name, m in modules.items()
    }
    first = {name: float(step.forward_backward()) for name, step in steps.items()}
    for step in steps.values():
        assert step.update is not None
        step.update()
    if abs(first["blocks"] - first["none"]) > 1e-5 * abs(first["none"]):
        raise SystemExit(f"losses differ: {first}")

    samples = measure_alternating(steps, warmup=1, steps=opts.steps, memory=True)
    n_params = sum(p.numel() for p in modules["none"].parameters())
    print(
        f"{opts.method}: dim {opts.dim}, {opts.layers} layers ({opts.future} heads), vocab "
        f"{opts.vocab}, {n_params / 1e6:.1f} M params, batch {opts.batch}x{opts.seq}, "
        f"{opts.threads} threads, first-step loss {first['none']:.6f} (both sides)"
    )
    print(f"{'side':8} {'step peak MiB':>14} {'activations MiB':>16} {'tokens/s':>10}")
    result = {}
    for name in SIDES:
        s = samples[name]
        peak = s.median_peak_mib or 0.0
        tps = n_tokens / s.median_s
        result[name] = {"peak_mib": peak, "kept_mib": kept[name] / 2**20, "tokens_per_s": tps}
        print(f"{name:8} {peak:14.1f} {kept[name] / 2**20:16.1f} {tps:10.0f}")
    none, blocks = result["none"], result["blocks"]
    print(
        f"blocks / none: step peak x{blocks['peak_mib'] / none['peak_mib']:.2f}, activations "
        f"x{blocks['kept_mib'] / none['kept_mib']:.2f}, tokens/s "
        f"x{blocks['tokens_per_s'] / none['tokens_per_s']:.2f}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
