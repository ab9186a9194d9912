"""Data off the critical path: a training step whose micro-batches come from S3 with added
latency, against the same step reading a local file; with the background prefetch of
``weighted_mtp.training.batches`` (what ``training/loop.py`` does) and with synchronous reads
in the step (what the loop did before).

Set-up, all on 127.0.0.1, stopped at the end:

- data: synthetic CodeContests records (``weighted_mtp.data.synthetic``, the real converter and
  JSONL serialiser), a SentencePiece tokenizer trained on them, the metadata table; the plan
  holds rows that fit ``--max-len``, in a seeded random order;
- S3: ``moto_server`` (moto package) holding the same JSONL, reached through a TCP proxy (a
  child process of this script) that delays every chunk the client sends by ``--latency-ms``
  without limiting throughput (chunks are stamped on arrival and forwarded in order once due),
  so each request, HEAD or ranged GET, waits that much longer for its answer. The script first
  measures small ranged GETs direct and through the proxy, so the added latency is seen, not
  assumed. Each step reads its rows with ``read_lines_at`` on the ``s3://`` URL (s3fs): one HEAD
  (the object's size) and the coalesced ranged GETs;
- the step: the project's ``MTPTrainingModule`` (micro ``MTPTransformer``, baseline method)
  on ``--accum`` micro-batches of ``--batch`` sequences: the step's head counts, one forward and
  backward per micro-batch, clip, AdamW, zero_grad, as ``training/loop.py`` does. On a CPU the
  step competes for the cores with everything else here (the reading threads, moto_server, the
  proxy); ``--device-ms X`` replaces it by a stand-in for an accelerator step: the host touches
  the batch, then waits X ms holding neither the GIL nor a core, as a GPU step's host thread
  does while it waits for the device.

Modes: ``memory`` (batches collated beforehand: the compute alone), ``local``/``s3`` x
``sync`` (``BatchReader.read_step`` inside the step, as the loop did before) / ``prefetch``
(``start_prefetch``, ``PREFETCH_STEPS`` worker threads and steps ahead, as the loop does now).
A block runs one mode for ``--steps`` timed steps after one untimed step (that one also starts
the prefetch workers); a round runs every mode's block, in an order that rotates each round so
that load from other processes hits the modes alike; ``--rounds`` rounds. Reported per mode:
mean step time (all timed steps of all rounds: the throughput), median, the mean time the
step waited for its data, the CPU time of this process (all threads) and of moto_server + the
proxy per step. All modes see the same batches (checked against ``memory``).

The last line: ``ratio s3(+X ms)/local mean step: prefetch A, synchronous B``.

    .venv/bin/python benchmarks/data_prefetch.py                  # the micro model's step
    .venv/bin/python benchmarks/data_prefetch.py --device-ms 50   # a 50 ms accelerator step
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common  # noqa: E402

MODES = ("memory", "local sync", "local prefetch", "s3 sync", "s3 prefetch")


# --------------------------------------------------------------------------- latency proxy
def serve_proxy(port: int, upstream_port: int, delay_s: float) -> None:
    """Forward 127.0.0.1:``port`` to 127.0.0.1:``upstream_port``; every chunk the client sends
    reaches the server ``delay_s`` after it arrived (order kept, throughput not limited)."""
    import asyncio

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_w.close()
            return
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def receive() -> None:
            while data := await client_r.read(1 << 16):
                pending.put_nowait((loop.time() + delay_s, data))
            pending.put_nowait((loop.time() + delay_s, b""))

        async def forward() -> None:
            while True:
                due, data = await pending.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    up_w.write_eof()
                    return
                up_w.write(data)
                await up_w.drain()

        async def back() -> None:
            while data := await up_r.read(1 << 16):
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        tasks = [asyncio.create_task(c) for c in (receive(), forward(), back())]
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            up_w.close()
            client_w.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


@contextlib.contextmanager
def s3_endpoints(workdir: Path, latency_ms: float) -> Iterator[tuple[str, str, list[int]]]:
    """moto_server and the latency proxy in front of it; yields (direct URL, proxied URL,
    their pids)."""
    moto_port, proxy_port = bench_common.free_port(), bench_common.free_port()
    log = workdir / "servers.log"
    procs: list[subprocess.Popen] = []
    try:
        moto = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1"]
        procs.append(bench_common.start_server([*moto, "-p", str(moto_port)], log))
        proxy = [sys.executable, __file__, "--serve-proxy"]
        procs.append(
            bench_common.start_server(
                [*proxy, str(proxy_port), str(moto_port), str(latency_ms)], log
            )
        )
        direct = f"http://127.0.0.1:{moto_port}"
        proxied = f"http://127.0.0.1:{proxy_port}"
        bench_common.wait_until_answers(direct + "/moto-api/", procs[0], "moto_server", log)
        bench_common.wait_until_answers(proxied + "/moto-api/", procs[1], "latency proxy", log)
        yield direct, proxied, [p.pid for p in procs]
    finally:
        for proc in reversed(procs):
            bench_common.stop_process_group(proc)


# --------------------------------------------------------------------------- data and model
def make_data(workdir: Path, n_tasks: int, vocab: int) -> tuple[Path, Any, Any]:
    """(JSONL path, metadata table, tokenizer) of synthetic CodeContests records."""
    from weighted_mtp.data.codecontests import convert_codecontests
    from weighted_mtp.data.metadata import build_metadata
    from weighted_mtp.data.records import dumps_line
    from weighted_mtp.data.synthetic import generate_codecontests_rows
    from weighted_mtp.data.tokenizer_training import corpus_texts, train_tokenizer

    records = convert_codecontests(
        generate_codecontests_rows(n_tasks, seed=0, split="train"), source_file="train"
    ).records
    tokenizer = train_tokenizer(corpus_texts(records), vocab_size=vocab)
    path = workdir / "train.jsonl"
    with path.open("wb") as handle:
        for record in records:
            handle.write(dumps_line(record) + b"\n")
    return path, build_metadata(records, tokenizer), tokenizer


def make_plan(metadata: Any, max_len: int, n_rows: int, seed: int) -> Any:
    import numpy as np

    from weighted_mtp.training.data_plan import DataPlan, fits_sequence

    fit = metadata[fits_sequence(metadata, max_len)]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(fit), size=n_rows, replace=n_rows > len(fit))
    chosen = fit.iloc[pick]
    empty = np.zeros(0, np.int64)
    return DataPlan(
        train_rows=chosen["row"].to_numpy(np.int64),
        train_offsets=chosen["offset"].to_numpy(np.int64),
        train_lengths=chosen["length"].to_numpy(np.int64),
        valid_rows=empty,
        valid_offsets=empty,
        valid_lengths=empty,
        epoch_size=n_rows,
    )


def make_step(opts: argparse.Namespace, vocab: int) -> Callable[[list[Any]], None]:
    """The loop's step on a list of micro-batches (``Batch``) of one optimizer step; with
    ``--device-ms``, a stand-in for an accelerator step instead (see the module docstring)."""
    import torch

    if opts.device_ms > 0:

        def device_step(micro: list[Any]) -> None:
            # What a GPU step leaves the host: the batch handed over, then a wait in which the
            # host thread holds no GIL and no CPU (cudaStreamSynchronize at the loss's .item()).
            for batch in micro:
                batch.input_ids.sum()
            time.sleep(opts.device_ms / 1000)

        return device_step

    from weighted_mtp.alignment import head_valid_counts
    from weighted_mtp.losses.methods import BaselineMethod, LossContext
    from weighted_mtp.models import ModelArgs, MTPTransformer
    from weighted_mtp.training.module import MTPTrainingModule
    from weighted_mtp.training.optim import build_optimizer

    torch.manual_seed(0)
    args = ModelArgs(
        dim=opts.dim,
        n_layers=opts.layers,
        n_heads=opts.heads,
        vocab_size=vocab,
        multiple_of=32,
        n_future_tokens=4,
        max_seq_len=opts.max_len,
    )
    module = MTPTrainingModule(MTPTransformer(args), None, BaselineMethod())
    module.train()
    optimizer = build_optimizer(module, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95))
    params = [p for p in module.parameters() if p.requires_grad]

    def step(micro: list[Any]) -> None:
        counts = sum(head_valid_counts(b.targets, module.n_heads) for b in micro)
        ctx = LossContext(
            denominators=counts.to(torch.float64), n_micro=len(micro), chunk_size=1024
        )
        for batch in micro:
            loss, _ = module(batch.input_ids, batch.targets, batch.is_correct, None, ctx=ctx)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


# --------------------------------------------------------------------------- measurement
class Block:
    """Timed steps of one mode: step and wait seconds, CPU seconds of this process and of the
    servers (moto_server + proxy) over them."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.waits: list[float] = []
        self.client_cpu = 0.0
        self.server_cpu = 0.0

    def add(self, other: Block) -> None:
        self.times += other.times
        self.waits += other.waits
        self.client_cpu += other.client_cpu
        self.server_cpu += other.server_cpu


def run_block(
    mode: str,
    opts: argparse.Namespace,
    sources: dict[str, tuple[str, Any]],
    plan: Any,
    step: Callable[[list[Any]], None],
    memory: list[Any],
    digests: dict[str, list[str]],
    server_pids: list[int],
) -> Block:
    """``--steps`` timed steps of ``mode`` after one untimed one (which also starts the prefetch
    thread, as the loop's first step does)."""
    from weighted_mtp.training.batches import start_prefetch

    shape = {"rank": 0, "world": 1, "batch_size": opts.batch, "grad_accum": opts.accum}
    steps = range(opts.steps + 1)
    block = Block()
    prefetch = None
    if mode != "memory":
        path, reader = sources[mode.split()[0]]
        if mode.endswith("prefetch"):
            prefetch = start_prefetch(reader, path, plan, steps, **shape)
    seen: list[str] = []
    client0 = server0 = 0.0
    try:
        for s in steps:
            if s == 1:
                client0 = time.process_time()
                server0 = sum(bench_common.cpu_seconds(pid) for pid in server_pids)
            started = time.perf_counter()
            if mode == "memory":
                prepared = memory[s]
            elif prefetch is not None:
                prepared = prefetch.get(s)
            else:
                prepared = reader.read_step(path, plan, s, **shape)
            ready = time.perf_counter()
            step(prepared.micro)
            done = time.perf_counter()
            if s > 0:
                block.times.append(done - started)
                block.waits.append(ready - started)
            seen.append(_digest(prepared))
        block.client_cpu = time.process_time() - client0
        block.server_cpu = sum(bench_common.cpu_seconds(pid) for pid in server_pids) - server0
    finally:
        if prefetch is not None:
            prefetch.close()
    digests.setdefault(mode, seen)
    if seen != digests["memory"]:
        raise SystemExit(f"{mode}: the batches differ from the ones collated beforehand")
    return block


def _digest(prepared: Any) -> str:
    import hashlib

    h = hashlib.sha256()
    for b in prepared.micro:
        h.update(b.input_ids.numpy().tobytes())
        h.update(b.targets.numpy().tobytes())
    return h.hexdigest()[:16]


def request_latency(url: str, options: dict[str, Any], n: int = 15) -> float:
    """Median seconds of a small ranged GET of ``url`` with these fsspec options."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **options)
    fs.cat_file(path, start=0, end=64)  # connection set up outside the timing
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fs.cat_file(path, start=0, end=64)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per block")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--accum", type=int, default=2)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--tasks", type=int, default=60, help="synthetic tasks (~5 rows each)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--device-ms",
        type=float,
        default=0.0,
        help="replace the model step by an accelerator stand-in of this many ms (0: the model)",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--serve-proxy", nargs=3, metavar=("PORT", "UPSTREAM", "MS"))
    opts = parser.parse_args()
    if opts.serve_proxy:
        port, upstream, ms = opts.serve_proxy
        serve_proxy(int(port), int(upstream), float(ms) / 1000)
        return

    import fsspec
    import torch

    from weighted_mtp.data.collator import PromptOutputCollator
    from weighted_mtp.training.batches import PREFETCH_STEPS, BatchReader

    torch.set_num_threads(opts.threads)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "testing")  # moto accepts any; never look for real ones
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="data-prefetch-"))
    workdir.mkdir(parents=True, exist_ok=True)

    jsonl, metadata, tokenizer = make_data(workdir, opts.tasks, opts.vocab)
    plan = make_plan(metadata, opts.max_len, (opts.steps + 1) * opts.batch * opts.accum, seed=0)
    step = make_step(opts, tokenizer.vocab_size)
    what = (
        f"accelerator stand-in of {opts.device_ms:g} ms"
        if opts.device_ms > 0
        else f"model dim {opts.dim}, {opts.layers}+3 blocks, vocab {tokenizer.vocab_size}, "
        f"torch threads {opts.threads}"
    )
    print(
        f"data: {len(metadata)} records, {jsonl.stat().st_size / 1024:.0f} KiB; a step reads "
        f"{opts.batch * opts.accum} rows ({opts.accum} micro-batches of {opts.batch}, "
        f"max_len {opts.max_len}); step: {what}; prefetch depth {PREFETCH_STEPS}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start"
    )

    with s3_endpoints(workdir, opts.latency_ms) as (direct, proxied, server_pids):
        fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": direct})
        fs.mkdir("bench")
        fs.put_file(str(jsonl), "bench/train.jsonl")
        url = "s3://bench/train.jsonl"
        options = {"client_kwargs": {"endpoint_url": proxied}}
        near = request_latency(url, {"client_kwargs": {"endpoint_url": direct}})
        far = request_latency(url, options)
        print(
            f"ranged GET of 64 bytes, median: {near * 1e3:.1f} ms direct, {far * 1e3:.1f} ms "
            f"through the proxy (+{opts.latency_ms:g} ms asked)"
        )

        def reader(storage: dict[str, Any] | None) -> BatchReader:
            collator = PromptOutputCollator(tokenizer, opts.max_len)
            return BatchReader(collator, torch.device("cpu"), storage)

        sources = {"local": (str(jsonl), reader(None)), "s3": (url, reader(options))}
        shape = {"rank": 0, "world": 1, "batch_size": opts.batch, "grad_accum": opts.accum}
        local_path, local_reader = sources["local"]
        memory = [
            local_reader.read_step(local_path, plan, s, **shape) for s in range(opts.steps + 1)
        ]
        step(memory[0].micro)  # warm-up: allocator, autograd graph, optimizer state

        blocks = {m: Block() for m in MODES}
        digests: dict[str, list[str]] = {}
        args = (opts, sources, plan, step, memory, digests, server_pids)
        run_block("memory", *args)  # the reference digests, untimed
        for r in range(opts.rounds):
            order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
            for mode in order:
                blocks[mode].add(run_block(mode, *args))
            print(f"round {r + 1}/{opts.rounds} done", flush=True)

    mean = {m: statistics.fmean(blocks[m].times) for m in MODES}
    print()
    print(
        f"{'mode':<15} {'mean step ms':>12} {'median ms':>10} {'wait ms':>8} "
        f"{'CPU ms/step':>12} {'server CPU ms/step':>19} {'steps':>6}"
    )
    for m in MODES:
        b = blocks[m]
        n = len(b.times)
        print(
            f"{m:<15} {mean[m] * 1e3:>12.1f} {statistics.median(b.times) * 1e3:>10.1f} "
            f"{statistics.fmean(b.waits) * 1e3:>8.2f} {b.client_cpu / n * 1e3:>12.1f} "
            f"{b.server_cpu / n * 1e3:>19.1f} {n:>6}"
        )
    print(
        f"same batches in every mode ({len(digests['memory'])} steps); load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    print(
        f"ratio s3(+{opts.latency_ms:g} ms)/local mean step: "
        f"prefetch {mean['s3 prefetch'] / mean['local prefetch']:.3f}, "
        f"synchronous {mean['s3 sync'] / mean['local sync']:.3f}"
    )


if __name__ == "__main__":
    main()
