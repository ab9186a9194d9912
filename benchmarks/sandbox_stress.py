"""Sandbox stress: thousands of programs from a 32-thread pool, no hang, nothing left behind.

    .venv/bin/python benchmarks/sandbox_stress.py [--programs 4000] [--workers 32]
        [--baseline-programs 1000] [--timeout 1800]

Runs ``--programs`` small programs through ``sandbox.run_program`` from ``--workers``
threads (the evaluator's pattern: ``check_completions`` uses a thread pool). The programs
mix printing, stdin, forking, threads and exceptions; every result is checked. A watchdog
dumps every thread's stack and exits with status 2 if the run takes longer than
``--timeout`` (a hang). Afterwards no process of a sandbox uid and no child of ours may be
left. For scale, the same kind of programs run unsandboxed (``subprocess.run`` of the same
interpreter with ``-S -s -P -B``, same pool) on ``--baseline-programs`` of them, in
alternating rounds: the ratio is the sandbox's cost per program, not a speed-up.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from weighted_mtp.evaluation import SandboxLimits, run_program, sandbox

LIMITS = SandboxLimits(cpu_seconds=5, wall_seconds=60, memory_bytes=512 * 1024**2)


def program(i: int) -> tuple[str, str | None, Callable[[int | None, str, str], bool]]:
    """Program ``i`` of the mix: (source, stdin, check(returncode, stdout, stderr))."""
    kind = i % 5
    if kind == 0:
        return f"print({i} * {i})", None, lambda rc, out, err: rc == 0 and out == f"{i * i}\n"
    if kind == 1:
        return (
            "import sys\nprint(sys.stdin.read().upper(), end='')",
            f"line {i}\n",
            lambda rc, out, err: rc == 0 and out == f"LINE {i}\n",
        )
    if kind == 2:
        source = (
            "import os\npid = os.fork()\nif pid == 0:\n    os._exit(3)\n"
            f"_, status = os.waitpid(pid, 0)\nprint(os.waitstatus_to_exitcode(status), {i})"
        )
        return source, None, lambda rc, out, err: rc == 0 and out == f"3 {i}\n"
    if kind == 3:
        source = (
            "import threading\nbox = []\nt = threading.Thread(target=lambda: box.append(1))\n"
            f"t.start()\nt.join()\nprint(len(box) + {i})"
        )
        return source, None, lambda rc, out, err: rc == 0 and out == f"{i + 1}\n"
    return (
        f"raise ValueError('bad {i}')",
        None,
        lambda rc, out, err: rc == 1 and err.strip().endswith(f"ValueError: bad {i}"),
    )


def run_sandboxed(i: int) -> bool:
    source, stdin, check = program(i)
    result = run_program(source, stdin, LIMITS)
    return check(result.returncode, result.stdout, result.stderr)


def run_plain(i: int) -> bool:
    source, stdin, check = program(i)
    done = subprocess.run(
        [sys.executable, "-S", "-s", "-P", "-B", "-c", source],
        input=stdin or "",
        capture_output=True,
        text=True,
        # No timeout: with one, Popen.wait polls with sleeps of up to 50 ms, which would
        # make this side slower than it need be (the watchdog covers a hang). A session of
        # its own, as the sandbox's helper gets: from a 32-thread pool, spawning into the
        # parent's session measured 2-5x slower here.
        env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
        start_new_session=True,
    )
    return check(done.returncode, done.stdout, done.stderr)


def timed(fn: Callable[[int], bool], ids: range, workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        correct = sum(pool.map(fn, ids))
    return time.perf_counter() - start, correct


def our_children() -> list[int]:
    children: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as handle:
            children += [int(pid) for pid in handle.read().split()]
    return children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--baseline-programs", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    faulthandler.dump_traceback_later(args.timeout, exit=True)  # a hang fails loudly

    print(f"sandbox: {sandbox.isolation().describe()}")
    print(f"{args.programs} programs, {args.workers} workers, {os.cpu_count()} CPUs")
    # Alternating rounds, so that the load of a shared machine weighs on both sides alike.
    rounds = 4
    ours_s = plain_s = 0.0
    correct = plain_correct = 0
    for r in range(rounds):
        ids = range(r * args.programs // rounds, (r + 1) * args.programs // rounds)
        seconds, ok = timed(run_sandboxed, ids, args.workers)
        ours_s, correct = ours_s + seconds, correct + ok
        ids = range(
            r * args.baseline_programs // rounds, (r + 1) * args.baseline_programs // rounds
        )
        seconds, ok = timed(run_plain, ids, args.workers)
        plain_s, plain_correct = plain_s + seconds, plain_correct + ok
    print(f"  sandboxed run_program:      {ours_s:7.2f} s, {correct}/{args.programs} correct")
    left = sandbox.orphaned_processes()
    children = our_children()
    print(f"  left behind: {len(left)} sandbox-uid processes, {len(children)} children of ours")
    failed = correct != args.programs or left or children
    ours = args.programs / ours_s
    print(f"sandboxed:   {ours:6.1f} programs/s")
    if args.baseline_programs:
        plain = args.baseline_programs / plain_s
        print(
            f"  unsandboxed subprocess.run: {plain_s:7.2f} s, "
            f"{plain_correct}/{args.baseline_programs} correct"
        )
        print(f"unsandboxed: {plain:6.1f} programs/s")
        print(f"ratio (sandboxed / unsandboxed): {ours / plain:.2f}")
    faulthandler.cancel_dump_traceback_later()
    if failed:
        raise SystemExit("stress failed: wrong results or processes left behind")


if __name__ == "__main__":
    main()
