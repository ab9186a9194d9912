"""The executor's behaviour on ordinary programs: isolation basics, limits, verdicts."""

from __future__ import annotations

import os

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
    assert set(names) <= set(sandbox._environment("/x"))


def test_hash_seed_is_fixed() -> None:
    source = "print(list({'apple', 'pear', 'fig', 'kiwi', 'plum'}))"
    assert run_program(source, None, FAST).stdout == run_program(source, None, FAST).stdout


def test_wall_time_limit_kills_a_sleeping_program() -> None:
    result = run_program("import time\ntime.sleep(30)", None, SandboxLimits(wall_seconds=1))
    assert result.timed_out
    assert result.duration_s < 5


def test_cpu_limit_stops_a_busy_loop() -> None:
    result = run_program(
        "while True:\n    pass", None, SandboxLimits(cpu_seconds=1, wall_seconds=10)
    )
    assert result.cpu_limited and not result.timed_out
    assert result.duration_s < 6


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


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")
def test_root_gets_full_isolation() -> None:
    iso = execution.isolation()
    assert iso.namespaces and iso.drop_uid
    result = run_program("import os\nprint(os.getuid(), os.getpid(), os.getppid())", None, FAST)
    uid, pid, ppid = map(int, result.stdout.split())
    assert uid >= execution.SANDBOX_UID_BASE
    assert (pid, ppid) == (1, 0)  # pid 1 of its own pid namespace


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal concerns root")
def test_root_without_isolation_refuses_to_run_programs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Namespaces fail and the interpreter sits behind a 0700 directory: the only way left
    # would be running model-written code as root, which the evaluator refuses by default.
    monkeypatch.setattr(sandbox, "_interpreter_masks", lambda: (("/root", ("/root/py",)),))

    def broken_probe(*args, **kwargs):
        raise OSError("unshare: Operation not permitted")

    monkeypatch.setattr(sandbox, "_run", broken_probe)
    monkeypatch.delenv(sandbox.ALLOW_ROOT_ENV, raising=False)
    probe = sandbox.isolation.__wrapped__
    with pytest.raises(sandbox.SandboxUnavailableError, match="Operation not permitted"):
        probe()
    monkeypatch.setenv(sandbox.ALLOW_ROOT_ENV, "1")
    assert probe() == sandbox.Isolation(namespaces=False, drop_uid=False, masks=())
