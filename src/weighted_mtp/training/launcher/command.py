"""The torchrun command line and environment of a job: rendezvous (id, endpoint, backend),
process layout, torchrun's per-rank log files, and the variables the workers start with."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import sys
from pathlib import Path

from weighted_mtp.training.launcher.launch_spec import LaunchSpec
from weighted_mtp.training.launcher.processes import STOP_GRACE_SECONDS

_LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def rdzv_id(spec: LaunchSpec) -> str:
    """The rendezvous id of a run: the same on every node of a multi-node job.

    Derived from the method and the run directory's name (not its full path, which may differ
    between machines), so every node's launcher computes it without talking to the others.
    """
    name = Path(spec.run_path).resolve().name
    digest = hashlib.sha1(f"{spec.method}\0{name}".encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:40] or "run"
    return f"wmtp-{slug}-{digest}"


def build_command(
    spec: LaunchSpec, *, worker_module: str, spec_path: Path, torchrun_log_dir: Path
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
        # (torchrun's --standalone would say localhost:0, which may resolve to ::1, and a
        # random id instead of one naming the run.)
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


def build_env(spec: LaunchSpec, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of torchrun and its workers: the caller's plus the job's settings."""
    rt = spec.runtime
    omp = rt.omp_threads or max(1, (os.cpu_count() or 1) // rt.nproc_per_node)
    env = dict(os.environ)
    env.update(
        {"OMP_NUM_THREADS": str(omp), "PYTHONUNBUFFERED": "1", "KEDRO_DISABLE_TELEMETRY": "1"}
    )
    env.update(extra_env or {})
    return env
