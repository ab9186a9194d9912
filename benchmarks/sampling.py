"""Benchmark: a stage-1 sample read by byte offset vs. the naive full parse with pandas.

    python benchmarks/sampling.py --rows 1000000 --sample 50000

1. Writes a ``--rows``-line training JSONL (about 1 KB a line, shaped like converted
   CodeContests records, multi-byte UTF-8 included) and its metadata table (Parquet), the table
   built while writing. Token counts in this synthetic table are byte-length estimates.
2. Runs each path in its own fresh subprocess, so that each peak RSS is that path's own
   (the child's ``VmHWM`` from ``/proc/self/status``, which starts at its exec):
   - ours: read the metadata columns sampling needs, ``sample_balanced``, ``read_records``;
   - naive: ``pandas.read_json(path, lines=True)``, then the same sample's rows.
   The timed section starts after imports (both paths import pandas; the import times are
   printed apart) and ends with the list of record dicts.
3. Checks that both paths return the same records (a digest of their canonical JSON), prints
   time and peak RSS of each and, as its last line,
   ``ratio naive/ours: time X.X, peak_rss Y.Y``.

The JSONL was just written, so both paths read it from the page cache: the comparison is of
parsing and memory, not of the disk. Results: ``docs/benchmarks/sampling.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GENERATOR_VERSION = 1
CHUNK_ROWS = 50_000


# --------------------------------------------------------------------------------------------
# Data generation (parent process only)
# --------------------------------------------------------------------------------------------

_NOUNS = ["array", "string", "graph", "tree", "grid", "sequence", "permutation", "matrix",
          "segment", "query", "coin", "robot", "city", "road", "team", "card"]  # fmt: skip
_VERBS = ["sort", "count", "find", "maximise", "minimise", "split", "merge", "reverse",
          "colour", "remove", "insert", "visit"]  # fmt: skip
_NAMES = ["Alice", "Bob", "Vasya", "Petya", "Monocarp", "Polycarp", "Ильдар", "Jürgen", "Zoë"]
_SYMBOLS = ["≤", "≥", "×", "—", "’", "…", "·"]


def _problem_text(rng) -> str:  # noqa: ANN001 - numpy Generator; numpy is imported lazily
    """A CodeContests-like statement, about 650 bytes, with some non-ASCII characters."""
    name = _NAMES[rng.integers(len(_NAMES))]
    noun, noun2 = (_NOUNS[i] for i in rng.integers(len(_NOUNS), size=2))
    verb = _VERBS[rng.integers(len(_VERBS))]
    le, times, dash = _SYMBOLS[0], _SYMBOLS[2], _SYMBOLS[3]
    n_max = 10 ** int(rng.integers(3, 10))
    return (
        f"{name} has a {noun} of n integers a_1, a_2, {_SYMBOLS[5]}, a_n. In one operation "
        f"{name} may {verb} any {noun2} of the {noun} {dash} but only if its length is even. "
        f"Find the minimum number of operations needed so that every element becomes equal, "
        f"or report that it is impossible.\n\nInput\n\nThe first line contains a single integer "
        f"t (1 {le} t {le} {int(rng.integers(100, 10_000))}) {dash} the number of test cases. "
        f"The first line of each test case contains n (1 {le} n {le} {n_max}). The second line "
        f"contains n integers a_i (1 {le} a_i {le} {int(rng.integers(2, 10**9))}), their sum "
        f"at most 2 {times} 10^5 over all test cases.\n\n"
        f"Output\n\nFor each test case print one integer {dash} the answer, or -1.\n\n"
        f"Example\n\nInput\n\n2\n3\n{' '.join(str(int(x)) for x in rng.integers(1, 99, 3))}\n"
        f"4\n{' '.join(str(int(x)) for x in rng.integers(1, 99, 4))}\n\nOutput\n\n"
        f"{int(rng.integers(0, 9))}\n-1\n"
    )


def _program_text(rng) -> str:  # noqa: ANN001
    """A Python 3 stdin/stdout solution, about 250-450 bytes."""
    v = ["xs", "arr", "vals", "a"][rng.integers(4)]
    acc = ["ans", "best", "total", "res"][rng.integers(4)]
    op = ["+", "-", "^", "|"][rng.integers(4)]
    lines = [
        "import sys",
        "input = sys.stdin.readline",
        "",
        "def solve():",
        "    n = int(input())",
        f"    {v} = list(map(int, input().split()))",
        f"    {acc} = 0",
        "    for i in range(1, n):",
        f"        if {v}[i] < {v}[i - 1]:",
        f"            {acc} = {acc} {op} ({v}[i - 1] - {v}[i])",
    ]
    if rng.random() < 0.5:
        lines += [f"    {v}.sort()", f"    {acc} += {v}[-1] - {v}[0]  # {int(rng.integers(99))}"]
    lines += [f"    print({acc} if {acc} >= 0 else -1)", "", "t = int(input())",
              "for _ in range(t):", "    solve()", ""]  # fmt: skip
    return "\n".join(lines)


def generate(jsonl: Path, metadata: Path, n_rows: int, seed: int) -> None:
    """Write ``n_rows`` JSONL lines and their metadata table.

    Lines are assembled from pre-serialised JSON fragments, so every line's byte length is a
    sum of known lengths: offsets come from a cumulative sum, not from re-encoding each line.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    problems = [_problem_text(rng) for _ in range(3000)]
    programs = [_program_text(rng) for _ in range(5000)]
    p_json = [json.dumps(t, ensure_ascii=False) for t in problems]
    o_json = [json.dumps(t, ensure_ascii=False) for t in programs]
    p_bytes = np.array([len(s.encode()) for s in p_json], dtype=np.int64)
    o_bytes = np.array([len(s.encode()) for s in o_json], dtype=np.int64)
    # Prompt/output token estimates: ~3.5 bytes a token plus the Alpaca template (~40 tokens).
    p_tokens = np.array([len(t.encode()) for t in problems], dtype=np.int64) * 2 // 7 + 40
    o_tokens = np.array([len(t.encode()) for t in programs], dtype=np.int64) * 2 // 7 + 1

    head = '{"instruction": '
    mid = ', "input": "", "output": '
    tid_key = ', "task_id": "'
    cor_key = '", "is_correct": '
    meta_key = ', "metadata": {"source": "codeforces", "difficulty": '
    tail = ', "has_tests": true}}'
    fixed = len(head) + len(mid) + len(tid_key) + len(cor_key) + len(meta_key) + len(tail)
    letters = "ABCDEFGHIJKLMNOPQRSTUV"

    # Solutions come in groups per problem, as in CodeContests (tens of solutions a task).
    task = np.arange(n_rows, dtype=np.int64) // 20
    n_tasks = int(task[-1]) + 1 if n_rows else 0
    task_problem = rng.integers(0, len(problems), n_tasks)
    task_difficulty = rng.integers(7, 7 + len(letters), n_tasks)
    problem = task_problem[task]
    difficulty = task_difficulty[task]
    program = rng.integers(0, len(programs), n_rows)
    is_correct = rng.random(n_rows) < 0.4
    task_ids = [
        f"codecontests/{t}_{letters[d - 7]}"
        for t, d in zip(task.tolist(), difficulty.tolist(), strict=True)
    ]
    tid_bytes = np.array([len(s) for s in task_ids], dtype=np.int64)
    diff_bytes = np.where(difficulty >= 10, 2, 1)
    length = (
        fixed
        + p_bytes[problem]
        + o_bytes[program]
        + tid_bytes
        + np.where(is_correct, 4, 5)
        + diff_bytes
    )
    offset = np.concatenate([[0], np.cumsum(length + 1)[:-1]]).astype(np.int64)

    with open(jsonl, "wb", buffering=1 << 22) as f:
        for start in range(0, n_rows, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, n_rows)
            lines = [
                f"{head}{p_json[p]}{mid}{o_json[o]}{tid_key}{t}{cor_key}"
                f"{'true' if c else 'false'}{meta_key}{d}{tail}\n"
                for p, o, t, c, d in zip(
                    problem[start:stop].tolist(),
                    program[start:stop].tolist(),
                    task_ids[start:stop],
                    is_correct[start:stop].tolist(),
                    difficulty[start:stop].tolist(),
                    strict=True,
                )
            ]
            f.write("".join(lines).encode())
    expected = int(offset[-1] + length[-1] + 1) if n_rows else 0
    if jsonl.stat().st_size != expected:
        raise RuntimeError(f"{jsonl}: wrote {jsonl.stat().st_size} bytes, metadata says {expected}")

    table = pa.table(
        {
            "row": np.arange(n_rows, dtype=np.int64),
            "offset": offset,
            "length": length.astype(np.int64),
            "is_correct": is_correct,
            "difficulty": difficulty.astype(np.int64),
            "task_id": pa.array(task_ids, type=pa.string()),
            "n_prompt_tokens": p_tokens[problem],
            "n_output_tokens": o_tokens[program],
        }
    )
    pq.write_table(table, metadata)


# --------------------------------------------------------------------------------------------
# The two measured paths (each runs in a fresh child process)
# --------------------------------------------------------------------------------------------


def _digest(records: list[dict]) -> str:
    """sha256 of the records' canonical JSON, record by record: one big string would add
    its own hundreds of MB to the peak RSS being measured."""
    digest = hashlib.sha256()
    for record in records:
        text = json.dumps(record, sort_keys=True, ensure_ascii=False, default=_native)
        digest.update(text.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _native(value):  # noqa: ANN001, ANN202 - numpy scalars that pandas may leave in a dict
    return value.item()


def _peak_rss_mb_self() -> float:
    """This process's peak RSS in MiB (Linux VmHWM), NaN where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def child(which: str, jsonl: str, metadata: str, n_sample: int, seed: int) -> None:
    """One measured path; prints a JSON line with timings, peak RSS and the records' digest."""
    t0 = time.perf_counter()
    import pandas as pd

    from weighted_mtp.data.sampling import sample_balanced

    if which == "ours":
        from weighted_mtp.data.offset_reader import read_records
    t_import = time.perf_counter() - t0

    t1 = time.perf_counter()
    if which == "ours":
        # Sampling needs only these columns; the reader only row/offset/length.
        meta = pd.read_parquet(metadata, columns=["row", "offset", "length", "is_correct"])
        rows = sample_balanced(meta, n_sample, seed=seed)
        records = read_records(jsonl, meta, rows)
    else:
        df = pd.read_json(jsonl, lines=True)
        meta = pd.read_parquet(metadata, columns=["row", "is_correct"])
        rows = sample_balanced(meta, n_sample, seed=seed)
        # Row numbers are line numbers, so they index the parsed frame by position.
        records = df.iloc[rows].to_dict(orient="records")
    t_work = time.perf_counter() - t1

    print(
        json.dumps(
            {
                "which": which,
                "import_s": t_import,
                "work_s": t_work,
                "n_records": len(records),
                "hwm_mb": _peak_rss_mb_self(),
                "digest": _digest(records),
            }
        )
    )


def run_child(which: str, jsonl: Path, metadata: Path, n_sample: int, seed: int) -> dict:
    """Start a fresh interpreter for one path; return its report plus its own peak RSS (MiB)."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, __file__, "--child", which, "--jsonl", str(jsonl),
           "--metadata", str(metadata), "--sample", str(n_sample), "--seed", str(seed)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read() if proc.stdout else b""
    # wait4 reaps the child and returns its own resource usage (ru_maxrss in KiB on Linux).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{which} child failed with exit code {proc.returncode}")
    report = json.loads(out.decode().strip().splitlines()[-1])
    report["process_wall_s"] = wall
    # The child's own VmHWM counts from its exec. ru_maxrss of a forked child also counts the
    # parent's pages it shared before exec (the parent holds the generated data), so it serves
    # only where /proc is missing.
    hwm = report["hwm_mb"]
    report["peak_rss_mb"] = usage.ru_maxrss / 1024 if math.isnan(hwm) else hwm
    return report


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="lines in the JSONL")
    parser.add_argument("--sample", type=int, default=50_000, help="rows of the stage-1 sample")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the data goes (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--jsonl", help=argparse.SUPPRESS)
    parser.add_argument("--metadata", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        child(args.child, args.jsonl, args.metadata, args.sample, args.seed)
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wmtp-sampling-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    jsonl, metadata = workdir / "train.jsonl", workdir / "train.metadata.parquet"
    manifest = workdir / "manifest.json"
    wanted = {"rows": args.rows, "seed": args.seed, "version": GENERATOR_VERSION}
    created = False
    try:
        if (
            manifest.exists()
            and jsonl.exists()
            and metadata.exists()
            and json.loads(manifest.read_text()) == wanted
        ):
            print(f"reusing {jsonl}")
        else:
            t0 = time.perf_counter()
            generate(jsonl, metadata, args.rows, args.seed)
            manifest.write_text(json.dumps(wanted))
            created = True
            print(
                f"generated {args.rows} rows, {jsonl.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t0:.1f} s"
            )

        ours = run_child("ours", jsonl, metadata, args.sample, args.seed)
        naive = run_child("naive", jsonl, metadata, args.sample, args.seed)
        for r in (ours, naive):
            print(
                f"{r['which']:>5}: {r['work_s']:.3f} s (imports {r['import_s']:.2f} s, process "
                f"{r['process_wall_s']:.2f} s), peak RSS {r['peak_rss_mb']:.0f} MiB, "
                f"{r['n_records']} records"
            )
        if ours["digest"] != naive["digest"] or ours["n_records"] != args.sample:
            raise SystemExit("MISMATCH: the two paths returned different records")
        print(f"same records: {ours['n_records']} (sha256 {ours['digest'][:16]})")
        time_ratio = naive["work_s"] / ours["work_s"]
        rss_ratio = naive["peak_rss_mb"] / ours["peak_rss_mb"]
        print(f"ratio naive/ours: time {time_ratio:.1f}, peak_rss {rss_ratio:.1f}")
    finally:
        if created and not args.keep:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                for p in (jsonl, metadata, manifest):
                    p.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
