"""Fixtures shared across the suite: local servers on 127.0.0.1, started and stopped here, and
the logging configuration of the tests (log files under a temporary directory)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

PROJECT = Path(__file__).resolve().parents[1]


def _test_logging_config(log_dir: Path) -> Path:
    """The project's conf/logging.yml with every log file moved into ``log_dir``."""
    config = yaml.safe_load((PROJECT / "conf" / "logging.yml").read_text(encoding="utf-8"))
    for handler in config.get("handlers", {}).values():
        if "filename" in handler:
            handler["filename"] = str(log_dir / Path(handler["filename"]).name)
    path = log_dir / "logging.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# Kedro applies its logging configuration when kedro.framework.project is first imported (by a
# test module, below this file) and reads conf/logging.yml relative to the working directory:
# with the project as the working directory, every test and every `kedro` subprocess would
# append to the project's info.log. KEDRO_LOGGING_CONFIG takes precedence, here and in the
# subprocesses, which inherit the environment.
LOG_DIR = Path(tempfile.mkdtemp(prefix="weighted-mtp-test-logs-"))
os.environ["KEDRO_LOGGING_CONFIG"] = str(_test_logging_config(LOG_DIR))
if "kedro.framework.project" in sys.modules:  # imported early by a plugin: apply it now
    from kedro.framework.project import LOGGING

    LOGGING.configure(yaml.safe_load(Path(os.environ["KEDRO_LOGGING_CONFIG"]).read_text()))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(LOG_DIR, ignore_errors=True)


@pytest.fixture
def restore_excepthook() -> Iterator[None]:
    """For a test that makes a process group in the pytest process: init_process_group wraps
    sys.excepthook (a "[rankN]" prefix) and destroy_process_group leaves it wrapped, which
    later tests (test_logging's) would see."""
    hook = sys.excepthook
    yield
    sys.excepthook = hook


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s: {log.read_text()[-2000:]}")


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """An S3-compatible endpoint (moto_server) on 127.0.0.1; yields its URL.

    Sets fake AWS credentials in the environment for the session so that s3fs/boto3 never
    look for real ones.
    """
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    bin_dir = Path(sys.executable).parent
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    fake = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {key: os.environ.get(key) for key in fake}
    os.environ.update(fake)
    try:
        _wait_http(url + "/moto-api/", proc, 30, log)
        yield url
    finally:
        _stop_group(proc)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """An MLflow tracking server (sqlite backend) on 127.0.0.1; yields its tracking URI."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    log = root / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--default-artifact-root",
                str(root / "artifacts"),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/health", proc, 90, log)
        yield url
    finally:
        _stop_group(proc)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """A copy of the project (notebooks included) after one tiny default `kedro run`: the
    whole experiment with a few steps per training job (``tests.tiny_project``). Shared, read
    only, by the tests of its outputs (the run itself, the notebook, kedro viz); a test that
    runs more pipelines copies it first."""
    from tests.tiny_project import copy_project, params_arg, run_kedro, tiny_settings

    root = copy_project(tmp_path_factory.mktemp("default_run"), notebooks=True)
    run_kedro(
        root,
        "--params",
        params_arg(tiny_settings()),
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        timeout=1500,
    )
    return root
