"""Every training method for a few steps on one GPU, through the real launcher and worker.

No Kedro, no MLflow: the script writes what a Kedro node would (a model directory, the
training JSONL, the data plan, the job spec) and starts each job with the real launcher
(``torchrun --nproc-per-node 1 -m weighted_mtp.training.worker spec.json``; nccl on CUDA,
gloo on CPU), FSDP2, ``runtime.dtype: bfloat16``. Each method runs with activation
checkpointing off (``none``) and on (``blocks``). It prints one row per run:

- tokens/s: from the history file's ``train/tokens_per_s`` (non-padding input tokens over the
  step's wall time), steps 2.. only (step 1 pays CUDA/NCCL warm-up and allocator growth): the
  total tokens of those steps over the sum of their times;
- MFU: tokens/s x model FLOPs per token / the GPU's dense bf16 peak (A100 312, H100 SXM 989,
  H200 989 TFLOP/s, from ``torch.cuda.get_device_name``); the FLOP count is
  :func:`flops_per_token` (6N + 12 L d T for the methods that train the model);
- peak memory: the largest ``train/peak_memory_gib`` the worker logged
  (``torch.cuda.max_memory_allocated`` since the worker started: weights, AdamW state,
  activations and the loss, all included).

The model is random: a ~1.06 B-parameter MTP LLaMA (dim 2048, 18 blocks = 14 trunk + head 0
+ 3 extra heads, 16 attention heads, 4 future tokens, vocab 32000), built with the real model
classes and written with ``model_io.model_dir.save_model_dir`` in bf16. Rho-1's reference is
a random ``LlamaForCausalLM`` (dim 1024, 8 layers) written with
``model_io.reference.save_reference_model``. The data are synthetic CodeContests tasks through
the real converter, lengthened so that every sequence fills ``--seq-len`` tokens (a quarter or
more prompt, cut from the left by the collator; the rest output), in the real JSONL schema
with its metadata table and the real data plan of each method. The tokenizer is a
SentencePiece model trained on that text and padded with unused pieces to the model's
vocabulary (the worker refuses a tokenizer whose size differs from the model's).

    PYTHONPATH=src python benchmarks/gpu_training.py --out /tmp/gpu_bench          # one GPU
    PYTHONPATH=src python benchmarks/gpu_training.py --device cpu --tiny --steps 2 # any machine

On a machine without the project installed (a bare GPU image: torch, transformers,
safetensors, sentencepiece, pandas; no pydantic), the script first lists what is missing and
how to carry it (``docs/benchmarks/gpu_training.md``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METHODS = ("baseline", "critic", "verifiable", "rho1")
AC_MODES = ("none", "blocks")
#: Dense bf16 tensor-core peak, FLOP/s, by a substring test on torch.cuda.get_device_name.
PEAK_BF16 = (
    (("A100",), 312e12),
    (("H100", "HBM3"), 989e12),  # SXM5 boards report "NVIDIA H100 80GB HBM3"
    (("H100", "SXM"), 989e12),
    (("H200",), 989e12),
)
#: (import name, distribution, compiled?) of what this script and the worker import. The
#: first group is on the GPU image (docs/benchmarks/gpu_training.md); the second must be
#: carried there. pydantic_core is a compiled extension: its wheel must match the Python.
REQUIRED = (
    ("torch", "torch", True),
    ("numpy", "numpy", True),
    ("pandas", "pandas", True),
    ("safetensors", "safetensors", True),
    ("sentencepiece", "sentencepiece", True),
    ("transformers", "transformers", False),
    ("fsspec", "fsspec", False),
    ("pydantic", "pydantic", False),
    ("pydantic_core", "pydantic_core", True),
    ("annotated_types", "annotated-types", False),
    ("typing_inspection", "typing-inspection", False),
    ("typing_extensions", "typing_extensions", False),
)
WHEEL_DIR = "gpu_wheels"
#: Versions known to work together (the project's environment on 2026-12-06): pydantic pins
#: pydantic_core exactly and both need typing_extensions >= 4.16, so they travel as a set.
CARRY_PINS = {
    "pydantic": "2.14.4",
    "pydantic_core": "2.50.5",
    "annotated-types": "0.8.0",
    "typing-inspection": "0.4.5",
    "typing_extensions": "4.16.0",
    "fsspec": "2026.9.0",
}
PYDANTIC_SET = ("pydantic", "pydantic_core", "annotated-types", "typing-inspection")


# --------------------------------------------------------------------------- environment
def check_imports() -> list[str]:
    """Names of missing or broken imports, with the carry recipe printed; [] when all load."""
    missing: list[tuple[str, str, bool, str]] = []
    for module, dist, compiled in REQUIRED:
        if importlib.util.find_spec(module) is None:
            missing.append((module, dist, compiled, "not installed"))
    if not missing:
        # Installed but incompatible (pydantic checks its pydantic_core version on import).
        for module, dist, compiled in REQUIRED:
            try:
                importlib.import_module(module)
            except Exception as exc:  # noqa: BLE001 - any import failure is reported as is
                missing.append((module, dist, compiled, f"{type(exc).__name__}: {exc}"))
    if importlib.util.find_spec("weighted_mtp") is None:
        print("weighted_mtp is not importable: run from the repository root with PYTHONPATH=src")
        return ["weighted_mtp"]
    if not missing:
        return []
    py = f"{sys.version_info.major}{sys.version_info.minor}"
    print("missing Python packages (the worker imports them):")
    for module, dist, compiled, why in missing:
        kind = f"compiled: a cp{py} wheel for this platform" if compiled else "pure Python"
        print(f"  {module:<18} pip name {dist:<18} {kind}; {why}")
    dists = [dist for _, dist, _, _ in missing]
    if any(d in PYDANTIC_SET for d in dists):
        dists += [d for d in (*PYDANTIC_SET, "typing_extensions") if d not in dists]
    names = " ".join(f"{d}=={CARRY_PINS[d]}" if d in CARRY_PINS else d for d in dists)
    print(
        "\ncarry them as wheels (on a machine with pip and a network, in the repository root;"
        f" {WHEEL_DIR}/ is git-ignored):\n"
        f"  python3 -m pip download --no-deps --only-binary=:all: --python-version "
        f"{sys.version_info.major}.{sys.version_info.minor} --implementation cp \\\n"
        "    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 "
        f"-d {WHEEL_DIR} {names}\n"
        "then here, before this script:\n"
        f"  python3 -m pip install -q --no-index --no-deps --target /tmp/site {WHEEL_DIR}/*.whl"
        "\n  export PYTHONPATH=/tmp/site:src\n"
        "(versions that work together: docs/benchmarks/gpu_training.md)"
    )
    return [m for m, _, _, _ in missing]


def gpu_peak_flops() -> tuple[str, float | None]:
    """The GPU's name and dense bf16 peak (None when the table does not know it).

    Asked in a child process: a CUDA context in this parent would hold GPU memory that the
    worker's peak-memory figure does not see but the worker cannot use either.
    """
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.get_device_name(0))"],
        capture_output=True,
        text=True,
        check=True,
    )
    name = out.stdout.strip()
    for needles, peak in PEAK_BF16:
        if all(n in name for n in needles):
            return name, peak
    return name, None


# --------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Shape:
    dim: int
    n_layers: int
    n_heads: int
    vocab: int
    multiple_of: int
    n_future: int
    ref_dim: int
    ref_layers: int
    ref_heads: int
    seq_len: int
    batch_size: int
    grad_accum: int
    n_tasks: int
    chunk_size: int


FULL = Shape(
    dim=2048,
    n_layers=18,
    n_heads=16,
    vocab=32000,
    multiple_of=256,
    n_future=4,
    ref_dim=1024,
    ref_layers=8,
    ref_heads=8,
    seq_len=2048,
    batch_size=4,
    grad_accum=2,
    n_tasks=24,
    chunk_size=1024,
)
TINY = Shape(
    dim=64,
    n_layers=5,
    n_heads=4,
    vocab=512,
    multiple_of=16,
    n_future=4,
    ref_dim=32,
    ref_layers=1,
    ref_heads=4,
    seq_len=96,
    batch_size=2,
    grad_accum=2,
    n_tasks=6,
    chunk_size=64,
)


def flops_per_token(method: str, shape: Shape, ffn_hidden: int, ref_ffn_hidden: int) -> float:
    """Model FLOPs per input token of one training step (PaLM's convention).

    A block's matmuls cost 2 FLOPs per weight per token forward (q, k, v, o, w1, w2, w3; no
    grouped-query attention here); attention scores and their use cost 4 d T per block
    forward (QK^T and AV over the whole T x T, causal masking not discounted); backward costs
    twice the forward. The unembedding runs once per future-token head. So for baseline,
    verifiable and rho1 (the model trains): ``6 N + 12 L d T`` with
    ``N = L * block + n_future * d * V``. The critic runs the trunk and head 0 forward only,
    without unembedding (its value head, ``d`` weights, is left out). rho1 adds its
    reference's forward (``2 N_ref + 4 L_ref d_ref T``). Embedding lookups, norms, RoPE and
    the loss are left out.
    """
    d, t, v = shape.dim, shape.seq_len, shape.vocab
    block = 4 * d * d + 3 * d * ffn_hidden
    attention = 4 * d * t
    if method == "critic":
        blocks_run = shape.n_layers - shape.n_future + 1
        return float(blocks_run * (2 * block + attention))
    forward = shape.n_layers * (2 * block + attention) + shape.n_future * 2 * d * v
    total = 3 * forward
    if method == "rho1":
        rd = shape.ref_dim
        ref_block = 4 * rd * rd + 3 * rd * ref_ffn_hidden
        total += shape.ref_layers * (2 * ref_block + 4 * rd * t) + 2 * rd * v
    return float(total)


# --------------------------------------------------------------------------- tokenizer
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def pad_vocabulary(proto: bytes, vocab_size: int) -> bytes:
    """``proto`` (a serialized SentencePiece ModelProto) with UNUSED pieces appended up to
    ``vocab_size`` pieces; encoding is unchanged (SentencePiece never emits UNUSED pieces).

    Written at the protobuf wire level (``ModelProto.pieces`` is repeated field 1, and
    repeated fields may appear anywhere in a message) so that no protobuf runtime matching
    sentencepiece's generated code is needed on the GPU image.
    """
    from weighted_mtp.data.tokenizer import Tokenizer

    have = Tokenizer(proto).vocab_size
    if have > vocab_size:
        raise ValueError(f"the trained tokenizer has {have} pieces, more than {vocab_size}")
    extra = bytearray()
    for i in range(have, vocab_size):
        name = f"<unused_{i}>".encode()
        # SentencePiece: piece (1, string), score (2, float), type (3, enum; UNUSED = 5).
        piece = b"\x0a" + _varint(len(name)) + name + b"\x15" + struct.pack("<f", 0.0)
        piece += b"\x18\x05"
        extra += b"\x0a" + _varint(len(piece)) + piece
    padded = proto + bytes(extra)
    if Tokenizer(padded).vocab_size != vocab_size:
        raise RuntimeError("padding the SentencePiece model did not give the expected size")
    return padded


# --------------------------------------------------------------------------- data + models
def _repeat_to(text: str, tokenizer: Any, n_tokens: int, *, cut: bool) -> str:
    """``text`` repeated (newline-joined) to at least ``n_tokens`` tokens; ``cut``: then
    decoded back from its first ``n_tokens`` tokens (the tokenizer is byte-exact)."""
    per = max(1, len(tokenizer.encode(text + "\n")))
    long = "\n".join([text] * (n_tokens // per + 2))
    if not cut:
        return long
    return tokenizer.decode(tokenizer.encode(long)[:n_tokens])


@dataclass
class World:
    root: Path
    model_dir: Path
    reference_dir: Path
    train_jsonl: Path
    metadata: Any  # pandas.DataFrame
    n_params: int
    n_ref_params: int
    ffn_hidden: int
    ref_ffn_hidden: int


def build_world(root: Path, shape: Shape) -> World:
    """Synthetic JSONL + metadata, tokenizer, random MTP model and reference directories."""
    import torch

    from weighted_mtp.data.codecontests import convert_codecontests
    from weighted_mtp.data.metadata import build_metadata
    from weighted_mtp.data.records import dumps_line, validate_records
    from weighted_mtp.data.synthetic import generate_codecontests_rows
    from weighted_mtp.data.tokenizer import Tokenizer
    from weighted_mtp.data.tokenizer_training import corpus_texts, train_tokenizer
    from weighted_mtp.model_io.micro import build_micro_mtp, build_micro_reference
    from weighted_mtp.model_io.model_dir import save_model_dir
    from weighted_mtp.model_io.reference import save_reference_model
    from weighted_mtp.models import ModelArgs

    root.mkdir(parents=True, exist_ok=True)
    records = convert_codecontests(
        generate_codecontests_rows(shape.n_tasks, seed=3, split="train"), source_file="synthetic"
    ).records
    trained = train_tokenizer(corpus_texts(records), vocab_size=min(2000, shape.vocab - 64))
    tokenizer = Tokenizer(pad_vocabulary(trained.model_proto, shape.vocab), source="<padded>")
    # Output ~70% of the sequence, prompt long enough that the collator cuts it to fill the
    # rest: every sequence is exactly seq_len tokens, as attention FLOPs assume.
    out_tokens = int(0.7 * shape.seq_len)
    long_records = [
        {
            **r,
            "instruction": _repeat_to(r["instruction"], tokenizer, shape.seq_len // 2, cut=False),
            "output": _repeat_to(r["output"], tokenizer, out_tokens, cut=True),
            # The lengthened output no longer holds the span where the bug was.
            "metadata": {**r["metadata"], "bug_span": None},
        }
        for r in records
    ]
    validate_records(long_records, "training", "synthetic")
    train_jsonl = root / "train.jsonl"
    with train_jsonl.open("wb") as handle:
        for record in long_records:
            handle.write(dumps_line(record) + b"\n")
    metadata = build_metadata(long_records, tokenizer)

    args = ModelArgs(
        dim=shape.dim,
        n_layers=shape.n_layers,
        n_heads=shape.n_heads,
        vocab_size=shape.vocab,
        multiple_of=shape.multiple_of,
        n_future_tokens=shape.n_future,
        max_seq_len=shape.seq_len,
    )
    model = build_micro_mtp(args, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    model_dir = root / "mtp-model"
    save_model_dir(
        model, args, tokenizer, model_dir, dtype=torch.bfloat16, origin="gpu_training bench"
    )
    del model
    ref_ffn = 16 * math.ceil(int(8 * shape.ref_dim / 3) / 16)
    reference = build_micro_reference(
        shape.vocab,
        dim=shape.ref_dim,
        n_layers=shape.ref_layers,
        n_heads=shape.ref_heads,
        intermediate_size=ref_ffn,
        max_seq_len=shape.seq_len,
        seed=1,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
    )
    n_ref = sum(p.numel() for p in reference.parameters())
    reference_dir = root / "reference"
    save_reference_model(reference, reference_dir, tokenizer=tokenizer)
    return World(
        root=root,
        model_dir=model_dir,
        reference_dir=reference_dir,
        train_jsonl=train_jsonl,
        metadata=metadata,
        n_params=n_params,
        n_ref_params=n_ref,
        ffn_hidden=args.ffn_hidden_dim,
        ref_ffn_hidden=ref_ffn,
    )


# --------------------------------------------------------------------------- one run
def timed_throughput(history: list[dict]) -> tuple[float, int, int]:
    """(tokens/s over steps 2.., steps counted, tokens per step) from history records."""
    train = sorted((h for h in history if "train/tokens_per_s" in h), key=lambda h: int(h["step"]))
    seen = 0.0
    tokens = seconds = 0.0
    counted = 0
    per_step = 0
    for h in train:
        step_tokens = float(h["train/tokens_seen"]) - seen
        seen = float(h["train/tokens_seen"])
        per_step = int(step_tokens)
        if int(h["step"]) == 1:
            continue
        tokens += step_tokens
        seconds += step_tokens / float(h["train/tokens_per_s"])
        counted += 1
    return (tokens / seconds if seconds else float("nan")), counted, per_step


def run_one(
    method: str, ac: str, *, world: World, shape: Shape, device: str, steps: int, scratch: Path
) -> dict[str, Any]:
    from weighted_mtp.training.config import PARAMS_BY_METHOD, RuntimeParams
    from weighted_mtp.training.data_plan import build_data_plan
    from weighted_mtp.training.launcher import TrainingJobError, launch
    from weighted_mtp.training.spec import JobSpec

    run_dir = scratch / f"{method}-{ac}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    params = PARAMS_BY_METHOD[method](
        max_steps=steps,
        batch_size=shape.batch_size,
        grad_accum_steps=shape.grad_accum,
        lr=1e-5,
        warmup_steps=0,
        log_every=1,
        eval_every=steps,
        val_samples=0,
        max_seq_len=shape.seq_len,
        chunk_size=shape.chunk_size,
        resume="never",
    )
    runtime = RuntimeParams(
        device=device,
        nproc_per_node=1,
        strategy="fsdp",
        dtype="bfloat16",
        activation_checkpointing=ac,
        omp_threads=1 if device == "cpu" else None,
    )
    spec = JobSpec(
        method=method,
        run_dir=str(run_dir),
        params=params.model_dump(),
        runtime=runtime,
        init_model=str(world.model_dir),
        reference_model=str(world.reference_dir) if method == "rho1" else None,
        train_jsonl=str(world.train_jsonl),
        mlflow_tracking_uri=None,
    )
    spec.write()
    build_data_plan(method, params, world.metadata, None, world_size=1).save(spec.plan_path)
    row: dict[str, Any] = {"method": method, "ac": ac}
    started = time.perf_counter()
    try:
        launch(spec, show_progress=False)
    except TrainingJobError as exc:
        row["error"] = str(exc).strip().splitlines()[0][:200]
        row["log_dir"] = str(exc.log_dir)
        row["wall_s"] = time.perf_counter() - started
        return row
    row["wall_s"] = time.perf_counter() - started
    history = [json.loads(x) for x in spec.history_path.read_text().splitlines() if x.strip()]
    tps, counted, per_step = timed_throughput(history)
    peaks = [h["train/peak_memory_gib"] for h in history if "train/peak_memory_gib" in h]
    row.update(
        tokens_per_s=tps,
        timed_steps=counted,
        tokens_per_step=per_step,
        peak_memory_gib=max(peaks) if peaks else None,
        final_loss=next(
            (h["train/loss"] for h in reversed(history) if "train/loss" in h), float("nan")
        ),
    )
    # The checkpoint (fp32 weights + AdamW moments: 12.7 GB at 1 B) and the final model are
    # not needed past this point; eight runs of them would not fit the GPU machine's disk.
    for big in (spec.checkpoint_path, spec.final_model_dir):
        shutil.rmtree(big, ignore_errors=True)
    return row


# --------------------------------------------------------------------------- report
def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def table(rows: list[dict], *, device: str, gpu: str | None, peak: float | None) -> str:
    head = "| method | AC | timed steps | tokens/step | tokens/s | MFU | peak memory GiB | wall s |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['method']} | {r['ac']} | failed: {r['error']} (logs: {r['log_dir']}) "
                f"| | | | | {r['wall_s']:.0f} |"
            )
            continue
        if device == "cpu":
            mfu, mem = "n/a on CPU", "n/a on CPU"
        else:
            mfu = f"{100 * r['mfu']:.1f}%" if peak else f"unknown GPU ({gpu})"
            mem = _fmt(r["peak_memory_gib"], ".1f") if r["peak_memory_gib"] else "not reported"
        lines.append(
            f"| {r['method']} | {r['ac']} | {r['timed_steps']} | {r['tokens_per_step']} | "
            f"{_fmt(r['tokens_per_s'], ',.0f')} | {mfu} | {mem} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="dim 64, 5 blocks: a CPU check")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (>= 2)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--ac", default=",".join(AC_MODES), help="none,blocks or one of them")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=None, help="micro-batches per step")
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("gpu_training_out"))
    parser.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="model, data and run directories (default: OUT/work, removed at the end unless "
        "a run failed)",
    )
    opts = parser.parse_args(argv)
    methods = [m.strip() for m in opts.methods.split(",") if m.strip()]
    acs = [a.strip() for a in opts.ac.split(",") if a.strip()]
    bad = [m for m in methods if m not in METHODS] + [a for a in acs if a not in AC_MODES]
    if bad or not methods or not acs:
        parser.error(f"unknown or empty --methods/--ac {bad}: methods {METHODS}, ac {AC_MODES}")
    if opts.steps < 2:
        parser.error("--steps must be >= 2: step 1 is excluded from tokens/s")

    if check_imports():
        return 2
    import torch

    if opts.device == "cuda" and not torch.cuda.is_available():
        print(f"--device cuda but torch sees no GPU (torch {torch.__version__})")
        return 2
    shape = TINY if opts.tiny else FULL
    overrides = {
        k: v
        for k, v in (
            ("batch_size", opts.batch_size),
            ("grad_accum", opts.grad_accum),
            ("seq_len", opts.seq_len),
        )
        if v is not None
    }
    if overrides:
        shape = Shape(**{**shape.__dict__, **overrides})
    gpu, peak = (None, None)
    if opts.device == "cuda":
        gpu, peak = gpu_peak_flops()

    opts.out.mkdir(parents=True, exist_ok=True)
    scratch = opts.scratch or opts.out / "work"
    started = time.perf_counter()
    world = build_world(scratch, shape)
    print(
        f"model: dim {shape.dim}, {shape.n_layers} blocks ({shape.n_layers - shape.n_future} "
        f"trunk + {shape.n_future} heads), {shape.n_heads} attention heads, vocab "
        f"{shape.vocab}: {world.n_params:,} parameters; rho1 reference: {world.n_ref_params:,}"
    )
    print(
        f"data: {len(world.metadata)} records of {shape.seq_len} tokens; batch "
        f"{shape.batch_size} x {shape.grad_accum} micro-batches; {opts.steps} steps; "
        f"fsdp, bf16, nproc 1, {'nccl' if opts.device == 'cuda' else 'gloo'}; "
        f"built in {time.perf_counter() - started:.0f} s"
    )
    print(
        f"device: {gpu or 'cpu'}; torch {torch.__version__}; bf16 dense peak "
        f"{'%.0f TFLOP/s' % (peak / 1e12) if peak else 'unknown'}"
    )

    rows: list[dict] = []
    summary = {
        "device": gpu or "cpu",
        "peak_flops": peak,
        "torch": torch.__version__,
        "shape": shape.__dict__,
        "n_params": world.n_params,
        "n_ref_params": world.n_ref_params,
        "steps": opts.steps,
        "rows": rows,
    }
    for method in methods:
        for ac in acs:
            row = run_one(
                method,
                ac,
                world=world,
                shape=shape,
                device=opts.device,
                steps=opts.steps,
                scratch=scratch / "runs",
            )
            fpt = flops_per_token(method, shape, world.ffn_hidden, world.ref_ffn_hidden)
            row["flops_per_token"] = fpt
            if "tokens_per_s" in row and peak:
                row["mfu"] = row["tokens_per_s"] * fpt / peak
            print(json.dumps(row), flush=True)
            rows.append(row)
            # After every run: a session cut short by its time limit keeps what it measured.
            text = table(rows, device=opts.device, gpu=gpu, peak=peak)
            (opts.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
            (opts.out / "results.md").write_text(text + "\n")

    print()
    print(text)
    failed = any("error" in r for r in rows)
    # Kept when a run failed: its logs are under SCRATCH/runs/<method>-<ac>/logs.
    if opts.scratch is None and not failed:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
