"""The executor's behaviour on ordinary programs: isolation basics, limits, verdicts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from weighted_mtp.evaluation import (
    InvalidSampleError,
    SandboxLimits,
    UnknownTaskError,
    check_completions,
    check_program,
    execution,
    run_program,
    sandbox,
)

FAST = SandboxLimits(cpu_seconds=2, wall_seconds=4, memory_bytes=512 * 1024**2)


def function_problem(tests: str, prefix: str = "", task_id: str = "t/0") -> dict:
    return {
        "task_id": task_id,
        "dataset": "unit",
        "prompt": prefix,
        "entry_point": "f",
        "kind": "function",
        "tests": tests,
        "execution_prefix": prefix,
        "canonical_solution": None,
        "difficulty": None,
        "split": "test",
        "time_limit": None,
    }


def stdio_problem(tests: list[dict], task_id: str = "s/0") -> dict:
    return {
        **function_problem("", task_id=task_id),
        "entry_point": None,
        "kind": "stdio",
        "tests": tests,
    }


ADD_TESTS = "assert f(1, 2) == 3\nassert f(-1, 1) == 0\n"


def test_run_program_passes_stdin_and_captures_output() -> None:
    result = run_program("import sys\nprint(sys.stdin.read().upper())", "abc\n", FAST)
    assert result.returncode == 0
    assert result.stdout == "ABC\n\n"
    assert not result.timed_out and not result.output_limited


def test_each_run_gets_a_fresh_empty_directory() -> None:
    first = run_program(
        "import os\nprint(sorted(os.listdir('.')))\nopen('left.txt', 'w').write('x')", None, FAST
    )
    second = run_program("import os\nprint(sorted(os.listdir('.')))", None, FAST)
    # Only the program file itself is there, and nothing left by the previous run.
    assert first.stdout.strip() == second.stdout.strip() == "['main.py']"


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WMTP_TEST_TOKEN", "do-not-leak")
    result = run_program("import os\nprint(sorted(os.environ))", None, FAST)
    names = eval(result.stdout)  # a printed list of str
    assert "WMTP_TEST_TOKEN" not in names
    assert set(names) <= set(sandbox._environment("/x", execution.isolation()))


def test_hash_seed_is_fixed() -> None:
    source = "print(list({'apple', 'pear', 'fig', 'kiwi', 'plum'}))"
    assert run_program(source, None, FAST).stdout == run_program(source, None, FAST).stdout


def test_wall_time_limit_kills_a_sleeping_program() -> None:
    result = run_program("import time\ntime.sleep(30)", None, SandboxLimits(wall_seconds=1))
    assert result.timed_out
    assert result.duration_s < 30  # killed, not left to finish its sleep


def test_cpu_limit_stops_a_busy_loop() -> None:
    result = run_program(
        "while True:\n    pass", None, SandboxLimits(cpu_seconds=1, wall_seconds=10)
    )
    # Stopped by RLIMIT_CPU, not by the 10 s wall limit.
    assert result.cpu_limited and not result.timed_out


def test_output_is_capped() -> None:
    limits = SandboxLimits(wall_seconds=10, max_output_bytes=10_000)
    result = run_program("while True:\n    print('x' * 1000)", None, limits)
    assert result.output_limited
    assert len(result.stdout) <= 10_000


def test_function_task_verdicts() -> None:
    problem = function_problem(ADD_TESTS, prefix="def f(a, b):\n")
    assert check_program(problem, "    return a + b\n", FAST)["status"] == "passed"
    wrong = check_program(problem, "    return a - b\n", FAST)
    assert (wrong["status"], wrong["error"]) == ("failed", "AssertionError")
    crash = check_program(problem, "    return undefined_name\n", FAST)
    assert crash["status"] == "error"
    assert crash["error"] == "NameError: name 'undefined_name' is not defined"
    syntax = check_program(problem, "    return a +\n", FAST)
    assert syntax["status"] == "error" and syntax["error"].startswith("SyntaxError")
    slow = check_program(problem, "    while True: pass\n", SandboxLimits(cpu_seconds=1))
    assert slow["status"] == "timeout" and not slow["passed"]


def test_stdio_task_tolerates_trailing_whitespace_only() -> None:
    problem = stdio_problem(
        [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10"}]
    )
    ok = "a, b = map(int, input().split())\nprint(a + b, '  ')\nprint()\n"
    assert check_program(problem, ok, FAST)["status"] == "passed"
    spaced = "a, b = map(int, input().split())\nprint(' ' + str(a + b))\n"
    assert check_program(problem, spaced, FAST)["status"] == "failed"
    second_wrong = "a, b = map(int, input().split())\nprint(3)\n"
    verdict = check_program(problem, second_wrong, FAST)
    assert (verdict["status"], verdict["error"]) == ("failed", "wrong output on test 1")
    crash = check_program(problem, "raise ValueError('bad input')\n", FAST)
    assert (crash["status"], crash["error"]) == ("error", "ValueError: bad input")


def test_time_limit_of_a_problem_raises_the_budget_only() -> None:
    base = SandboxLimits(cpu_seconds=2, wall_seconds=4)
    low = execution._limits_for({"time_limit": 1.0}, base)
    high = execution._limits_for({"time_limit": 6.0}, base)
    assert low == base
    assert (high.cpu_seconds, high.wall_seconds) == (6.0, 12.0)


def test_check_completions_keeps_order_and_fields() -> None:
    problems = {"t/0": function_problem(ADD_TESTS, prefix="def f(a, b):\n")}
    samples = [
        {"task_id": "t/0", "completion": "    return a + b\n", "sample_id": 0},
        {"task_id": "t/0", "completion": "    return 0\n", "sample_id": 1},
        {"task_id": "t/0", "completion": "    return b + a\n", "sample_id": 2},
    ]
    calls: list[tuple[int, int]] = []
    verdicts = check_completions(
        problems, samples, limits=FAST, workers=2, progress=lambda d, t: calls.append((d, t))
    )
    assert [v["sample_id"] for v in verdicts] == [0, 1, 2]
    assert [v["passed"] for v in verdicts] == [True, False, True]
    assert all(
        set(v) >= {"status", "passed", "error", "duration_s", "completion"} for v in verdicts
    )
    assert sorted(calls) == [(1, 3), (2, 3), (3, 3)]


def test_check_completions_rejects_unknown_tasks_before_running() -> None:
    problems = {"t/0": function_problem(ADD_TESTS)}
    with pytest.raises(UnknownTaskError, match="nope/1"):
        check_completions(problems, [{"task_id": "nope/1", "completion": ""}])
    with pytest.raises(InvalidSampleError, match="sample 0"):
        check_completions(problems, [{"task_id": "t/0"}])


def test_fallback_without_namespaces_still_protects_the_evaluator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The non-root path: rlimits + supervisor only. The program's parent is the supervisor,
    # so killing it cannot reach the evaluator.
    weak = sandbox.Isolation(namespaces=False, drop_uid=False, masks=())
    monkeypatch.setattr(sandbox, "isolation", lambda: weak)
    ok = run_program(f"import os\nprint(os.getppid() != {os.getpid()})", None, FAST)
    assert ok.stdout.strip() == "True"
    killer = run_program("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", None, FAST)
    assert killer.returncode != 0
    problem = function_problem(ADD_TESTS, prefix="def f(a, b):\n")
    assert check_program(problem, "    return a + b\n", FAST)["passed"]


def _has_cap_sys_admin() -> bool:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("CapEff:"))
    return bool(int(line.split()[1], 16) >> 21 & 1)


@pytest.mark.skipif(
    os.geteuid() != 0 or not _has_cap_sys_admin(),
    reason="namespaces need root with CAP_SYS_ADMIN (tests/evaluation/test_sandbox_container.py "
    "covers root without it)",
)
def test_root_gets_full_isolation() -> None:
    iso = execution.isolation()
    assert iso.namespaces and iso.drop_uid
    result = run_program("import os\nprint(os.getuid(), os.getpid(), os.getppid())", None, FAST)
    uid, pid, ppid = map(int, result.stdout.split())
    assert uid >= execution.SANDBOX_UID_BASE
    assert (pid, ppid) == (1, 0)  # pid 1 of its own pid namespace


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal concerns root")
def test_root_without_any_uid_drop_refuses_to_run_programs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Neither namespaces nor a uid drop work: the only way left would be running
    # model-written code as root, which the evaluator refuses by default.
    monkeypatch.setattr(
        sandbox,
        "_probe",
        lambda c: "setuid: Operation not permitted" if c.drop_uid or c.namespaces else None,
    )
    monkeypatch.delenv(sandbox.ALLOW_ROOT_ENV, raising=False)
    probe = sandbox.isolation.__wrapped__
    with pytest.raises(sandbox.SandboxUnavailableError, match="setuid: Operation not permitted"):
        probe()
    monkeypatch.setenv(sandbox.ALLOW_ROOT_ENV, "1")
    accepted = probe()
    assert not accepted.drop_uid and not accepted.namespaces
    # The guards that need no privilege stay on.
    assert accepted.seccomp == bool(sandbox._seccomp_filter())


@pytest.mark.skipif(os.geteuid() != 0, reason="the modes concern root")
def test_a_guard_the_container_forbids_is_left_out_not_the_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # E.g. a container seccomp profile that forbids installing filters: the evaluator keeps
    # its mode (uid drop, namespaces if any) and runs without seccomp, rather than refusing.
    monkeypatch.setattr(
        sandbox, "_probe", lambda c: "seccomp: Operation not permitted" if c.seccomp else None
    )
    monkeypatch.delenv(sandbox.ALLOW_ROOT_ENV, raising=False)
    iso = sandbox.isolation.__wrapped__()
    assert iso.drop_uid and iso.namespaces and not iso.seccomp
    assert "seccomp: socket() denied" in iso.missing()


def test_failed_set_up_raises_instead_of_giving_a_verdict() -> None:
    # A seccomp program the kernel rejects (not ending in a return): the helper reports the
    # failing step, and no program runs.
    broken = sandbox.Isolation(namespaces=False, drop_uid=False, masks=(), seccomp_bpf=bytes(8))
    with pytest.raises(sandbox.SandboxSetupError, match="seccomp: Invalid argument"):
        sandbox._run(broken, "print('ran')", None, FAST)


def test_fallback_kills_what_the_program_left_behind() -> None:
    # No pid namespace and no uid of its own: the supervisor, a child subreaper, inherits the
    # escaped child (setsid, parent gone) and kills it before reporting.
    weak = sandbox.Isolation(namespaces=False, drop_uid=False, masks=())
    source = (
        "import os, sys, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.setsid()\n"
        "    os.close(1)\n"
        "    os.close(2)\n"
        "    time.sleep(3600)\n"
        "print(pid)\n"
    )
    result = sandbox._run(weak, source, None, FAST)
    escaped = int(result.stdout)
    assert not os.path.exists(f"/proc/{escaped}")


def test_set_up_does_not_run_between_fork_and_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    # The evaluator is multi-threaded: no Python code may run in a forked copy of it.
    spawned: list[dict] = []
    real_popen = sandbox.subprocess.Popen

    def recording_popen(*args, **kwargs):
        spawned.append(kwargs)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(sandbox.subprocess, "Popen", recording_popen)
    assert run_program("print(1)", None, FAST).stdout == "1\n"
    assert spawned and all(kwargs.get("preexec_fn") is None for kwargs in spawned)


def test_sandbox_uids_are_exclusive_across_evaluator_processes(tmp_path) -> None:
    # Two pools on one lock directory stand for two evaluator processes: a uid held by one is
    # never handed out by the other (a shared uid would share RLIMIT_NPROC, and the
    # end-of-run kill(-1) of one run would kill the other's program).
    first = sandbox._UidPool(100, 2, lock_dir=str(tmp_path))
    second = sandbox._UidPool(100, 2, lock_dir=str(tmp_path))
    a = first.acquire()
    b = second.acquire()
    assert {a, b} == {100, 101}
    first.release(a)
    assert second.acquire() == a


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += [int(child) for child in handle.read().split()]
    return found


def test_nothing_outlives_an_evaluator_killed_mid_run() -> None:
    # The helper (supervisor) has a parent-death signal: killing the evaluator with SIGKILL
    # ends the supervisor and, through it, the sleeping program.
    evaluator = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from weighted_mtp.evaluation import SandboxLimits, run_program\n"
            "run_program('import time\\ntime.sleep(3600)', None, SandboxLimits(wall_seconds=3600))\n",
        ]
    )
    try:
        deadline = time.monotonic() + 60
        started: list[int] = []
        while time.monotonic() < deadline:
            helpers = _children(evaluator.pid)
            programs = [p for h in helpers if os.path.exists(f"/proc/{h}") for p in _children(h)]
            if programs:
                started = helpers + programs
                break
            time.sleep(0.1)
        assert started, "the program never started"
    finally:
        evaluator.kill()
        evaluator.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in started):
        time.sleep(0.1)
    assert not [p for p in started if os.path.exists(f"/proc/{p}")]


def test_program_runs_as_main_with_the_interpreters_traceback() -> None:
    # The helper runs the program in its own interpreter: to the program (and in stderr)
    # this must look exactly like `python main.py`.
    source = "import sys\nprint(__name__, sys.argv)\ndef f():\n    return 1 / 0\nf()\n"
    result = run_program(source, None, FAST)
    assert result.stdout == "__main__ ['main.py']\n"
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Traceback (most recent call last):",
        '  File "main.py", line 5, in <module>',
        "    f()",
        '  File "main.py", line 4, in f',
        "    return 1 / 0",
        "           ~~^~~",
        "ZeroDivisionError: division by zero",
    ]
