"""One MTP training step: the project's fused chunked loss vs torch's and plain PyTorch, + methods.

Sides, all on the same model weights (same seed) and the same batch, in one process:

- ``ours``: ``MTPTrainingModule(model, None, BaselineMethod())``, one forward through the module
  (``LossContext`` with this batch's valid counts as denominators), one backward,
  ``clip_grad_norm_``, AdamW (``training.optim.build_optimizer``), ``zero_grad``;
- ``plain[V]``: ``model(tokens)`` -> every head's logits ``[B, T, 4, V]``, cross-entropy
  through autograd (``ignore_index``), each head's mean over its valid targets, summed over
  heads, one backward, the same clip + AdamW. ``--plain`` lists how the logits are read
  (``bench_common.PLAIN_VARIANTS``); each is a side and the last line compares against the
  best plain figure of each metric. Default ``flat,heads``: ``flat`` was the fastest and
  ``heads`` the leanest of the three in our runs (``slices``, the literal port, lost both);
- ``torch[none]``: the same module's hidden states per head (``head_hiddens``), and per head
  ``torch.nn.functional.linear_cross_entropy(rows, W, targets, reduction="none",
  options=LinearCrossEntropyOptions(batch_chunk_size=--chunk))`` on the head's valid rows,
  multiplied by per-token weights (ones: the baseline's; TD weights or Rho-1's kept tokens go
  there) and divided by the head's count; one backward, the same clip + AdamW. This is what the
  weighted methods would need from torch's loss (per-token losses);
- ``torch[sum]``: the same with ``reduction="sum"`` (no per-token weights: the baseline only).
  ``--torch`` lists the variants (``TORCH_VARIANTS``);
- ``verifiable``: ``VerifiableMethod()`` with a ``ValueHead`` (``is_correct`` alternates);
- ``rho1``: ``Rho1Method`` whose reference is a micro ``LlamaForCausalLM`` (``--ref-dim 128``,
  ``--ref-layers 2``, same vocabulary), built as ``training/worker.py`` builds it; its forward
  (``method.prepare``) is part of the step;
- ``reference``: that reference forward alone (``reference_token_ce``), so that rho1 can be
  compared with baseline + one reference forward.

Before timing, two checks: on a tiny float64 model, the loss and every parameter gradient of
``ours`` and of each plain and torch variant agree to ~1e-15; at the benchmark shape (float32,
the first warm-up step, identical weights) they agree to float32 rounding. The script stops
if either fails.

Timing: one warm-up round, then ``--steps`` rounds; a round runs every side once in turn, so
load from other processes hits them alike; the median step is reported. tokens/s counts the
valid target tokens of head 0 (``B x (T - prompt)``), the same count for every side.

Peak memory (``--memory inprocess``, default): before each timed step, outside the timing,
glibc gives freed heap pages back to the OS (``malloc_trim``) and the kernel's peak-RSS mark of
the process (``VmHWM``) is reset to the current RSS (``/proc/self/clear_refs``, value 5); after
the step, ``VmHWM - RSS before`` is the most memory the step added at any moment: parameter
gradients, activations, logits and their gradients, optimizer temporaries. Weights, AdamW
moments and the other sides' models are in "RSS before" and cancel. Large CPU tensors are
``mmap``-ed by glibc and unmapped when freed, and ``malloc_trim`` releases the freed smaller
ones, so RSS follows tensor memory; the median over the timed steps is reported.
``--memory children`` instead runs each side in a fresh process (build, warm-up, then the same
measurement on two steps; where the mark cannot be reset: ``ru_maxrss`` minus the RSS after
the warm-up step, which then also covers the warm-up's own peak).

    .venv/bin/python benchmarks/training_step.py             # dim 256, 2+4 blocks, V 32000, 4x512
    .venv/bin/python benchmarks/training_step.py --steps 2 --batch 2 --seq 128 --no-methods
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn import LinearCrossEntropyOptions

from weighted_mtp.alignment import IGNORE_INDEX, head_view, shift_labels
from weighted_mtp.losses.methods import (
    BaselineMethod,
    Rho1Method,
    VerifiableMethod,
    reference_token_ce,
)
from weighted_mtp.models import ModelArgs, MTPTransformer, ValueHead
from weighted_mtp.training.module import MTPTrainingModule

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, from any cwd
from bench_common import (  # noqa: E402
    PLAIN_VARIANTS,
    OptimSettings,
    Samples,
    Step,
    add_model_options,
    build_model,
    hf_llama,
    hwm_mib,
    malloc_trim,
    measure_alternating,
    module_step,
    optimizer_update,
    peak_rss_mib,
    plain_step,
    reset_peak_rss,
    rss_mib,
    run_child,
)

OURS = "ours"
METHOD_SIDES = ("verifiable", "rho1", "reference")
TORCH_VARIANTS = ("none", "sum")


def plain_name(variant: str) -> str:
    return f"plain[{variant}]"


def torch_name(variant: str) -> str:
    return f"torch[{variant}]"


def is_baseline_side(name: str) -> bool:
    """The sides that compute the baseline loss (compared with ``ours`` in the checks)."""
    return name == OURS or name.startswith(("plain[", "torch["))


def torch_mtp_loss(
    module: MTPTrainingModule,
    tokens: torch.Tensor,
    targets: torch.Tensor,
    *,
    reduction: str,
    chunk_size: int,
) -> torch.Tensor:
    """The baseline MTP loss through ``torch.nn.functional.linear_cross_entropy``, head by head
    on the head's valid rows (as ``losses/mtp.py`` gathers them), chunked to ``chunk_size``
    rows. ``reduction="none"``: per-token losses times per-token weights (ones here), the form
    the weighted methods need; ``"sum"``: torch's scalar path, which takes no per-token
    weights."""
    options = LinearCrossEntropyOptions(batch_chunk_size=chunk_size)
    weight = module.output_weight()
    mask = targets != IGNORE_INDEX
    seqlen = targets.shape[1]
    loss = torch.zeros(
        (), dtype=torch.promote_types(weight.dtype, torch.float32), device=weight.device
    )
    for k, hidden in enumerate(module.head_hiddens(tokens)):
        valid = head_view(mask, k)
        rows = hidden[:, : seqlen - k][valid]
        head_targets = head_view(targets, k)[valid]
        ce = F.linear_cross_entropy(
            rows, weight, head_targets, reduction=reduction, options=options
        )
        if reduction == "none":
            token_weights = torch.ones_like(ce)
            ce = (ce * token_weights).sum()
        loss = loss + ce / len(head_targets)
    return loss


def torch_step(
    module: MTPTrainingModule,
    tokens: torch.Tensor,
    targets: torch.Tensor,
    *,
    variant: str,
    chunk_size: int,
    settings: OptimSettings,
) -> Step:
    """:func:`torch_mtp_loss`, one backward, the same clip + AdamW as ``module_step``."""
    if variant not in TORCH_VARIANTS:
        raise ValueError(f"unknown torch variant {variant!r}; one of {TORCH_VARIANTS}")

    def forward_backward() -> torch.Tensor:
        loss = torch_mtp_loss(module, tokens, targets, reduction=variant, chunk_size=chunk_size)
        loss.backward()
        return loss.detach()

    return Step(forward_backward, optimizer_update(module, settings))


def make_batch(
    bsz: int, seqlen: int, prompt: int, vocab: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``tokens [B, T]``, ``targets [B, T]`` (every target valid but the prompt's and the last
    column's) and ``is_correct [B]`` (alternating)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (bsz, seqlen), generator=generator)
    labels = tokens.clone()
    labels[:, :prompt] = IGNORE_INDEX
    return tokens, shift_labels(labels), torch.arange(bsz) % 2 == 0


class Sides:
    """Builds the sides of the comparison; each policy gets its own model from the same seed."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.settings = OptimSettings(grad_clip=opts.grad_clip)
        self.tokens, self.targets, self.is_correct = make_batch(
            opts.batch, opts.seq, opts.prompt, opts.vocab, opts.seed
        )
        self.models: dict[str, MTPTransformer] = {}
        self._reference = None

    def model(self, name: str) -> MTPTransformer:
        torch.manual_seed(self.opts.seed)
        model = build_model(self.opts, n_future_tokens=self.opts.future, max_seq_len=self.opts.seq)
        self.models[name] = model.train()
        return model

    def reference_ce(self):
        """The Rho-1 reference as the training worker wraps it (no grad, chunked token CE)."""
        if self._reference is None:
            torch.manual_seed(self.opts.seed + 2)
            ref_args = ModelArgs(
                dim=self.opts.ref_dim,
                n_layers=self.opts.ref_layers,
                n_heads=self.opts.ref_heads,
                vocab_size=self.opts.vocab,
                multiple_of=32,
                n_future_tokens=1,
                max_seq_len=self.opts.seq,
            )
            self._reference = hf_llama(ref_args).eval().requires_grad_(False)
        reference, chunk = self._reference, self.opts.chunk

        @torch.no_grad()
        def reference_ce(input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            hidden = reference.model(input_ids=input_ids, use_cache=False).last_hidden_state
            return reference_token_ce(hidden, reference.lm_head.weight, targets, chunk)

        return reference_ce

    def build(self, name: str) -> Step:
        tokens, targets, opts = self.tokens, self.targets, self.opts
        common = dict(chunk_size=opts.chunk, settings=self.settings)
        if name == OURS:
            module = MTPTrainingModule(self.model(name), None, BaselineMethod())
            return module_step(module, tokens, targets, **common)
        if name.startswith("plain["):
            variant = name[len("plain[") : -1]
            return plain_step(
                self.model(name), tokens, targets, variant=variant, settings=self.settings
            )
        if name.startswith("torch["):
            module = MTPTrainingModule(self.model(name), None, BaselineMethod())
            return torch_step(module, tokens, targets, variant=name[len("torch[") : -1], **common)
        if name == "verifiable":
            model = self.model(name)
            torch.manual_seed(opts.seed + 1)
            module = MTPTrainingModule(model, ValueHead(opts.dim), VerifiableMethod())
            return module_step(module, tokens, targets, is_correct=self.is_correct, **common)
        if name == "rho1":
            method = Rho1Method(reference=self.reference_ce(), top_k=0.6, head0_always=True)
            module = MTPTrainingModule(self.model(name), None, method)
            return module_step(module, tokens, targets, **common)
        if name == "reference":
            reference_ce = self.reference_ce()
            return Step(lambda: reference_ce(tokens, targets))
        raise ValueError(f"unknown side {name!r}")


def grads_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest ``||a - b|| / ||a||`` over the parameters (all must have a gradient in both)."""
    if a.keys() != b.keys():
        raise AssertionError(f"different parameters have gradients: {sorted(a.keys() ^ b.keys())}")
    return max(
        float((a[n] - b[n]).norm() / a[n].norm().clamp_min(torch.finfo(a[n].dtype).tiny)) for n in a
    )


def check_float64(variants: list[str], torch_variants: list[str]) -> bool:
    """Tiny float64 model (chunking exercised): the project's loss and gradients against each
    plain and torch variant's."""
    torch.manual_seed(0)
    args = ModelArgs(
        dim=64,
        n_layers=6,
        n_heads=4,
        vocab_size=512,
        multiple_of=16,
        n_future_tokens=4,
        max_seq_len=64,
    )
    tokens, targets, _ = make_batch(2, 48, 5, args.vocab_size, seed=1)
    model = MTPTransformer(args).double()
    ours = module_step(
        MTPTrainingModule(model, None, BaselineMethod()), tokens, targets, chunk_size=16
    )
    loss = float(ours.forward_backward())
    grads = grads_of(model)
    model.zero_grad(set_to_none=True)
    others = {plain_name(v): plain_step(model, tokens, targets, variant=v) for v in variants}
    for variant in torch_variants:
        module = MTPTrainingModule(model, None, BaselineMethod())
        others[torch_name(variant)] = torch_step(
            module, tokens, targets, variant=variant, chunk_size=16, settings=OptimSettings()
        )
    ok = True
    for name, step in others.items():
        other = float(step.forward_backward())
        diff = max_rel_diff(grads, grads_of(model))
        model.zero_grad(set_to_none=True)
        good = abs(loss - other) <= 1e-12 * abs(loss) and diff <= 1e-10
        ok &= good
        print(
            f"check float64 (dim 64, 2+4 blocks, vocab 512, 2x48, chunk 16) ours vs "
            f"{name}: loss {loss:.15f} vs {other:.15f}, max relative gradient "
            f"difference {diff:.1e}: {'ok' if good else 'MISMATCH'}"
        )
    return ok


def warm_up_and_check(steps: dict[str, Step], models: dict[str, MTPTransformer]) -> bool:
    """The first warm-up round. ``ours``, the plain and the torch sides still share their initial
    weights here, so their losses and gradients (before the update) are compared."""
    losses: dict[str, float] = {}
    grads: dict[str, dict[str, torch.Tensor]] = {}
    for name, step in steps.items():
        loss = step.forward_backward()
        if is_baseline_side(name):
            losses[name] = float(loss)
            grads[name] = grads_of(models[name])
        if step.update is not None:
            step.update()
    ok = True
    for name in losses:
        if name == OURS:
            continue
        rel = abs(losses[OURS] - losses[name]) / abs(losses[OURS])
        diff = max_rel_diff(grads[name], grads[OURS])
        good = rel <= 1e-5 and diff <= 1e-3
        ok &= good
        print(
            f"check float32 (benchmark shape, first step) ours vs {name}: loss "
            f"{losses[OURS]:.6f} vs {losses[name]:.6f} (relative difference {rel:.1e}), max "
            f"relative gradient difference {diff:.1e}: {'ok' if good else 'MISMATCH'}"
        )
    return ok


def side_names(opts: argparse.Namespace) -> list[str]:
    names = [OURS, *(torch_name(v) for v in opts.torch), *(plain_name(v) for v in opts.plain)]
    if opts.methods:
        names += list(METHOD_SIDES)
    return names


def child(opts: argparse.Namespace) -> None:
    """One side alone in this fresh process: build, warm up, measure the step peak."""
    torch.set_num_threads(opts.threads)
    sides = Sides(opts)
    step = sides.build(opts.child)
    if reset_peak_rss():
        res = measure_alternating({opts.child: step}, warmup=opts.warmup, steps=2, memory=True)
        peaks, how = res[opts.child].peak_mib, "VmHWM reset before each step"
    else:
        for _ in range(opts.warmup):
            step()
        malloc_trim()
        before = rss_mib()
        step()
        peaks, how = [peak_rss_mib() - before], "ru_maxrss - RSS after warm-up"
    print(json.dumps({"peak_mib": peaks, "how": how, "process_peak_mib": hwm_mib()}))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, vocab=32000)
    parser.add_argument("--future", type=int, default=4, help="MTP heads (of the --layers)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--prompt", type=int, default=16, help="leading tokens without a loss")
    parser.add_argument("--chunk", type=int, default=1024, help="LossContext.chunk_size")
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument(
        "--plain",
        type=lambda s: s.split(","),
        default=["flat", "heads"],
        help=f"comma-separated plain variants among {','.join(PLAIN_VARIANTS)}",
    )
    parser.add_argument(
        "--torch",
        type=lambda s: [v for v in s.split(",") if v],
        default=list(TORCH_VARIANTS),
        help=f"comma-separated torch.nn.functional.linear_cross_entropy variants among "
        f"{','.join(TORCH_VARIANTS)} ('' for none)",
    )
    parser.add_argument(
        "--methods",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the verifiable and rho1 steps and the reference forward",
    )
    parser.add_argument("--ref-dim", type=int, default=128)
    parser.add_argument("--ref-layers", type=int, default=2)
    parser.add_argument("--ref-heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds (>= 1)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory", choices=("inprocess", "children", "off"), default="inprocess")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    for variant in opts.plain:
        if variant not in PLAIN_VARIANTS:
            parser.error(f"--plain: unknown variant {variant!r} (one of {PLAIN_VARIANTS})")
    for variant in opts.torch:
        if variant not in TORCH_VARIANTS:
            parser.error(f"--torch: unknown variant {variant!r} (one of {TORCH_VARIANTS})")
    if opts.warmup < 1:
        parser.error("--warmup must be >= 1 (the first warm-up step is the float32 check)")
    if not 0 <= opts.prompt < opts.seq - opts.future:
        parser.error("--prompt must leave targets for every head")
    return opts


def main() -> None:
    opts = parse_args()
    if opts.child:
        child(opts)
        return
    started = time.perf_counter()
    torch.set_num_threads(opts.threads)
    if opts.memory == "inprocess" and not reset_peak_rss():
        print("cannot reset the peak RSS of this process: measuring memory in children")
        opts.memory = "children"

    sides = Sides(opts)
    names = side_names(opts)
    steps = {name: sides.build(name) for name in names}
    n_tokens = int((sides.targets != IGNORE_INDEX).sum())
    n_params = sum(p.numel() for p in sides.models[OURS].parameters())
    print(
        f"shape: dim={opts.dim} blocks={opts.layers} ({opts.layers - opts.future} trunk + "
        f"{opts.future} heads) heads={opts.heads} vocab={opts.vocab} batch={opts.batch}x"
        f"{opts.seq} prompt={opts.prompt} chunk={opts.chunk} params={n_params / 1e6:.2f}M "
        f"threads={opts.threads} steps={opts.steps} (+{opts.warmup} warm-up) "
        f"torch={torch.__version__}"
    )
    print(
        f"tokens/s = valid target tokens of head 0 per second: {n_tokens} per step "
        f"({opts.batch} x ({opts.seq} - {opts.prompt}))"
    )
    ok = check_float64(opts.plain, opts.torch)
    ok &= warm_up_and_check(steps, sides.models)
    if not ok:
        raise SystemExit("the project's loss and another side's disagree")

    samples = measure_alternating(
        steps, warmup=opts.warmup - 1, steps=opts.steps, memory=opts.memory == "inprocess"
    )
    peaks = {name: s.median_peak_mib for name, s in samples.items()}
    how = "in this process, VmHWM reset before each step" if opts.memory == "inprocess" else ""
    if opts.memory == "children":
        how = ""
        for name in names:
            res = run_child(__file__, [*sys.argv[1:], f"--child={name}"])
            peaks[name] = statistics.median(res["peak_mib"])
            how = f"each side in its own process, {res['how']}"

    report(opts, names, samples, peaks, n_tokens, how)
    print(f"wall time {time.perf_counter() - started:.0f} s")
    ours_peak = peaks[OURS]
    for variant in opts.torch:
        name = torch_name(variant)
        speed = samples[OURS].median_s / samples[name].median_s
        memory = "n/a" if ours_peak is None else f"{peaks[name] / ours_peak:.2f}"  # type: ignore[operator]
        print(
            f"ratio {name}/ours: tokens_per_s {speed:.2f}, peak_memory {memory} "
            f"(torch's replaces ours at tokens_per_s >= 0.95 and peak_memory <= 1.05"
            f"{', with per-token weights' if variant == 'none' else ', but takes no per-token weights'})"
        )
    best_plain_s = min(samples[plain_name(v)].median_s for v in opts.plain)
    ours_s = samples[OURS].median_s
    peak_ratio = "n/a"
    if opts.memory != "off":
        best_plain_peak = min(peaks[plain_name(v)] for v in opts.plain)  # type: ignore[type-var]
        peak_ratio = f"{peaks[OURS] / best_plain_peak:.2f}"  # type: ignore[operator]
    print(f"ratio ours/plain: tokens_per_s {best_plain_s / ours_s:.2f}, peak_memory {peak_ratio}")


def report(
    opts: argparse.Namespace,
    names: list[str],
    samples: dict[str, Samples],
    peaks: dict[str, float | None],
    n_tokens: int,
    how: str,
) -> None:
    print(f"{'step':18s} {'median s':>9s} {'(min - max)':>15s} {'tokens/s':>9s} {'peak MiB':>9s}")
    for name in names:
        s = samples[name]
        peak = peaks[name]
        print(
            f"{name:18s} {s.median_s:9.3f} ({min(s.seconds):6.3f} - {max(s.seconds):6.3f}) "
            f"{n_tokens / s.median_s:9.0f} {'-' if peak is None else f'{peak:9.0f}':>9s}"
        )
    if how:
        print(f"peak MiB = step peak: the most memory one step added ({how}); median over steps")
    if opts.methods:
        base = samples[OURS].median_s
        ref = samples["reference"].median_s
        print(
            f"verifiable / baseline step time: {samples['verifiable'].median_s / base:.2f}x "
            f"(goal <= 1.10)"
        )
        print(
            f"rho1 / (baseline + reference forward) step time: "
            f"{samples['rho1'].median_s / (base + ref):.2f}x (goal <= 1.10; reference forward "
            f"alone {ref / base:.2f}x baseline)"
        )
    if len(opts.plain) > 1:
        print("plain = the best plain variant of each metric")
    print("goals: tokens_per_s >= 0.95, peak_memory <= 0.5")


if __name__ == "__main__":
    main()
