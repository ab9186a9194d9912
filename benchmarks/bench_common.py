"""Helpers shared by the benchmarks: model-shape options, model construction, the project's
MTP training step and a plain-PyTorch one, timing loops, peak-memory and CPU-time measurement,
and the local servers (start, wait until they answer, stop) of the S3 benchmarks.

Not a benchmark itself. The scripts import it as ``bench_common`` after putting their own folder
on ``sys.path``, so ``python benchmarks/X.py`` works from any directory. torch, transformers
and ``weighted_mtp`` are imported inside the functions that need them: a parent process that
only launches measuring children does not load them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM

    from weighted_mtp.models import ModelArgs, MTPTransformer
    from weighted_mtp.training.module import MTPTrainingModule


# --------------------------------------------------------------------------- model shape
def add_model_options(
    parser: argparse.ArgumentParser, *, vocab: int, kv_heads: bool = False
) -> None:
    """``--dim 256 --layers 6 --heads 8 [--kv-heads None] --vocab <vocab>``."""
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    if kv_heads:
        parser.add_argument("--kv-heads", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=vocab)


def init_torch(threads: int) -> None:
    """Intra-op threads, and seed 0 for the model weights and the batch that follow."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)


def model_args(
    opts: argparse.Namespace,
    *,
    n_future_tokens: int,
    max_seq_len: int,
    n_kv_heads: int | None = None,
) -> ModelArgs:
    """The ``ModelArgs`` of the shape options (:func:`add_model_options`); ``multiple_of=32``."""
    from weighted_mtp.models import ModelArgs

    return ModelArgs(
        dim=opts.dim,
        n_layers=opts.layers,
        n_heads=opts.heads,
        n_kv_heads=n_kv_heads,
        vocab_size=opts.vocab,
        multiple_of=32,
        n_future_tokens=n_future_tokens,
        max_seq_len=max_seq_len,
    )


def build_model(
    opts: argparse.Namespace, *, n_future_tokens: int, max_seq_len: int
) -> MTPTransformer:
    """A freshly initialised ``MTPTransformer`` of :func:`model_args` (in training mode)."""
    from weighted_mtp.models import MTPTransformer

    return MTPTransformer(
        model_args(opts, n_future_tokens=n_future_tokens, max_seq_len=max_seq_len)
    )


def hf_llama(args: ModelArgs) -> LlamaForCausalLM:
    """A freshly initialised HF ``LlamaForCausalLM`` of the same shape as ``args`` (1 head,
    untied embeddings, SDPA attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
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
    )


# --------------------------------------------------------------------------- timing
def training_step(model: torch.nn.Module, loss: Callable[[], None]) -> Callable[[], None]:
    """One training step: ``loss()`` (forward + backward), then AdamW on ``model``'s
    parameters (the optimizer is created here, once)."""
    import torch

    opt = torch.optim.AdamW(model.parameters())

    def step() -> None:
        loss()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def time_alternating(
    runs: Mapping[str, Callable[[], object]], *, warmup: int, steps: int
) -> dict[str, list[float]]:
    """Seconds per call of each run over ``steps`` rounds after ``warmup`` untimed ones; every
    round calls the runs in turn, so load from other processes hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(warmup + steps):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def timed(run: Callable[[], Any]) -> tuple[Any, float]:
    """``(run(), wall-clock seconds it took)``."""
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


# --------------------------------------------------------------------------- MTP training steps
PLAIN_VARIANTS = ("flat", "heads", "slices")
"""How :func:`plain_mtp_loss` reads the heads' logits ``[B, T, n, V]``:

- ``flat``: one ``F.cross_entropy(reduction="none")`` on the contiguous logits against targets
  shifted per head, then each head's mean over its valid tokens (no copy of the logits);
- ``heads``: per head ``F.cross_entropy`` on ``logits.unbind(2)[k]`` against targets shifted
  by ``k`` (one copy of that head's logits for the reshape);
- ``slices``: per head ``F.cross_entropy`` on ``logits[:, :T-k, k]`` against ``targets[:, k:]``
  (the literal port; the slice's backward writes a zero-filled ``[B, T, n, V]`` per head)."""


def shifted_targets(targets: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[B, T, n]``: ``[:, t, k]`` = ``targets[:, t+k]`` (head ``k``'s target at position
    ``t``), ``IGNORE_INDEX`` past the end."""
    import torch

    from weighted_mtp.alignment import IGNORE_INDEX

    bsz, seqlen = targets.shape
    out = torch.full((bsz, seqlen, n_heads), IGNORE_INDEX, dtype=targets.dtype)
    for k in range(n_heads):
        out[:, : seqlen - k, k] = targets[:, k:]
    return out


def plain_mtp_loss(
    model: MTPTransformer, tokens: torch.Tensor, targets: torch.Tensor, variant: str = "flat"
) -> torch.Tensor:
    """The MTP loss the obvious way: ``model(tokens)`` gives every head's logits, cross-entropy
    through autograd, each head's mean over its valid targets, summed over heads (the same
    value as the project's loss with step denominators = this batch's counts)."""
    import torch.nn.functional as F

    from weighted_mtp.alignment import IGNORE_INDEX

    logits = model(tokens)  # [B, T, n, V]
    bsz, seqlen, n_heads, vocab = logits.shape
    if variant == "slices":
        return sum(
            F.cross_entropy(
                logits[:, : seqlen - k, k].reshape(-1, vocab),
                targets[:, k:].reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
            for k in range(n_heads)
        )
    shifted = shifted_targets(targets, n_heads)
    if variant == "heads":
        return sum(
            F.cross_entropy(
                head.reshape(-1, vocab), shifted[..., k].reshape(-1), ignore_index=IGNORE_INDEX
            )
            for k, head in enumerate(logits.unbind(2))
        )
    if variant != "flat":
        raise ValueError(f"unknown plain variant {variant!r}; one of {PLAIN_VARIANTS}")
    ce = F.cross_entropy(
        logits.reshape(-1, vocab), shifted.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(bsz, seqlen, n_heads)
    counts = (shifted != IGNORE_INDEX).sum(dim=(0, 1))
    return (ce.sum(dim=(0, 1)) / counts).sum()


@dataclass(frozen=True)
class OptimSettings:
    """AdamW and clipping of a training step: the defaults of ``TrainingParams``."""

    lr: float = 3e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0


def make_optimizer(module: torch.nn.Module, settings: OptimSettings) -> torch.optim.Optimizer:
    """The project's optimizer (``training.optim.build_optimizer``), or, where that module is
    missing, a plain foreach AdamW with the same settings."""
    import torch

    try:
        from weighted_mtp.training.optim import build_optimizer
    except ImportError:
        params = [p for p in module.parameters() if p.requires_grad]
        return torch.optim.AdamW(
            params,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            betas=settings.betas,
            foreach=True,
        )
    return build_optimizer(
        module, lr=settings.lr, weight_decay=settings.weight_decay, betas=settings.betas
    )


@dataclass
class Step:
    """A training step in two parts, so a check can read the gradients in between:
    ``forward_backward()`` returns the (detached) loss; ``update()`` clips, steps the optimizer
    and zeroes the gradients (None for a forward-only step). Calling the step runs both."""

    forward_backward: Callable[[], torch.Tensor]
    update: Callable[[], None] | None = None

    def __call__(self) -> None:
        self.forward_backward()
        if self.update is not None:
            self.update()


def optimizer_update(module: torch.nn.Module, settings: OptimSettings) -> Callable[[], None]:
    """The update half of a :class:`Step`: clip, AdamW (:func:`make_optimizer`), zero_grad."""
    import torch

    optimizer = make_optimizer(module, settings)
    trainable = [p for p in module.parameters() if p.requires_grad]

    def update() -> None:
        # As the training loop does: clip the global norm, step, free the gradients.
        torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return update


def module_step(
    module: MTPTrainingModule,
    tokens: torch.Tensor,
    targets: torch.Tensor,
    *,
    is_correct: torch.Tensor | None = None,
    chunk_size: int = 1024,
    settings: OptimSettings = OptimSettings(),
) -> Step:
    """The project's step on one micro-batch: the method's ``prepare`` (Rho-1's reference
    forward), one forward through the training module, one backward, clip, AdamW, zero_grad."""
    from weighted_mtp.alignment import head_valid_counts
    from weighted_mtp.losses.methods import Batch, LossContext

    def forward_backward() -> torch.Tensor:
        ctx = LossContext(
            denominators=head_valid_counts(targets, module.n_heads).double(),
            chunk_size=chunk_size,
        )
        batch = Batch(input_ids=tokens, targets=targets, is_correct=is_correct)
        module.method.prepare(batch)
        loss, _ = module(batch.input_ids, batch.targets, batch.is_correct, batch.ref_ce, ctx=ctx)
        loss.backward()
        return loss.detach()

    return Step(forward_backward, optimizer_update(module, settings))


def plain_step(
    model: MTPTransformer,
    tokens: torch.Tensor,
    targets: torch.Tensor,
    *,
    variant: str = "flat",
    settings: OptimSettings = OptimSettings(),
) -> Step:
    """:func:`plain_mtp_loss`, one backward, then the same clip + AdamW as :func:`module_step`."""

    def forward_backward() -> torch.Tensor:
        loss = plain_mtp_loss(model, tokens, targets, variant)
        loss.backward()
        return loss.detach()

    return Step(forward_backward, optimizer_update(model, settings))


# --------------------------------------------------------------------------- memory
def rss_mib() -> float:
    """The resident set size of this process now, in MiB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    """The peak resident set size of this process so far, in MiB (Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_child(script: str, args: list[str]) -> dict[str, Any]:
    """Run ``script`` with ``args`` in a fresh Python process (so earlier allocations and peaks
    do not mix in) and return the JSON object it printed on its last stdout line."""
    out = subprocess.run(
        [sys.executable, script, *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere), so
    that the RSS drops to the memory still in use."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> bool:
    """Set this process's peak-RSS mark (``VmHWM``) to its current RSS; False where the
    kernel does not allow it (``/proc/self/clear_refs`` value 5: Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def hwm_mib() -> float:
    """This process's peak RSS since start or since :func:`reset_peak_rss`, in MiB.

    Read from ``/proc/self/status``, not ``getrusage``: ``ru_maxrss`` also keeps the peak of
    the process this one was exec-ed from (the parent, for a vfork-spawned child)."""
    with open("/proc/self/status") as status:
        match = re.search(r"^VmHWM:\s+(\d+) kB", status.read(), re.MULTILINE)
    if match is None:
        raise OSError("no VmHWM in /proc/self/status")
    return int(match.group(1)) / 1024


@dataclass
class Samples:
    """Wall-clock seconds of each measured call and, when measured, its step peak (MiB)."""

    seconds: list[float]
    peak_mib: list[float]

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_peak_mib(self) -> float | None:
        return statistics.median(self.peak_mib) if self.peak_mib else None


def measure_alternating(
    runs: Mapping[str, Callable[[], object]], *, warmup: int, steps: int, memory: bool
) -> dict[str, Samples]:
    """Like :func:`time_alternating`, and with ``memory`` also each call's step peak: before
    the call (outside the timing) freed heap pages go back to the OS and the peak-RSS mark is
    reset to the current RSS; after it, peak - RSS before = the most memory the call added at
    any moment (its activations, logits, gradients and optimizer temporaries)."""
    if memory and not reset_peak_rss():
        raise OSError("cannot reset the peak RSS (/proc/self/clear_refs): measure in children")
    out = {name: Samples([], []) for name in runs}
    for i in range(warmup + steps):
        for name, run in runs.items():
            if memory:
                malloc_trim()
                before = rss_mib()
                reset_peak_rss()
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            if i < warmup:
                continue
            out[name].seconds.append(seconds)
            if memory:
                out[name].peak_mib.append(hwm_mib() - before)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``): a local server's
    share of the cores during a measurement."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- local servers
def start_server(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own session (so :func:`stop_process_group` stops all of it), its
    output appended to ``log``."""
    with log.open("a") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_answers(
    url: str, proc: subprocess.Popen, what: str, log: Path, timeout_s: float = 60
) -> None:
    """Poll ``url`` until it answers; fail with the tail of ``log`` if ``proc`` exits first or
    ``timeout_s`` passes."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not answer within {timeout_s:.0f} s: {log.read_text()[-2000:]}")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a server the benchmark starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(proc: subprocess.Popen) -> None:
    """Stop a server started with ``start_new_session=True``: SIGTERM to its group, SIGKILL
    after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
