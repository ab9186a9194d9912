"""Host reads of device values per training step, and collectives handed host copies: this
tree against another source tree (today's code before a change), in one run.

Runs the real worker and loop (2 gloo processes, torchrun, the micro corpus of the tests)
under ``tests/training/collective_check_worker.py`` in counting mode. On a GPU each counted
read (``.item()``, ``.tolist()``, ``.cpu()``, ``bool()``/``float()``/``int()`` of a tensor on
the training device) is a host-device synchronisation that stalls the CPU until the device
has drained its queue; each collective handed a ``.cpu()`` copy fails under NCCL alone and
costs a device-to-host round trip under a device-mapped group. The CPU cannot time either,
so this counts them (see the worker's docstring for the rules).

Windows run from one optimizer step to the next: a *quiet* window holds the end of a step
that neither logs, validates nor saves and the forward/backward of the next one, i.e. the
steady state between logs; a *sync* window holds a logged step's metric reads.

    git archive HEAD src | tar -x -C /tmp/head     # or any copy of an older src/
    .venv/bin/python benchmarks/host_syncs.py --other-src /tmp/head/src
    .venv/bin/python benchmarks/host_syncs.py --methods baseline rho1 --strategy fsdp
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(corpus, run_dir: Path, src: Path, method: str, args) -> dict:
    from weighted_mtp.training.config import PARAMS_BY_METHOD, RuntimeParams
    from weighted_mtp.training.data_plan import build_data_plan
    from weighted_mtp.training.launcher import TrainingJobError, launch
    from weighted_mtp.training.spec import JobSpec

    params = PARAMS_BY_METHOD[method](
        max_steps=args.steps,
        batch_size=2,
        grad_accum_steps=args.accum,
        lr=2e-3,
        warmup_steps=1,
        log_every=args.log_every,
        eval_every=args.steps,
        val_samples=4,
        max_seq_len=256,
        chunk_size=100,
    )
    spec = JobSpec(
        method=method,
        run_dir=str(run_dir),
        params=params.model_dump(),
        runtime=RuntimeParams(nproc_per_node=2, strategy=args.strategy, omp_threads=1),
        init_model=str(corpus.model_dir),
        reference_model=str(corpus.reference_dir),
        train_jsonl=str(corpus.train_jsonl),
        valid_jsonl=str(corpus.valid_jsonl),
    )
    run_dir.mkdir(parents=True)
    build_data_plan(
        method, params, corpus.train_metadata, corpus.valid_metadata, world_size=2
    ).save(spec.plan_path)
    env = {
        "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)]),
        "WMTP_COLLECTIVE_CHECK": "count",
    }
    error = None
    try:
        launch(
            spec,
            worker_module="tests.training.collective_check_worker",
            extra_env=env,
            show_progress=False,
        )
    except TrainingJobError as exc:
        error = " | ".join(line.strip() for line in str(exc).splitlines() if "Error" in line)
    path = run_dir / "collective_report_rank0.json"
    if not path.exists():  # rank 0 was stopped before writing it
        return {"reads": {}, "violations": {}, "error": error or "no report"}
    report = json.loads(path.read_text())
    report["error"] = error
    return report


def _summary(report: dict, steps: int, log_every: int) -> dict:
    sync = {s for s in range(steps) if s == 0 or (s + 1) % log_every == 0 or s + 1 == steps}
    per_window = {int(k): sum(v.values()) for k, v in report["reads"].items()}
    quiet = [per_window.get(w, 0) for w in range(steps) if w not in sync]
    loud = [per_window.get(w, 0) for w in sorted(sync)]
    where: Counter = Counter()
    for w in range(steps):
        if w not in sync:
            where.update(report["reads"].get(str(w), {}))
    return {
        "quiet": statistics.mean(quiet) if quiet else 0.0,
        "sync": statistics.mean(loud) if loud else 0.0,
        "violations": sum(report["violations"].values()),
        "where": where.most_common(4),
        "error": report["error"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other-src", type=Path, help="the src/ folder to compare against")
    parser.add_argument("--methods", nargs="+", default=["baseline", "verifiable", "rho1"])
    parser.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--log-every", type=int, default=3)
    parser.add_argument("--accum", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the runs (torchrun logs) here")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.training.corpus import build_corpus

    trees = {"this tree": ROOT / "src"}
    if args.other_src:
        trees["other"] = args.other_src.resolve()
    keep = contextlib.nullcontext(tempfile.mkdtemp(dir=args.keep)) if args.keep else None
    with keep or tempfile.TemporaryDirectory() as tmp:
        corpus = build_corpus(Path(tmp) / "corpus")
        rows = []
        for method in args.methods:
            for label, src in trees.items():
                report = _run(
                    corpus, Path(tmp) / f"{label}-{method}".replace(" ", "_"), src, method, args
                )
                rows.append((method, label, _summary(report, args.steps, args.log_every)))
    print(
        f"\n2 ranks, {args.strategy}, {args.steps} steps x {args.accum} micro-batches, "
        f"log_every={args.log_every} (rank 0)"
    )
    print(
        f"{'method':<11}{'tree':<11}{'reads/quiet step':>17}{'reads/sync step':>16}"
        f"{'host copies to collectives':>28}"
    )
    for method, label, s in rows:
        print(f"{method:<11}{label:<11}{s['quiet']:>17.1f}{s['sync']:>16.1f}{s['violations']:>28}")
    print("\nreads in quiet windows, by place (4 most frequent):")
    for method, label, s in rows:
        print(
            f"  {method} / {label}: {s['where'] or 'none'}"
            + (f"  [run failed: {s['error']}]" if s["error"] else "")
        )


if __name__ == "__main__":
    main()
