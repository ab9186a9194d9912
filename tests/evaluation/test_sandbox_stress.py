"""A few hundred programs from 32 threads: every result right, nothing left behind.

The smaller sibling of ``benchmarks/sandbox_stress.py`` (thousands of programs, numbers in
``docs/benchmarks/executor.md``). With the old ``preexec_fn`` set-up, a fork of the
multi-threaded evaluator could deadlock on a lock another thread held; the exec'd helper
leaves nothing to run between fork and exec.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from weighted_mtp.evaluation import SandboxLimits, run_program, sandbox

LIMITS = SandboxLimits(cpu_seconds=5, wall_seconds=60, memory_bytes=512 * 1024**2)


def one(i: int) -> tuple[int, bool]:
    if i % 3 == 0:
        result = run_program("import sys\nprint(sys.stdin.read()[::-1], end='')", f"{i}ab", LIMITS)
        return i, result.returncode == 0 and result.stdout == f"ba{str(i)[::-1]}"
    if i % 3 == 1:
        source = (
            "import os\npid = os.fork()\nif pid == 0:\n    os._exit(7)\n"
            f"print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) + {i})"
        )
        result = run_program(source, None, LIMITS)
        return i, result.returncode == 0 and result.stdout == f"{7 + i}\n"
    result = run_program(f"raise KeyError({i})", None, LIMITS)
    return i, result.returncode == 1 and result.stderr.strip().endswith(f"KeyError: {i}")


def children_of_this_process() -> set[str]:
    children: set[str] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as handle:
                children.update(handle.read().split())
        except FileNotFoundError:
            continue  # a thread (of the pool or pytest) that ended since the listing
    return children


@pytest.mark.slow
def test_hundreds_of_programs_from_32_threads() -> None:
    # Session fixtures (moto_server, the MLflow server) are children of pytest too.
    before = children_of_this_process()
    count = 300
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(one, range(count)))
    wrong = [i for i, ok in results if not ok]
    assert wrong == []
    assert sandbox.lasting_orphans() == []
    assert children_of_this_process() - before == set()  # every supervisor was reaped
