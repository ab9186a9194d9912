"""Host memory of a distributed job's start-up: sharded loading against every rank loading it all.

Two worker processes (gloo, CPU) take a model directory to an FSDP2-sharded training module, as
``training/worker.py`` + ``training/loop.py`` do before the first step, in one of two ways:

- ``sharded`` (today's code): ``build_meta_model`` (model on the meta device), ``parallelize``,
  ``to_empty``, ``MetaModel.fill`` (each rank reads only its own rows from the safetensors files);
- ``full-load`` (the named alternative, the code before issue 15): every rank calls
  ``load_model(dir, "cpu", torch.float32)``, then ``module.to(cpu)`` and ``parallelize``.

Each worker is a fresh process and reports its peak resident set size (``VmHWM``), its RSS after
``import torch`` + ``init_process_group`` (the interpreter's share) and a checksum of its shard;
the parent prints per-rank and summed peaks of both ways and their ratio. The checksums of the
two ways must agree (the same weights end up on each rank), or the script stops.

    python benchmarks/startup_memory.py                  # dim 1024, 16 blocks: 271 M params
    python benchmarks/startup_memory.py --model-dir DIR  # reuse (or create) the directory
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common  # noqa: E402

WAYS = ("sharded", "full-load")


# --------------------------------------------------------------------------- worker
def _worker(way: str, model_dir: str, rank: int, world: int, port: int, strategy: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    from weighted_mtp.losses.methods import BaselineMethod
    from weighted_mtp.model_io.loading import load_model
    from weighted_mtp.model_io.meta_model import build_meta_model
    from weighted_mtp.training.module import MTPTrainingModule
    from weighted_mtp.training.parallelize import parallelize

    bench_common.malloc_trim()
    baseline = bench_common.rss_mib()
    cpu = torch.device("cpu")
    started = time.perf_counter()
    if way == "sharded":
        pending = build_meta_model(model_dir, verify=False)
        module = MTPTrainingModule(pending.model, None, BaselineMethod())
        if strategy == "ddp":
            module.to_empty(device=cpu)
            pending.fill()
        parallelize(module, strategy, cpu, param_dtype=None)
        if strategy == "fsdp":
            module.to_empty(device=cpu)
            pending.fill()
    else:
        model = load_model(model_dir, "cpu", torch.float32, verify=False)
        module = MTPTrainingModule(model.train(), None, BaselineMethod())
        module.to(cpu)
        parallelize(module, strategy, cpu, param_dtype=None)
    seconds = time.perf_counter() - started
    peak, loaded = bench_common.hwm_mib(), bench_common.rss_mib()
    dist.barrier()
    local = [p.to_local() if isinstance(p, DTensor) else p for p in module.parameters()]
    checksum = torch.tensor(
        [
            sum(float(t.detach().sum(dtype=torch.float64)) for t in local),
            sum(t.numel() for t in local),
        ],
        dtype=torch.float64,
    )
    dist.all_reduce(checksum)
    result = {
        "rank": rank,
        "peak_mib": peak,
        "baseline_mib": baseline,
        "loaded_mib": loaded,
        "shard_mib": sum(t.numel() * t.element_size() for t in local) / 2**20,
        "seconds": seconds,
        "dtypes": sorted({str(t.dtype) for t in local}),
        "checksum": checksum.tolist(),
    }
    dist.destroy_process_group()
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parent
def _write_model(opts: argparse.Namespace, model_dir: Path) -> None:
    import torch

    from weighted_mtp.model_io.model_dir import save_model_dir

    torch.manual_seed(0)
    args = bench_common.model_args(opts, n_future_tokens=4, max_seq_len=2048)
    with torch.device("meta"):
        from weighted_mtp.models import MTPTransformer

        model = MTPTransformer(args)
    # Random weights written tensor by tensor in the stored dtype: the parent never holds the
    # fp32 model, so writing does not take the memory being measured from the workers.
    state = {
        k: (torch.randn(v.shape, dtype=torch.float32) * 0.02).to(getattr(torch, opts.stored_dtype))
        for k, v in model.state_dict().items()
    }
    save_model_dir(state, args, b"not a tokenizer", model_dir, origin="benchmark")


def _run(way: str, model_dir: Path, opts: argparse.Namespace) -> list[dict]:
    port = bench_common.free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                way,
                str(model_dir),
                str(rank),
                str(opts.nproc),
                str(port),
                opts.strategy,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in range(opts.nproc)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{way}: a worker failed (exit {proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return sorted(results, key=lambda r: r["rank"])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        way, model_dir, rank, world, port, strategy = sys.argv[2:8]
        _worker(way, model_dir, int(rank), int(world), int(port), strategy)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bench_common.add_model_options(parser, vocab=32000)
    parser.set_defaults(dim=1024, layers=16, heads=16)
    parser.add_argument("--stored-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--strategy", default="fsdp", choices=["fsdp", "ddp"])
    parser.add_argument("--model-dir", type=Path, default=None)
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="wmtp-startup-") as tmp:
        model_dir = opts.model_dir or Path(tmp) / "model"
        if not (model_dir / "params.json").is_file():
            _write_model(opts, model_dir)
        import torch

        stored_mib = sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) / 2**20
        from weighted_mtp.model_io.loading import read_model_args

        args = read_model_args(model_dir)
        with torch.device("meta"):
            from weighted_mtp.models import MTPTransformer

            n_params = sum(p.numel() for p in MTPTransformer(args).parameters())
        print(
            f"model: dim {args.dim}, {args.n_layers} layers ({args.n_future_tokens} heads), "
            f"vocab {args.vocab_size}: {n_params / 1e6:.1f} M parameters, "
            f"{n_params * 4 / 2**20:.0f} MiB as float32 master weights, "
            f"{stored_mib:.0f} MiB stored as {opts.stored_dtype}"
        )
        print(f"{opts.nproc} processes, {opts.strategy}, gloo on CPU\n")
        results = {way: _run(way, model_dir, opts) for way in WAYS}

    checks = {way: r[0]["checksum"] for way, r in results.items()}
    if checks["sharded"] != checks["full-load"]:
        raise SystemExit(f"the two ways hold different weights: {checks}")
    print(
        f"{'way':10} {'rank':>4} {'peak MiB':>9} {'baseline MiB':>13} {'after MiB':>10} "
        f"{'params MiB':>11} {'seconds':>8}"
    )
    totals = {}
    for way, ranks in results.items():
        for r in ranks:
            print(
                f"{way:10} {r['rank']:>4} {r['peak_mib']:>9.0f} {r['baseline_mib']:>13.0f} "
                f"{r['loaded_mib']:>10.0f} {r['shard_mib']:>11.0f} {r['seconds']:>8.1f}"
            )
        totals[way] = sum(r["peak_mib"] for r in ranks)
        base = sum(r["baseline_mib"] for r in ranks)
        print(
            f"{way:10} {'sum':>4} {totals[way]:>9.0f} {base:>13.0f}   "
            f"(above baseline: {totals[way] - base:.0f} MiB)"
        )
    print(f"\nweights checksum equal in both ways: {checks['sharded']}")
    print(
        f"peak host RSS summed over {opts.nproc} ranks: sharded {totals['sharded']:.0f} MiB, "
        f"full-load {totals['full-load']:.0f} MiB, "
        f"ratio {totals['sharded'] / totals['full-load']:.2f}x"
    )


if __name__ == "__main__":
    main()
