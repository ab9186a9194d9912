"""The evaluator as root without CAP_SYS_ADMIN, as in a default container (VESSL, Docker).

Each test runs a fresh Python with capabilities removed from its bounding set before it
execs (what ``capsh --drop=...`` does, done here with ``prctl`` so that capsh is not
needed): as root, the exec'd process keeps only the bounding set. Namespaces then fail, and
the evaluator must fall back to the per-run uid, seccomp and Landlock, or refuse when even
the uid drop is impossible.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from weighted_mtp.evaluation import execution, sandbox

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="dropping capabilities concerns root (the CI runs as root)"
)

CAP_SETGID, CAP_SETUID, CAP_SYS_ADMIN = 6, 7, 21
REPO = Path(__file__).resolve().parents[2]

# Drops the given capabilities from the bounding set, then execs the rest of argv.
DROP_CAPS = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
caps = [int(c) for c in sys.argv[1].split(",")]
for cap in caps:
    if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        raise SystemExit(f"PR_CAPBSET_DROP {cap}: {os.strerror(ctypes.get_errno())}")
os.execv(sys.argv[2], sys.argv[2:])
"""

# Runs in the capability-less process: which mode the evaluator chose, and what programs
# can do there.
INSPECT = """
import json, os, sys
from weighted_mtp.evaluation import SandboxLimits, execution, run_program, sandbox

with open("/proc/self/status") as handle:
    cap_eff = int(next(l for l in handle if l.startswith("CapEff:")).split()[1], 16)
try:
    iso = execution.isolation()
except sandbox.SandboxUnavailableError as exc:
    print(json.dumps({"refused": str(exc), "cap_eff": cap_eff}))
    raise SystemExit(0)
limits = SandboxLimits(cpu_seconds=2, wall_seconds=5)
evaluator = os.getpid()
probe = (
    "import os, json, socket\\n"
    "out = {'uid': os.getuid(), 'ppid': os.getppid()}\\n"
    "try:\\n"
    "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\\n"
    "    out['socket'] = 'allowed'\\n"
    "except OSError as exc:\\n"
    "    out['socket'] = exc.strerror\\n"
    "try:\\n"
    f"    out['environ'] = len(open('/proc/{evaluator}/environ', 'rb').read())\\n"
    "except OSError as exc:\\n"
    "    out['environ'] = exc.strerror\\n"
    "try:\\n"
    f"    open('/tmp/wmtp-container-probe-{evaluator}', 'w').write('x')\\n"
    "    out['tmp_write'] = 'allowed'\\n"
    "except OSError as exc:\\n"
    "    out['tmp_write'] = exc.strerror\\n"
    "open('own.txt', 'w').write('x')\\n"
    "out['own_dir'] = os.listdir('.')\\n"
    "import numpy\\n"
    "out['numpy'] = int(numpy.arange(4).sum())\\n"
)
if iso.drop_uid:  # as root (no uid drop, accepted) this kill would succeed
    probe += (
        "try:\\n"
        f"    os.kill({evaluator}, 9)\\n"
        "except OSError as exc:\\n"
        "    out['kill'] = exc.strerror\\n"
    )
probe += "print(json.dumps(out))\\n"
result = run_program(probe, None, limits)
print(json.dumps({
    "cap_eff": cap_eff,
    "namespaces": iso.namespaces,
    "drop_uid": iso.drop_uid,
    "seccomp": iso.seccomp,
    "landlock": iso.landlock,
    "python": iso.python,
    "evaluator": evaluator,
    "program": json.loads(result.stdout) if result.returncode == 0 else result.stderr,
}))
"""


def run_without(
    caps: list[int], argv: list[str], env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DROP_CAPS, ",".join(map(str, caps)), sys.executable, *argv],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_container_mode_drops_uid_and_closes_network_and_writes() -> None:
    done = run_without([CAP_SYS_ADMIN], ["-c", INSPECT])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["cap_eff"] >> CAP_SYS_ADMIN & 1  # the premise of this test
    assert (report["namespaces"], report["drop_uid"]) == (False, True), report
    assert report["seccomp"], report
    # Landlock needs Linux >= 5.13 (and a container seccomp profile that allows it).
    assert report["landlock"] == sandbox._landlock_available(), report
    program = report["program"]
    assert isinstance(program, dict), program  # the program ran and reported
    assert program["uid"] >= execution.SANDBOX_UID_BASE
    assert program["ppid"] != report["evaluator"]  # its parent is the supervisor
    assert program["socket"] == "Permission denied"  # seccomp
    assert program["environ"] == "Permission denied"  # another uid's /proc/<pid>/environ
    if report["landlock"]:
        assert program["tmp_write"] == "Permission denied"
    # With Landlock nothing was written; without it, the evaluator removed the litter.
    assert not os.path.exists(f"/tmp/wmtp-container-probe-{report['evaluator']}")
    assert sorted(program["own_dir"]) == ["main.py", "own.txt"]  # writes in its own dir
    assert program["numpy"] == 6  # site-packages still importable
    assert program["kill"] == "Operation not permitted"
    # The interpreter copy other uids run lives outside the 0700 home, and the home stayed
    # closed.
    if report["python"]:
        assert not report["python"].startswith("/root/")
    assert os.stat("/root").st_mode & 0o777 == 0o700 or not Path("/root").exists()


@pytest.mark.slow
def test_hostile_suite_scores_zero_without_cap_sys_admin() -> None:
    # The whole hostile file, rerun in container mode (its autouse fixture checks the mode).
    done = run_without(
        [CAP_SYS_ADMIN],
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/evaluation/test_hostile_programs.py",
        ],
        env={"WMTP_SANDBOX_EXPECT": "container", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout, done.stdout[-2000:]
    assert "skipped" not in done.stdout, done.stdout[-2000:]


def test_refuses_when_no_uid_drop_is_possible() -> None:
    # Without CAP_SETUID/CAP_SETGID programs would run as root: refused unless accepted.
    caps = [CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID]
    env = {"WMTP_SANDBOX_ALLOW_ROOT": ""}
    refused = run_without(caps, ["-c", INSPECT], env=env)
    assert refused.returncode == 0, refused.stderr
    report = json.loads(refused.stdout.strip().splitlines()[-1])
    assert "refused" in report and "WMTP_SANDBOX_ALLOW_ROOT" in report["refused"], report

    accepted = run_without(caps, ["-c", INSPECT], env={"WMTP_SANDBOX_ALLOW_ROOT": "1"})
    report = json.loads(accepted.stdout.strip().splitlines()[-1])
    assert (report["namespaces"], report["drop_uid"]) == (False, False), report
    # Root without a uid drop still gets seccomp and Landlock.
    assert report["program"]["uid"] == 0
    assert report["program"]["socket"] == "Permission denied"
    if report["landlock"]:
        assert report["program"]["tmp_write"] == "Permission denied"


def test_without_landlock_the_uid_litter_is_removed() -> None:
    # Container mode on a kernel without Landlock: the program may write to /tmp, and the
    # evaluator removes what its uid left there once the run is over.
    python, library_path = sandbox._runtime_for_other_uids()
    iso = sandbox.Isolation(
        namespaces=False, drop_uid=True, masks=(), python=python, library_path=library_path
    )
    litter = f"/tmp/wmtp-litter-{os.getpid()}"
    source = f"import os\nos.mkdir({litter!r})\nopen({litter!r} + '/f', 'w').write('x')\nprint(os.getuid())"
    result = sandbox._run(iso, source, None, sandbox.SandboxLimits(wall_seconds=10))
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= execution.SANDBOX_UID_BASE
    assert not os.path.exists(litter)


def test_orphans_are_found_and_runs_of_other_evaluators_are_not() -> None:
    # A process of a sandbox uid that no run holds is a leftover; while another evaluator
    # holds the uid (its flock), the process belongs to that evaluator's run.
    uid = execution.SANDBOX_UID_BASE + execution.SANDBOX_UID_COUNT - 1
    stray = subprocess.Popen(["sleep", "60"], user=uid, group=uid, extra_groups=[])
    try:
        assert stray.pid in sandbox.orphaned_processes()
        other_evaluator = sandbox._UidPool(uid, 1, lock_dir=sandbox._UID_POOL._directory())
        held = other_evaluator.acquire()
        try:
            assert stray.pid not in sandbox.orphaned_processes()
        finally:
            other_evaluator.release(held)
    finally:
        stray.kill()
        stray.wait()
