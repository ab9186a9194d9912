"""Benchmark: reading a stage-1 sample by byte offset vs. scanning the file, locally and on S3.

    python benchmarks/sampling.py --rows 1000000 --s3-rows 250000

Writes a ``--rows``-line CodeContests-shaped JSONL (about 1.2 KB a line) and its metadata
table, draws a balanced sample as sparse as the real stage-1 one (1.35%), and reads it in fresh
child processes with *ours* (``read_records`` at the sampled byte offsets), *stream* (one pass,
``json.loads`` of the sampled lines only: the headline baseline) and *pandas*
(``read_json(lines=True)`` + the sample's rows; ``--no-pandas`` skips it). Then the same on an S3
endpoint started on 127.0.0.1 (moto_server, patched so that a ranged GET reads only its range),
at the default gap and each ``--s3-gaps`` value, and for one ``--s3-batch``-row micro-batch,
counting GETs and bytes. Every side runs ``--repeats`` times interleaved; medians are reported,
every path must return the same records (sha256). Last line:
``ratio stream/ours: local time X, peak_rss Y; s3 sample time Z, bytes W; s3 batch ...``.
What each step does, and the results: ``docs/benchmarks/sampling.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common  # noqa: E402

GENERATOR_VERSION = 1
CHUNK_ROWS = 50_000
#: The real stage-1 sample: 50,000 rows of the 3.7M-row CodeContests training JSONL.
REAL_SAMPLE_FRACTION = 50_000 / 3_700_000
BUCKET = "wmtp-sampling-bench"


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
# The measured paths (each runs in a fresh child process)
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
        return bench_common.hwm_mib()
    except OSError:
        return float("nan")


class _GetCounter:
    """Counts ``GetObject`` responses and their body bytes on a botocore/aiobotocore client."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    def __call__(self, parsed: dict, **_: object) -> None:
        self.requests += 1
        self.bytes += int(parsed.get("ContentLength") or 0)

    def reset(self) -> None:
        self.requests = self.bytes = 0


def _scan_lines(lines, rows):  # noqa: ANN001, ANN202 - an iterable of bytes lines, np rows
    """The streaming scan: parse only the sampled line numbers, stop after the last one."""
    wanted = set(rows.tolist())
    last = max(wanted)
    found: dict[int, dict] = {}
    for i, line in enumerate(lines):
        if i in wanted:
            found[i] = json.loads(line)
            if i == last:
                break
    return [found[r] for r in rows.tolist()]


def _body_lines(body, counter: _GetCounter, chunk_size: int = 1 << 20):  # noqa: ANN001, ANN202
    """Lines of an HTTP body (botocore StreamingBody) as it arrives: C-level splits of 1 MiB
    chunks. ``counter.bytes`` becomes what was read, which is less than the object when the
    scan stops early."""
    pending = b""
    counter.bytes = 0
    for chunk in body.iter_chunks(chunk_size):
        counter.bytes += len(chunk)
        parts = (pending + chunk).split(b"\n")
        pending = parts.pop()
        yield from parts
    if pending:
        yield pending


def child(args: argparse.Namespace) -> None:
    """One measured path; prints a JSON line with timings, peak RSS, counters and a digest."""
    which = args.child
    t0 = time.perf_counter()
    import pandas as pd

    from weighted_mtp.data.offset_reader import read_records
    from weighted_mtp.data.sampling import sample_balanced

    counter = _GetCounter()
    options: dict = {}
    if which.startswith("s3-"):
        import boto3
        import fsspec
        from fsspec.asyn import sync

        options = {"client_kwargs": {"endpoint_url": args.endpoint}}
        fs = fsspec.filesystem("s3", **options)  # the instance read_records will get
        sync(fs.loop, fs.set_session)
        fs.s3.meta.events.register("after-call.s3.GetObject", counter)
        client = boto3.client("s3", endpoint_url=args.endpoint)
        client.meta.events.register("after-call.s3.GetObject", counter)
    t_import = time.perf_counter() - t0

    # Both the offset reader and the scan parse with the cyclic GC paused (the reader does so
    # itself), so the comparison is of reading strategies, not of GC settings.
    t1 = time.perf_counter()
    gc_bytes = 0
    if which in ("ours", "s3-ours"):
        meta = pd.read_parquet(
            args.metadata,
            columns=["row", "offset", "length", "is_correct"],
            storage_options=options or None,
        )
        rows = sample_balanced(meta, args.sample, seed=args.seed)
        gc_bytes = counter.bytes
        counter.reset()
        gap = None if args.gap < 0 else args.gap
        records = read_records(
            args.jsonl, meta, rows, max_gap_bytes=gap, storage_options=options or None
        )
    elif which in ("stream", "s3-stream"):
        meta = pd.read_parquet(
            args.metadata, columns=["row", "is_correct"], storage_options=options or None
        )
        rows = sample_balanced(meta, args.sample, seed=args.seed)
        gc_bytes = counter.bytes
        counter.reset()
        gc.disable()
        if which == "stream":
            with open(args.jsonl, "rb") as f:
                records = _scan_lines(f, rows)
        else:
            bucket, key = args.jsonl.removeprefix("s3://").split("/", 1)
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            records = _scan_lines(_body_lines(body, counter), rows)
            body.close()  # the scan stops after the last sampled line
        gc.enable()
    else:
        df = pd.read_json(args.jsonl, lines=True)
        meta = pd.read_parquet(args.metadata, columns=["row", "is_correct"])
        rows = sample_balanced(meta, args.sample, seed=args.seed)
        # Row numbers are line numbers, so they index the parsed frame by position.
        records = df.iloc[rows].to_dict(orient="records")
    t_work = time.perf_counter() - t1

    report = {
        "which": which,
        "import_s": t_import,
        "work_s": t_work,
        "n_records": len(records),
        "hwm_mb": _peak_rss_mb_self(),
        "digest": _digest(records),
        "requests": counter.requests,
        "bytes": counter.bytes,
        "metadata_bytes": gc_bytes,
    }
    print(json.dumps(report))


def run_child(which: str, jsonl: str, metadata: str, sample: int, seed: int, **extra) -> dict:  # noqa: ANN003
    """Start a fresh interpreter for one path; return its report plus its own peak RSS (MiB)
    and, with ``server_pid``, the CPU seconds that process spent meanwhile."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, __file__, "--child", which, "--jsonl", jsonl, "--metadata", metadata,
           "--sample", str(sample), "--seed", str(seed)]  # fmt: skip
    if "endpoint" in extra:
        cmd += ["--endpoint", extra["endpoint"]]
    if extra.get("gap") is not None:
        cmd += ["--gap", str(extra["gap"])]
    server_pid = extra.get("server_pid")
    cpu0 = bench_common.cpu_seconds(server_pid) if server_pid else 0.0
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
    report["client_cpu_s"] = usage.ru_utime + usage.ru_stime
    report["server_cpu_s"] = bench_common.cpu_seconds(server_pid) - cpu0 if server_pid else 0.0
    report["gap"] = extra.get("gap")
    # The child's own VmHWM counts from its exec. ru_maxrss of a forked child also counts the
    # parent's pages it shared before exec (the parent holds the generated data), so it serves
    # only where /proc is missing.
    hwm = report["hwm_mb"]
    report["peak_rss_mb"] = usage.ru_maxrss / 1024 if math.isnan(hwm) else hwm
    return report


# --------------------------------------------------------------------------------------------
# The S3 endpoint: moto_server on 127.0.0.1, ranged GETs reading only their range
# --------------------------------------------------------------------------------------------


def serve_s3(port: int) -> None:
    """Run moto_server on 127.0.0.1:``port`` with ranged GETs served from their range only.

    moto answers a GET by reading the whole object (``FakeKey.value``) and slicing the
    requested range out of it, so each ranged GET of a 300 MB object costs a 300 MB read: no
    S3 service does that, and it would bury the cost of the reads being measured. Within a GET,
    ``value`` here is a view that reads only what is sliced (or streams the object in 1 MiB
    pieces for a full GET); everything else (routing, signing checks, headers) is moto's.
    """
    import threading

    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response
    from moto.server import main as moto_main

    state = threading.local()

    class RangeView:
        def __init__(self, key: FakeKey) -> None:
            self._key = key
            self._size = key.size

        def __len__(self) -> int:
            return self._size

        def __getitem__(self, item: slice) -> bytes:
            start, stop, _ = item.indices(self._size)
            with self._key.lock:
                self._key._value_buffer.seek(start)
                return self._key._value_buffer.read(max(stop - start, 0))

        def __iter__(self):  # noqa: ANN204 - the body of a full GET, as Flask streams it
            for pos in range(0, self._size, 1 << 20):
                yield self[pos : pos + (1 << 20)]

    whole_value = FakeKey.value

    def value(key: FakeKey):  # noqa: ANN202
        return RangeView(key) if getattr(state, "in_get", False) else whole_value.fget(key)

    original_get = S3Response.get_object

    def get_object(self):  # noqa: ANN001, ANN202
        state.in_get = True
        try:
            return original_get(self)
        finally:
            state.in_get = False

    FakeKey.value = property(value, whole_value.fset)
    S3Response.get_object = get_object
    moto_main(["-H", "127.0.0.1", "-p", str(port)])


@contextlib.contextmanager
def s3_endpoint(log: Path):  # noqa: ANN201
    """Start the patched moto_server on a free 127.0.0.1 port; yield (url, pid); stop it."""
    port = bench_common.free_port()
    proc = bench_common.start_server([sys.executable, __file__, "--serve-s3", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    try:
        bench_common.wait_until_answers(url + "/moto-api/", proc, "moto_server", log)
        yield url, proc.pid
    finally:
        bench_common.stop_process_group(proc)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _ensure_data(workdir: Path, name: str, rows: int, seed: int) -> tuple[Path, Path, bool]:
    """Generate (or reuse, when the manifest matches) ``rows`` lines; returns (jsonl, metadata,
    whether this run created them)."""
    jsonl, metadata = workdir / f"{name}.jsonl", workdir / f"{name}.metadata.parquet"
    manifest = workdir / f"{name}.manifest.json"
    wanted = {"rows": rows, "seed": seed, "version": GENERATOR_VERSION}
    if (
        manifest.exists()
        and jsonl.exists()
        and metadata.exists()
        and json.loads(manifest.read_text()) == wanted
    ):
        print(f"reusing {jsonl}")
        return jsonl, metadata, False
    t0 = time.perf_counter()
    generate(jsonl, metadata, rows, seed)
    manifest.write_text(json.dumps(wanted))
    size = jsonl.stat().st_size / 2**20
    print(f"generated {rows} rows, {size:.0f} MiB in {time.perf_counter() - t0:.1f} s")
    return jsonl, metadata, True


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _gap_label(gap: int | None) -> str:
    if gap is None:
        return "default gap"
    return f"gap {gap // 1024} KiB" if gap >= 1024 and gap % 1024 == 0 else f"gap {gap} B"


def _check_same(reports: list[dict], n_sample: int) -> None:
    digests = {r["digest"] for r in reports}
    if len(digests) != 1 or any(r["n_records"] != n_sample for r in reports):
        detail = ", ".join(f"{r['which']}: {r['n_records']} {r['digest'][:12]}" for r in reports)
        raise SystemExit(f"MISMATCH: the paths returned different records ({detail})")
    print(f"same records: {n_sample} (sha256 {reports[0]['digest'][:16]})")


def _warm_page_cache(path: Path) -> None:
    """Read the file once so that every local side finds it in the page cache: pandas' 13 GiB
    can evict it, and a side that then reads it from disk would measure the disk."""
    with open(path, "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass


def _median_runs(runs: list[dict]) -> dict:
    """The run with the median work time (the lower middle one for an even count), with every
    run's work time kept in ``work_s_all``."""
    runs = sorted(runs, key=lambda r: r["work_s"])
    report = dict(runs[(len(runs) - 1) // 2])
    report["work_s_all"] = [r["work_s"] for r in runs]
    return report


def _rounds(sides: dict[str, Callable[[], dict]], repeats: int, once: set[str]) -> dict[str, dict]:
    """Run every side once per round, ``repeats`` rounds (sides in ``once``: the first round
    only), so that changing load from other processes hits all sides alike; median per side."""
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for round_ in range(repeats):
        for name, run in sides.items():
            if round_ == 0 or name not in once:
                runs[name].append(run())
    return {name: _median_runs(r) for name, r in runs.items()}


def run_local(args: argparse.Namespace, workdir: Path, created: list[Path]) -> dict[str, dict]:
    jsonl, metadata, new = _ensure_data(workdir, "train", args.rows, args.seed)
    if new:
        created += [jsonl, metadata, workdir / "train.manifest.json"]
    n = args.sample or max(2, round(args.rows * REAL_SAMPLE_FRACTION))
    print(
        f"local file: {args.rows} rows, {_mib(jsonl.stat().st_size)}; sample {n} rows "
        f"({100 * n / args.rows:.2f}%)"
    )
    names = ["ours", "stream"] + ([] if args.no_pandas else ["pandas"])

    def side(name: str) -> dict:
        _warm_page_cache(jsonl)
        return run_child(name, str(jsonl), str(metadata), n, args.seed)

    sides = {name: (lambda name=name: side(name)) for name in names}
    # pandas takes minutes and 13 GiB: once is enough to see where it stands.
    reports = _rounds(sides, args.repeats, once={"pandas"})
    for r in reports.values():
        runs = "/".join(f"{t:.2f}" for t in r["work_s_all"])
        print(
            f"  local {r['which']:>6}: {r['work_s']:7.3f} s (runs {runs} s; imports "
            f"{r['import_s']:.2f} s), peak RSS {r['peak_rss_mb']:6.0f} MiB"
        )
    _check_same(list(reports.values()), n)
    return reports


def run_s3(args: argparse.Namespace, workdir: Path, created: list[Path]) -> dict[str, list[dict]]:
    """The S3 sides: the sample at each gap, then one micro-batch; returns both lists of
    reports, each starting with the streaming scan."""
    import fsspec

    jsonl, metadata, new = _ensure_data(workdir, "s3", args.s3_rows, args.seed + 1)
    if new:
        created += [jsonl, metadata, workdir / "s3.manifest.json"]
    n = max(2, round(args.s3_rows * REAL_SAMPLE_FRACTION))
    gaps: list[int | None] = [None] + [int(g) for g in args.s3_gaps.split(",") if g.strip()]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "testing")  # moto accepts any; never look for real ones
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    out: dict[str, list[dict]] = {}
    with s3_endpoint(workdir / "moto.log") as (endpoint, pid):
        fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": endpoint})
        fs.mkdir(BUCKET)
        url, meta_url = f"s3://{BUCKET}/train.jsonl", f"s3://{BUCKET}/train.metadata.parquet"
        t0 = time.perf_counter()
        fs.put(str(jsonl), url)
        fs.put(str(metadata), meta_url)
        print(
            f"s3 object: {args.s3_rows} rows, {_mib(fs.size(url))} on moto_server at {endpoint} "
            f"(uploaded in {time.perf_counter() - t0:.1f} s)"
        )

        def side(which: str, n_rows: int, gap: int | None = None) -> dict:
            report = run_child(which, url, meta_url, n_rows, args.seed, endpoint=endpoint,
                               server_pid=pid, gap=-1 if gap is None else gap)  # fmt: skip
            report["gap"] = gap
            report["label"] = "stream" if which == "s3-stream" else f"ours, {_gap_label(gap)}"
            return report

        scenarios = [("sample", n, gaps)]
        if args.s3_batch:
            # What the training loop reads per step: one micro-batch of the plan.
            scenarios.append(("batch", args.s3_batch, [None]))
        for name, n_rows, scenario_gaps in scenarios:
            what = "stage-1 sample" if name == "sample" else "one micro-batch"
            print(f"  s3 {what}: {n_rows} rows ({100 * n_rows / args.s3_rows:.3f}%)")
            sides = {"stream": lambda n_rows=n_rows: side("s3-stream", n_rows)}
            for gap in scenario_gaps:
                sides[_gap_label(gap)] = lambda n_rows=n_rows, gap=gap: side("s3-ours", n_rows, gap)
            reports = list(_rounds(sides, args.repeats, once=set()).values())
            for r in reports:
                runs = "/".join(f"{t:.2f}" for t in r["work_s_all"])
                print(
                    f"  s3 {r['label']:>22}: {r['work_s']:7.3f} s (runs {runs}), "
                    f"{r['requests']:5d} GETs, "
                    f"{_mib(r['bytes']):>11} of JSONL (+ {_mib(r['metadata_bytes'])} "
                    f"metadata), moto_server CPU {r['server_cpu_s']:.2f} s, client CPU "
                    f"{r['client_cpu_s']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MiB"
                )
            _check_same(reports, n_rows)
            out[name] = reports
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="lines in the local JSONL")
    parser.add_argument(
        "--sample", type=int, default=0, help="local sample rows (default: 1.35%% of --rows)"
    )
    parser.add_argument(
        "--s3-rows", type=int, default=250_000, help="lines in the S3 object (0: skip S3)"
    )
    parser.add_argument(
        "--s3-gaps",
        default="0,65536,262144",
        help="comma-separated max_gap_bytes values to measure on S3 besides the default",
    )
    parser.add_argument(
        "--s3-batch",
        type=int,
        default=32,
        help="rows of the S3 micro-batch scenario (a training step's read; 0: skip)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of every side (pandas: one); median"
    )
    parser.add_argument("--no-pandas", action="store_true", help="skip pandas.read_json")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the data goes (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--jsonl", help=argparse.SUPPRESS)
    parser.add_argument("--metadata", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--gap", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--serve-s3", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve_s3:
        serve_s3(args.serve_s3)
        return
    if args.child:
        child(args)
        return
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.rows < 100 or (args.s3_rows and args.s3_rows < 100):
        parser.error(f"--rows and --s3-rows must be at least 100, got {args.rows}, {args.s3_rows}")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wmtp-sampling-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    try:
        local = run_local(args, workdir, created)
        s3 = run_s3(args, workdir, created) if args.s3_rows else {}
        ours = local["ours"]
        for name in ("stream", "pandas"):
            if name in local:
                other = local[name]
                print(
                    f"ratio {name}/ours, local: time {other['work_s'] / ours['work_s']:.1f}, "
                    f"peak_rss {other['peak_rss_mb'] / ours['peak_rss_mb']:.1f}"
                )
        headline = (
            f"ratio stream/ours: local time {local['stream']['work_s'] / ours['work_s']:.1f}, "
            f"peak_rss {local['stream']['peak_rss_mb'] / ours['peak_rss_mb']:.1f}"
        )
        for name, reports in s3.items():
            stream = reports[0]
            for r in reports[1:]:
                print(
                    f"ratio stream/{r['label']}, s3 {name}: time "
                    f"{stream['work_s'] / r['work_s']:.2f}, bytes {stream['bytes'] / r['bytes']:.1f}"
                )
            default = reports[1]
            headline += (
                f"; s3 {name} time {stream['work_s'] / default['work_s']:.2f}, "
                f"bytes {stream['bytes'] / default['bytes']:.1f}"
            )
        print(headline)
    finally:
        if not args.keep:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                for p in created:
                    p.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
