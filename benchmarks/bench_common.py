"""Helpers shared by the model benchmarks: model-shape options, model construction, timing
loops and peak-RSS measurement in a child process.

Not a benchmark itself. The scripts import it as ``bench_common`` after putting their own folder
on ``sys.path``, so ``python benchmarks/X.py`` works from any directory. torch, transformers
and ``weighted_mtp`` are imported inside the functions that need them: a parent process that
only launches measuring children (``mtp_loss_memory.py``) does not load them.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM

    from weighted_mtp.models import ModelArgs, MTPTransformer


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
