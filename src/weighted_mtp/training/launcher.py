"""Start a training job as torchrun worker processes and wait for it: the only place in the
project that spawns training processes.

:func:`launch` writes the job spec, runs ``python -m torch.distributed.run ... -m <worker> SPEC``
in its own session, streams every rank's output into the log (``[rank N] ...``) and into
``spec.log_dir/rank_N.log``, renders the workers' progress events (:mod:`.progress`), and turns
a failed worker into a :class:`TrainingJobError` carrying the worker's traceback. Whatever
happens to the calling process short of SIGKILL (Ctrl-C, SIGTERM, an exception), no worker
outlives the call. See ``docs/training_launcher.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from weighted_mtp.training import progress
from weighted_mtp.training.spec import JobSpec

logger = logging.getLogger(__name__)

#: Seconds between SIGTERM and SIGKILL when stopping a job (also torchrun's own shutdown timeout
#: when it tears down the surviving ranks after one failed).
STOP_GRACE_SECONDS = 5
#: Without a terminal, a progress line is logged at each 10% of the steps or after this long.
PROGRESS_LOG_INTERVAL_SECONDS = 30.0
#: Lines of a failed rank's traceback or log quoted in :class:`TrainingJobError`.
ERROR_TAIL_LINES = 30

_POLL_SECONDS = 0.1
_TORCHRUN_SUBDIR = "torchrun"
_TORCHRUN_LOG = "torchrun.log"
_TORCHRUN_ERROR_FILE = "torchrun_error.json"
_LOOPBACK = "127.0.0.1"


class TrainingJobError(RuntimeError):
    """A training job ended badly: a worker failed, or torchrun itself did.

    Attributes:
        returncode: torchrun's exit code.
        failed_ranks: global ranks that failed on their own (not those torchrun stopped after
            the first failure); empty when torchrun failed before or without a worker failing.
        log_dir: the run's log directory (``rank_N.log``, ``torchrun.log``).
    """

    def __init__(
        self, message: str, *, returncode: int, failed_ranks: list[int], log_dir: Path
    ) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.failed_ranks = failed_ranks
        self.log_dir = log_dir


@dataclass(frozen=True)
class LaunchResult:
    """What :func:`launch` reports about a job that finished successfully.

    Attributes:
        run_dir: the run directory.
        returncode: torchrun's exit code (0).
        wall_seconds: from the call to the end of the job.
        first_step_seconds: from the call to the first ``phase == "train"`` progress event
            (start-up cost: interpreter, torch import, rendezvous, model and data loading);
            None when the workers never reported a training step.
        last_event: the last progress event received, or None.
    """

    run_dir: Path
    returncode: int
    wall_seconds: float
    first_step_seconds: float | None
    last_event: dict[str, Any] | None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def rdzv_id(spec: JobSpec) -> str:
    """The rendezvous id of a run: the same on every node of a multi-node job.

    Derived from the method and the run directory's name (not its full path, which may differ
    between machines), so every node's launcher computes it without talking to the others.
    """
    name = Path(spec.run_dir).resolve().name
    digest = hashlib.sha1(f"{spec.method}\0{name}".encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:40] or "run"
    return f"wmtp-{slug}-{digest}"


def build_command(
    spec: JobSpec, *, worker_module: str, spec_path: Path, torchrun_log_dir: Path
) -> list[str]:
    """The torchrun command line of ``spec`` (see ``docs/training_launcher.md``)."""
    rt = spec.runtime
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={rt.nnodes}",
        f"--nproc-per-node={rt.nproc_per_node}",
        f"--node-rank={rt.node_rank}",
        f"--rdzv-id={rdzv_id(spec)}",
    ]
    if rt.nnodes == 1:
        # Port 0: the rendezvous store binds a port the OS picks at bind time, so concurrent
        # runs cannot collide (a port chosen here and bound later in torchrun could be taken in
        # between). --local-addr makes MASTER_ADDR 127.0.0.1 instead of the machine's FQDN.
        cmd += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={_LOOPBACK}:0",
            f"--local-addr={_LOOPBACK}",
        ]
    else:
        # Static rendezvous on the endpoint (a TCP store that node_rank 0 hosts): global rank
        # = node_rank * nproc_per_node + local_rank, so node_rank 0 always holds rank 0, the
        # rank that writes the model and the history. c10d's dynamic rendezvous would order
        # the nodes by hostname and pid instead, and the outputs would land on any node.
        host, port = _split_endpoint(rt.rdzv_endpoint)
        cmd += ["--rdzv-backend=static", f"--master-addr={host}", f"--master-port={port}"]
        if _is_loopback(rt.rdzv_endpoint):
            # Every "node" is on this machine (a test, or several jobs per host): keep the
            # workers' MASTER_ADDR on loopback too.
            cmd += [f"--local-addr={_LOOPBACK}"]
    cmd += [
        "--max-restarts=0",
        f"--shutdown-timeout={STOP_GRACE_SECONDS}",
        # Every rank's stdout/stderr goes to files that the launcher tails (torchrun's --tee
        # would prefix lines but cuts lines that are being written in two pieces).
        f"--log-dir={torchrun_log_dir}",
        "--redirects=3",
        "-m",
        worker_module,
        str(spec_path),
    ]
    return cmd


def _split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> ``(host, port)``; a clear error otherwise."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(
            f"runtime.rdzv_endpoint={endpoint!r}: expected host:port (e.g. 10.0.0.1:29500)"
        )
    return host.strip("[]"), int(port)


def _is_loopback(endpoint: str) -> bool:
    host = endpoint.rsplit(":", 1)[0].strip("[]") if ":" in endpoint else endpoint
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_env(spec: JobSpec, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of torchrun and its workers: the caller's plus the job's settings."""
    rt = spec.runtime
    omp = rt.omp_threads or max(1, (os.cpu_count() or 1) // rt.nproc_per_node)
    env = dict(os.environ)
    env.update(
        {"OMP_NUM_THREADS": str(omp), "PYTHONUNBUFFERED": "1", "KEDRO_DISABLE_TELEMETRY": "1"}
    )
    env.update(extra_env or {})
    return env


def launch(
    spec: JobSpec,
    *,
    worker_module: str = "weighted_mtp.training.worker",
    extra_env: dict[str, str] | None = None,
    show_progress: bool = True,
) -> LaunchResult:
    """Run the job described by ``spec`` under torchrun and wait for it to finish.

    Args:
        spec: the job; written to ``spec.spec_path`` first. ``spec.runtime`` gives the process
            layout (``nproc_per_node``, ``nnodes``, ``node_rank``, ``rdzv_endpoint``,
            ``omp_threads``).
        worker_module: module run by every rank as ``python -m <worker_module> <spec.json>``.
        extra_env: added to the workers' environment (e.g. ``MLFLOW_RUN_ID``).
        show_progress: render progress events as a rich progress bar when stdout is a
            terminal; otherwise (or when False) they become periodic INFO log lines.

    Returns:
        A :class:`LaunchResult`.

    Raises:
        TrainingJobError: torchrun exited with a non-zero code (a worker failed, or the
            rendezvous did); the message names the failed rank(s), their exit code and the
            traceback or last lines of their log.
        KeyboardInterrupt, SystemExit: after stopping every process of the job, when the
            caller was interrupted (SIGINT) or terminated (SIGTERM, re-raised as
            ``SystemExit(143)``).
    """
    t0 = time.monotonic()
    spec_path = spec.write()
    log_dir = spec.log_dir
    torchrun_dir = log_dir / _TORCHRUN_SUBDIR
    torchrun_dir.mkdir(parents=True, exist_ok=True)
    old_attempt_dirs = set(torchrun_dir.iterdir())

    cmd = build_command(
        spec, worker_module=worker_module, spec_path=spec_path, torchrun_log_dir=torchrun_dir
    )
    env = build_env(spec, extra_env)
    # torchrun copies the root-cause worker's error file here, or writes its own error (e.g. a
    # rendezvous timeout); the workers get their own file from torchrun.
    error_file = log_dir / _TORCHRUN_ERROR_FILE
    error_file.unlink(missing_ok=True)
    env["TORCHELASTIC_ERROR_FILE"] = str(error_file)
    logger.info(
        "launching %s x %d process(es) on node %d/%d; logs in %s",
        worker_module,
        spec.runtime.nproc_per_node,
        spec.runtime.node_rank,
        spec.runtime.nnodes,
        log_dir,
    )
    logger.debug("torchrun command: %s", " ".join(cmd))

    events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
    tailer = _RankLogTailer(
        torchrun_dir,
        ignore=old_attempt_dirs,
        log_dir=log_dir,
        nnodes=spec.runtime.nnodes,
        node_rank=spec.runtime.node_rank,
        on_event=lambda event: events.put((time.monotonic() - t0, event)),
    )
    renderer: _LogProgress | _RichProgress = _make_renderer(spec, show_progress)
    first_step_seconds: float | None = None
    last_event: dict[str, Any] | None = None

    def handle(seconds: float, event: dict[str, Any]) -> None:
        nonlocal first_step_seconds, last_event, renderer
        last_event = event
        if first_step_seconds is None and event.get("phase", "train") == "train":
            first_step_seconds = seconds
        try:
            renderer.update(event)
        except Exception:
            # A display problem (odd terminal, unexpected event values) must not stop a run.
            logger.warning("progress display failed; logging progress instead", exc_info=True)
            with contextlib.suppress(Exception):
                renderer.close()
            renderer = _LogProgress()

    def drain_events(wait: float = 0.0) -> None:
        with contextlib.suppress(queue.Empty):
            # Block for the first one only: this is also the loop's sleep.
            item = events.get(timeout=wait) if wait > 0 else events.get_nowait()
            handle(*item)
            while True:
                handle(*events.get_nowait())

    torchrun_out = _TorchrunOutput(log_dir / _TORCHRUN_LOG)
    with _sigterm_raises_systemexit(), contextlib.ExitStack() as stack:
        # Run last to first on the way out: stop the processes, then collect their output.
        stack.callback(lambda: renderer.close())  # the renderer in use then
        stack.callback(torchrun_out.join)
        stack.callback(tailer.stop)
        proc = subprocess.Popen(
            _with_parent_death_signal(cmd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        tracker = _JobProcesses(proc)
        # Whatever ends this block early (Ctrl-C, SIGTERM, a bug here), the job is stopped.
        stack.callback(tracker.stop_all)
        torchrun_out.start(proc.stdout)
        tailer.start()

        next_scan = 0.0
        while proc.poll() is None:
            if time.monotonic() >= next_scan:
                # Workers are recorded while torchrun is alive: once it dies they are
                # re-parented and could not be found as its children any more.
                tracker.refresh()
                next_scan = time.monotonic() + 1.0
            drain_events(wait=_POLL_SECONDS)
        returncode = proc.returncode
        # Normally nothing is left; workers of a torchrun that crashed would be.
        tracker.stop_all()
        tailer.stop()
        drain_events()
        renderer.close()
        torchrun_out.join()

    wall = time.monotonic() - t0
    if returncode != 0:
        raise _job_error(returncode, torchrun_dir, old_attempt_dirs, tailer, torchrun_out)
    logger.info("training job finished in %.1f s", wall)
    return LaunchResult(
        run_dir=spec.run_path,
        returncode=returncode,
        wall_seconds=wall,
        first_step_seconds=first_step_seconds,
        last_event=last_event,
    )


# --------------------------------------------------------------------------- signals


@contextlib.contextmanager
def _sigterm_raises_systemexit() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` for the duration, so cleanup code runs.

    Only in the main thread (signal handlers can only be set there) and only when nobody else
    handles SIGTERM: a framework's own handler is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        logger.warning("received SIGTERM: stopping the training job")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _no_sigint() -> Iterator[None]:
    # A second Ctrl-C while the job is being stopped would abandon its processes.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# Run in a fresh interpreter (-I -S: no site, nothing imported but os, signal, ctypes) that then
# execs torchrun: prctl(PR_SET_PDEATHSIG) survives the exec, and the pid stays torchrun's.
_PDEATHSIG_EXEC = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the launcher died before prctl took effect
    sys.exit(128 + int(signal.SIGTERM))
os.execv(sys.argv[2], sys.argv[2:])
"""


def _with_parent_death_signal(cmd: list[str]) -> list[str]:
    """``cmd`` behind an exec shim that asks Linux to SIGTERM torchrun if this process dies
    (even by SIGKILL); torchrun then stops its workers itself.

    Not a ``preexec_fn``: with one, CPython forks (no vfork) and runs Python in the child
    before the exec, including every ``os.register_at_fork`` hook (torch's calls
    ``torch.get_num_threads()``). Forked from a non-main thread of a process whose torch
    state earlier in-process work left behind (a test session, a notebook), that child
    died with SIGSEGV before torchrun started: "torchrun exited with code -11" and an
    empty torchrun.log. Without ``preexec_fn`` nothing but C runs between fork and exec.
    The signal is tied to the launching thread, as before: :func:`launch` returns only
    after torchrun has exited.
    """
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_EXEC, str(os.getpid()), *cmd]


# --------------------------------------------------------------------------- processes


def _process_table() -> list[tuple[int, int, int, bool]]:
    """``(pid, ppid, pgid, is_zombie)`` of every process, from /proc or else ``ps``."""
    rows: list[tuple[int, int, int, bool]] = []
    proc = Path("/proc")
    if (proc / "self" / "stat").exists():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # exited meanwhile
            # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
            fields = stat[stat.rfind(")") + 2 :].split()
            rows.append((int(entry.name), int(fields[1]), int(fields[2]), fields[0] in "ZX"))
        return rows
    out = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid=,pgid=,stat="], capture_output=True, text=True, check=False
    ).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            rows.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[3].startswith("Z")))
    return rows


class _JobProcesses:
    """The process groups of one job: torchrun's and one per worker.

    torchrun starts each worker with ``start_new_session=True``, so a worker (and anything it
    forks, e.g. data-loader processes) is in its own process group, out of reach of a signal to
    torchrun's group; they are recorded here by pgid while torchrun is their parent.
    """

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.groups: set[int] = {proc.pid}
        self._stopped = False

    def refresh(self) -> set[int]:
        """Record torchrun's new children's groups; return the recorded groups still alive."""
        table = _process_table()
        for _pid, ppid, pgid, _zombie in table:
            if ppid == self.proc.pid and pgid != self.proc.pid:
                self.groups.add(pgid)
        alive = {pgid for _pid, _ppid, pgid, zombie in table if not zombie}
        # A group that emptied is forgotten: its id may later be reused by someone else's.
        self.groups &= alive | {self.proc.pid}
        return self.groups & alive

    def _signal(self, groups: set[int], sig: signal.Signals) -> None:
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)

    def stop_all(self) -> None:
        """SIGTERM every group of the job, SIGKILL what is left after the grace period, reap
        torchrun. Idempotent; does nothing when everything has already exited."""
        if self._stopped:
            return
        self._stopped = True
        with _no_sigint():
            alive = self.refresh()
            if not alive and self.proc.poll() is not None:
                return
            logger.warning("stopping the training job (pids/groups %s)", sorted(alive))
            # Workers are signalled directly too, in case torchrun is stuck or already gone.
            self._signal(alive, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while time.monotonic() < deadline:
                self.proc.poll()
                alive = self.refresh()
                if not alive and self.proc.returncode is not None:
                    break
                time.sleep(0.05)
            else:
                logger.warning("job still running after %ss: SIGKILL", STOP_GRACE_SECONDS)
                self._signal(alive, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_GRACE_SECONDS)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while (alive := self.refresh()) and time.monotonic() < deadline:
                self._signal(alive, signal.SIGKILL)
                time.sleep(0.05)
            if alive:
                logger.error("could not stop process groups %s", sorted(alive))


# --------------------------------------------------------------------------- output


class _TorchrunOutput(threading.Thread):
    """Copies torchrun's own output (agent messages, its failure summary) to ``torchrun.log``.

    Agent warnings/errors (glog-style ``W…``/``E…`` lines) are logged as warnings, the rest at
    DEBUG: the failure summary repeats what :class:`TrainingJobError` reports more readably.
    """

    _GLOG = re.compile(r"^[WEF]\d{4} ")

    def __init__(self, path: Path) -> None:
        super().__init__(name="torchrun-output", daemon=True)
        self.stream: IO[bytes] | None = None
        self.path = path
        self.lines: deque[str] = deque(maxlen=5000)

    def start(self, stream: IO[bytes] | None = None) -> None:  # type: ignore[override]
        """Start copying ``stream`` (torchrun's stdout+stderr pipe)."""
        self.stream = stream
        super().start()

    def run(self) -> None:
        if self.stream is None:
            return
        with self.stream, self.path.open("w", encoding="utf-8") as out:
            for raw in iter(self.stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                out.write(line + "\n")
                out.flush()
                self.lines.append(line)
                level = logging.WARNING if self._GLOG.match(line) else logging.DEBUG
                logger.log(level, "[torchrun] %s", line, extra={"markup": False})

    def join(self, timeout: float | None = None) -> None:
        """Wait for torchrun's output to end (no-op when never started)."""
        if self.ident is not None:
            super().join(timeout=STOP_GRACE_SECONDS if timeout is None else timeout)

    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class _TailedFile:
    path: Path
    local_rank: int
    is_stdout: bool
    offset: int = 0
    partial: bytes = b""


@dataclass
class _RankLogTailer:
    """Follows the per-rank files torchrun writes (``<dir>/<id>_*/attempt_*/<local_rank>/
    {stdout,stderr}.log``), logs every line as ``[rank N] ...``, appends it to
    ``log_dir/rank_N.log`` and hands progress events (from stdout) to ``on_event``."""

    torchrun_dir: Path
    ignore: set[Path]
    log_dir: Path
    nnodes: int
    node_rank: int
    on_event: Callable[[dict[str, Any]], None]
    _files: dict[Path, _TailedFile] = field(default_factory=dict)
    _outputs: dict[int, IO[str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rank-log-tailer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Read what is left, then close the rank logs. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        for out in self._outputs.values():
            out.close()
        self._outputs.clear()

    def label(self, local_rank: int) -> str:
        # Global ranks are assigned by the rendezvous, not by node_rank, so on a multi-node
        # job the local rank is named with its node instead of guessing a global rank.
        if self.nnodes == 1:
            return f"rank {local_rank}"
        return f"node {self.node_rank} local rank {local_rank}"

    def rank_log(self, local_rank: int) -> Path:
        """The combined stdout+stderr file of a local rank."""
        if self.nnodes == 1:
            return self.log_dir / f"rank_{local_rank}.log"
        return self.log_dir / f"node{self.node_rank}_local_rank_{local_rank}.log"

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            self._discover()
            for tailed in list(self._files.values()):
                self._read(tailed, final=stopping)
            if stopping:
                return
            self._stop.wait(_POLL_SECONDS)

    def _discover(self) -> None:
        for run_dir in self.torchrun_dir.glob("*"):
            if run_dir in self.ignore or not run_dir.is_dir():
                continue
            for path in run_dir.glob("attempt_*/*/std*.log"):
                if path in self._files or not path.parent.name.isdigit():
                    continue
                if path.name in ("stdout.log", "stderr.log"):
                    self._files[path] = _TailedFile(
                        path, int(path.parent.name), path.name == "stdout.log"
                    )

    def _read(self, tailed: _TailedFile, *, final: bool) -> None:
        try:
            with tailed.path.open("rb") as fh:
                fh.seek(tailed.offset)
                data = fh.read()
        except OSError:
            return
        tailed.offset += len(data)
        data = tailed.partial + data
        # A line is handled only once complete: print() writes text and newline separately.
        *lines, tailed.partial = data.split(b"\n")
        if final and tailed.partial:
            lines.append(tailed.partial)
            tailed.partial = b""
        for raw in lines:
            self._line(tailed, raw.decode("utf-8", errors="replace").rstrip("\r"))

    def _line(self, tailed: _TailedFile, line: str) -> None:
        out = self._outputs.get(tailed.local_rank)
        if out is None:
            out = self.rank_log(tailed.local_rank).open("w", encoding="utf-8")
            self._outputs[tailed.local_rank] = out
        out.write(line + "\n")
        out.flush()
        if tailed.is_stdout:
            event = progress.parse_event(line)
            if event is not None:
                self.on_event(event)
                return
        logger.info("[%s] %s", self.label(tailed.local_rank), line, extra={"markup": False})


# --------------------------------------------------------------------------- progress


class _LogProgress:
    """Progress as INFO lines: at each further 10% of the steps, or when the last line is
    older than :data:`PROGRESS_LOG_INTERVAL_SECONDS` (so CI output and log files stay short)."""

    def __init__(self) -> None:
        self._last_log = time.monotonic()
        self._last_decile = -1
        self._first: tuple[float, int] | None = None

    def update(self, event: dict[str, Any]) -> None:
        phase = event.get("phase", "train")
        if phase != "train":
            logger.info("%s", _describe(event))
            return
        now = time.monotonic()
        step, max_steps = event.get("step"), event.get("max_steps")
        if not isinstance(step, int):
            return
        if self._first is None:
            self._first = (now, step)
        decile = step * 10 // max_steps if isinstance(max_steps, int) and max_steps > 0 else -1
        due = now - self._last_log >= PROGRESS_LOG_INTERVAL_SECONDS
        if decile > self._last_decile or due or step == max_steps:
            self._last_decile = max(decile, self._last_decile)
            self._last_log = now
            text = _describe(event)
            eta = self._eta(now, step, max_steps)
            logger.info("%s%s", text, f" | ETA {_hms(eta)}" if eta is not None else "")

    def _eta(self, now: float, step: int, max_steps: Any) -> float | None:
        if self._first is None or not isinstance(max_steps, int):
            return None
        t_first, step_first = self._first
        if step <= step_first:
            return None
        return (now - t_first) / (step - step_first) * max(0, max_steps - step)

    def close(self) -> None:
        pass


class _RichProgress:
    """A rich progress bar (step/max_steps, loss, tokens/s, ETA) on the console that Kedro's
    rich logging handler also writes to, so log lines scroll above the bar."""

    def __init__(self, description: str) -> None:
        self._description = description
        self._progress: Any = None
        self._task: Any = None

    def update(self, event: dict[str, Any]) -> None:
        phase = event.get("phase", "train")
        step, max_steps = event.get("step"), event.get("max_steps")
        if phase != "train" or not isinstance(step, int):
            logger.info("%s", _describe(event))
            return
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self._description,
                total=max_steps if isinstance(max_steps, int) else None,
                metrics="",
            )
        self._progress.update(self._task, completed=step, metrics=_metrics(event))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _make_renderer(spec: JobSpec, show_progress: bool) -> _LogProgress | _RichProgress:
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        tty = False
    if show_progress and tty:
        return _RichProgress(f"{spec.method} ({spec.runtime.nproc_per_node}x)")
    return _LogProgress()


def _metrics(event: dict[str, Any]) -> str:
    parts = []
    for key, fmt in (("loss", "loss {:.4f}"), ("val_loss", "val_loss {:.4f}"), ("lr", "lr {:.2e}")):
        if isinstance(event.get(key), (int, float)):
            parts.append(fmt.format(event[key]))
    if isinstance(event.get("tokens_per_s"), (int, float)):
        parts.append(f"{event['tokens_per_s']:,.0f} tok/s")
    return " | ".join(parts)


def _describe(event: dict[str, Any]) -> str:
    phase = event.get("phase", "train")
    head = str(phase)
    step, max_steps = event.get("step"), event.get("max_steps")
    if isinstance(step, int):
        head += f" step {step}" + (f"/{max_steps}" if isinstance(max_steps, int) else "")
        if isinstance(max_steps, int) and max_steps > 0:
            head += f" ({100 * step // max_steps}%)"
    rest = [_metrics(event)] if _metrics(event) else []
    if "message" in event:
        rest.append(str(event["message"]))
    return " | ".join([head, *rest])


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# --------------------------------------------------------------------------- failures


@dataclass
class _Failure:
    rank: int
    local_rank: int
    exitcode: int
    root_cause: bool


_FAILURE_RE = re.compile(
    r"rank\s*:\s*(?P<rank>\d+)\s*\(local_rank:\s*(?P<local>\d+)\)\s*\n"
    r"\s*exitcode\s*:\s*(?P<code>-?\d+)"
)


def _parse_failures(torchrun_text: str) -> list[_Failure]:
    """Failed ranks from torchrun's ``ChildFailedError`` summary (the only place that gives
    each rank's exit code); empty when torchrun printed none."""
    root_at = torchrun_text.rfind("Root Cause")
    start = torchrun_text.rfind("Failures:")
    if start < 0:
        return []
    failures: dict[int, _Failure] = {}
    for match in _FAILURE_RE.finditer(torchrun_text, start):
        failure = _Failure(
            rank=int(match["rank"]),
            local_rank=int(match["local"]),
            exitcode=int(match["code"]),
            root_cause=0 <= root_at < match.start(),
        )
        if failure.rank not in failures or failure.root_cause:
            failures[failure.rank] = failure
    return sorted(failures.values(), key=lambda f: f.rank)


def _error_file_traceback(path: Path) -> str | None:
    """The traceback that ``@record`` wrote for a worker, or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, dict):
        extra = message.get("extraInfo") or {}
        text = extra.get("py_callstack") or message.get("message")
        return str(text) if text else None
    return str(message) if message else None


def _tail(path: Path, n: int) -> list[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            lines = [line.rstrip("\n") for line in fh if progress.parse_event(line) is None]
    except OSError:
        return []
    return lines[-n:]


def _signal_name(code: int) -> str:
    with contextlib.suppress(ValueError):
        return f" ({signal.Signals(-code).name})" if code < 0 else ""
    return ""


def _job_error(
    returncode: int,
    torchrun_dir: Path,
    old_attempt_dirs: set[Path],
    tailer: _RankLogTailer,
    torchrun_out: _TorchrunOutput,
) -> TrainingJobError:
    failures = _parse_failures(torchrun_out.text())
    attempts = sorted(
        (
            p
            for d in torchrun_dir.glob("*")
            if d not in old_attempt_dirs
            for p in d.glob("attempt_*")
        ),
        key=lambda p: int(p.name.removeprefix("attempt_") or 0),
    )
    attempt = attempts[-1] if attempts else None

    if not failures and attempt is not None:
        # No summary (torchrun killed, format changed): ranks that left an error file failed.
        for rdir in sorted(attempt.iterdir()):
            if rdir.name.isdigit() and (rdir / "error.json").exists():
                local = int(rdir.name)
                failures.append(_Failure(local, local, returncode, root_cause=True))

    culprits = [f for f in failures if f.root_cause or f.exitcode > 0] or failures
    stopped = [f for f in failures if f not in culprits]
    if culprits:
        names = ", ".join(
            f"rank {f.rank} (exit code {f.exitcode}{_signal_name(f.exitcode)})" for f in culprits
        )
        lines = [f"training job failed (torchrun exit code {returncode}): {names}"]
        if stopped:
            lines.append(
                "then stopped by torchrun: "
                + ", ".join(f"rank {f.rank}{_signal_name(f.exitcode)}" for f in stopped)
            )
    else:
        lines = [f"training job failed: torchrun exited with code {returncode}"]

    for failure in culprits:
        log = tailer.rank_log(failure.local_rank)
        trace = None
        if attempt is not None:
            trace = _error_file_traceback(attempt / str(failure.local_rank) / "error.json")
        if trace:
            body = trace.rstrip("\n").splitlines()[-ERROR_TAIL_LINES:]
            lines.append(f"--- rank {failure.rank} traceback (full log: {log}):")
        else:
            body = _tail(log, ERROR_TAIL_LINES)
            lines.append(f"--- rank {failure.rank}: last {len(body)} lines of {log}:")
        lines.extend(body)
    if not culprits:
        trace = _error_file_traceback(tailer.log_dir / _TORCHRUN_ERROR_FILE)
        if trace:
            lines.append("--- torchrun error:")
            lines.extend(trace.rstrip("\n").splitlines()[-ERROR_TAIL_LINES:])
        tail = list(torchrun_out.lines)[-ERROR_TAIL_LINES:]
        lines.append(f"--- last {len(tail)} lines of {torchrun_out.path}:")
        lines.extend(tail)
    return TrainingJobError(
        "\n".join(lines),
        returncode=returncode,
        failed_ranks=[f.rank for f in culprits],
        log_dir=tailer.log_dir,
    )
