"""Hostile programs: the evaluator survives each, none counts as a pass, and afterwards a
correct program still passes. Limits are short so the whole batch takes seconds."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from weighted_mtp.evaluation import SandboxLimits, check_completions, execution, sandbox

LIMITS = SandboxLimits(
    cpu_seconds=1,
    wall_seconds=3,
    memory_bytes=256 * 1024**2,
    file_size_bytes=1024**2,
    max_processes=4,
    max_output_bytes=64 * 1024,
)
PREFIX = "def add(a, b):\n"
TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4\n"
CORRECT = "    return a + b\n"


def function_problem() -> dict:
    return {
        "task_id": "fn/add",
        "dataset": "hostile",
        "prompt": PREFIX,
        "entry_point": "add",
        "kind": "function",
        "tests": TESTS,
        "execution_prefix": PREFIX,
        "canonical_solution": CORRECT,
        "difficulty": None,
        "split": "test",
        "time_limit": None,
    }


def stdio_problem() -> dict:
    tests = [{"input": f"{a} {b}\n", "output": f"{a + b}\n"} for a, b in [(1, 2), (5, 7), (10, 20)]]
    return {
        **function_problem(),
        "task_id": "io/add",
        "entry_point": None,
        "kind": "stdio",
        "tests": tests,
        "execution_prefix": "",
    }


def body(source: str) -> str:
    """Indent a program so that it runs inside ``add`` before the tests call it (at import)."""
    return "    return a + b\n" + source


@pytest.fixture()
def listener() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


# Set by tests/evaluation/test_sandbox_container.py when it reruns this file with
# CAP_SYS_ADMIN dropped, so that the rerun cannot pass in another mode than intended.
EXPECTED_MODE_ENV = "WMTP_SANDBOX_EXPECT"


@pytest.fixture(autouse=True)
def _isolation_is_the_expected_one() -> None:
    expected = os.environ.get(EXPECTED_MODE_ENV)
    if expected is None:
        return
    iso = execution.isolation()
    modes = {"namespaces": (True, True), "container": (False, True)}
    assert (iso.namespaces, iso.drop_uid) == modes[expected], iso.describe()
    # Without namespaces, the guards that replace them must be on.
    if expected == "container":
        assert iso.seccomp, iso.describe()
        assert iso.landlock == sandbox._landlock_available(), iso.describe()


def test_hostile_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listener: socket.socket
) -> None:
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    monkeypatch.setenv("WMTP_FAKE_SECRET", "hunter2-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2-aws")
    port = listener.getsockname()[1]
    evaluator_pid = os.getpid()
    litter_name = f"wmtp-hostile-{os.getpid()}-{id(tmp_path)}"
    hostile = {
        "infinite_loop": "while True:\n    pass\n",
        "sleep_forever": "import time\ntime.sleep(3600)\n",
        "fork_bomb": (
            "import os\n"
            "while True:\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        pass\n"
        ),
        "fork_and_escape": (
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    time.sleep(3600)\n"
            "import sys\nsys.exit(0)\n"
        ),
        "memory_bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n",
        "huge_file": "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * 1024 * 1024)\n",
        "fill_tmp": "i = 0\nwhile True:\n    open(f'/tmp/f{i}', 'wb').write(b'x' * 900_000)\n    i += 1\n",
        "delete_outside": (
            "import os, shutil\n"
            f"shutil.rmtree({str(tmp_path)!r}, ignore_errors=True)\n"
            f"os.remove({str(sentinel)!r})\n"
        ),
        "read_secrets": (
            "import os\n"
            "print(dict(os.environ))\n"
            f"for p in ('/proc/{evaluator_pid}/environ', '/proc/1/environ', '/proc/self/environ'):\n"
            "    try:\n"
            "        print(open(p, 'rb').read())\n"
            "    except OSError:\n"
            "        pass\n"
            "assert 'WMTP_FAKE_SECRET' in os.environ\n"
        ),
        "litter_shared_tmp": (
            "for d in ('/tmp', '/var/tmp', '/dev/shm'):\n"
            "    try:\n"
            f"        open(d + '/{litter_name}', 'w').write('x')\n"
            "    except OSError:\n"
            "        pass\n"
            "raise SystemExit(1)\n"
        ),
        "network": (
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
        ),
        "kill_parent": (
            "import os, signal\n"
            f"for pid in (os.getppid(), {evaluator_pid}, 0, -1):\n"
            "    try:\n"
            "        os.kill(pid, signal.SIGKILL)\n"
            "    except OSError:\n"
            "        pass\n"
            "raise SystemExit(0)\n"
        ),
        "sys_exit_0": "import sys\nsys.exit(0)\n",
        "os_exit_0": "import os\nos._exit(0)\n",
        "fake_pass_print": "print('passed')\nprint('All tests passed')\nimport os\nos._exit(0)\n",
        "patch_assertion_error": (
            "import builtins\n"
            "class Quiet(Exception):\n    pass\n"
            "builtins.AssertionError = Quiet\n"
            "def add(a, b):\n    return 0\n"
        ),
        "excepthook_and_atexit": (
            "import sys, os, atexit\n"
            "sys.excepthook = lambda *args: print('passed')\n"
            "atexit.register(lambda: os._exit(0))\n"
            "def add(a, b):\n    return 0\n"
        ),
        "flood_stdout": "while True:\n    print('x' * 4096)\n",
        "close_pipes_and_hang": "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(3600)\n",
    }
    problems = {"fn/add": function_problem(), "io/add": stdio_problem()}
    samples = [
        {"task_id": "fn/add", "completion": CORRECT + source, "name": name}
        for name, source in hostile.items()
    ]
    # Stdio: print the first expected output whatever the input; and a reader of the
    # expected outputs, which are not in the sandbox.
    samples.append({"task_id": "io/add", "completion": "print(3)\n", "name": "io_constant"})
    samples.append(
        {
            "task_id": "io/add",
            "completion": "import os\nprint(os.listdir('.'))\n",
            "name": "io_snoop",
        }
    )

    verdicts = check_completions(problems, samples, limits=LIMITS, workers=2)

    by_name = {v["name"]: v for v in verdicts}
    assert not [name for name, v in by_name.items() if v["passed"]], by_name
    assert all(v["status"] in ("failed", "timeout", "error") for v in verdicts)
    assert by_name["infinite_loop"]["status"] == "timeout"
    assert by_name["sleep_forever"]["status"] == "timeout"
    assert by_name["close_pipes_and_hang"]["status"] == "timeout"
    assert by_name["memory_bomb"]["error"] == "MemoryError"
    assert by_name["flood_stdout"]["error"].startswith("output limit exceeded")
    assert by_name["io_constant"]["error"] == "wrong output on test 1"
    assert sentinel.read_text() == "keep me"
    # Nothing written to the shared writable directories outlives the run.
    assert not [d for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.exists(f"{d}/{litter_name}")]
    assert all("hunter2" not in str(v) for v in verdicts)
    with pytest.raises(BlockingIOError):
        listener.accept()  # no connection ever arrived
    # Nothing a hostile program started outlives it (processes of runs that other evaluators
    # on the machine have going on are not counted).
    assert sandbox.lasting_orphans() == []

    # The evaluator is intact: a correct program still passes, on both kinds.
    after = check_completions(
        problems,
        [
            {"task_id": "fn/add", "completion": CORRECT},
            {"task_id": "io/add", "completion": "a, b = map(int, input().split())\nprint(a + b)\n"},
        ],
        limits=LIMITS,
        workers=2,
    )
    assert [v["status"] for v in after] == ["passed", "passed"]


def test_secret_is_invisible_even_when_asserted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WMTP_FAKE_SECRET", "hunter2")
    problem = function_problem()
    problem["tests"] = "import os\nassert os.environ.get('WMTP_FAKE_SECRET') == 'hunter2'\n"
    [verdict] = check_completions(
        {"fn/add": problem}, [{"task_id": "fn/add", "completion": CORRECT}], limits=LIMITS
    )
    assert verdict["status"] == "failed"
