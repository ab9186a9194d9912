"""Resume checkpoints: atomic, verified, with fallback; a killed run continues to exactly the
losses of an uninterrupted one, from local disk or from S3 (moto_server on 127.0.0.1); a
failed upload is reported and fails the run at the end."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch

from weighted_mtp.training.checkpoint import (
    CheckpointError,
    TrainerState,
    choose_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from weighted_mtp.training.config import PARAMS_BY_METHOD, RuntimeParams
from weighted_mtp.training.data_plan import build_data_plan
from weighted_mtp.training.launcher import TrainingJobError, launch
from weighted_mtp.training.run_identity import RunIdentity
from weighted_mtp.training.spec import JobSpec

from .corpus import Corpus, build_corpus


# --------------------------------------------------------------------------- in process
def _identity(plan: str = "p", world: int = 1) -> RunIdentity:
    return RunIdentity.of({"data_plan": plan, "runtime": {"world_size": world}})


ID = _identity()


def _state(step: int, plan: str = "p", world: int = 1) -> TrainerState:
    identity = _identity(plan, world)
    return TrainerState(
        step=step,
        tokens_seen=10 * step,
        plan_sha256=plan,
        world_size=world,
        method="baseline",
        scheduler={"last_epoch": step},
        run_identity=identity.digest,
        identity_components=identity.components,
    )


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return model, opt


def test_save_is_complete_and_restores_exactly(tmp_path, tiny):
    model, opt = tiny
    path = save_checkpoint(tmp_path, model, opt, _state(3), keep_last=2)
    assert path.name == "step_00000003" and not list(tmp_path.glob(".*partial"))
    verify_checkpoint(path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exp_avg = opt.state_dict()["state"][0]["exp_avg"].clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    opt.state[next(iter(model.parameters()))]["exp_avg"].zero_()
    state = load_checkpoint(path, model, opt, identity=ID)
    assert state.step == 3 and state.tokens_seen == 30
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], exp_avg)


def test_retention_keeps_the_newest(tmp_path, tiny):
    model, opt = tiny
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, model, opt, _state(step), keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6]


def test_corrupt_or_missing_file_is_named_and_auto_falls_back(tmp_path, tiny, caplog):
    model, opt = tiny
    save_checkpoint(tmp_path, model, opt, _state(2), keep_last=3)
    newest = save_checkpoint(tmp_path, model, opt, _state(4), keep_last=3)
    shard = next((newest / "state").glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{shard.name}.*(sha256|bytes)"):
        verify_checkpoint(newest)
    with pytest.raises(CheckpointError, match=shard.name):
        choose_checkpoint(tmp_path, str(newest), ID)
    with caplog.at_level(logging.WARNING):
        chosen = choose_checkpoint(tmp_path, "auto", ID)
    assert chosen is not None and chosen.name == "step_00000002"
    assert "step 4 is unusable" in caplog.text and shard.name in caplog.text
    (chosen / "rng_rank0.pt").unlink()
    with pytest.raises(CheckpointError, match="rng_rank0.pt: missing"):
        verify_checkpoint(chosen)
    assert choose_checkpoint(tmp_path, "auto", ID) is None


def test_a_changed_run_starts_afresh_under_auto_but_not_by_path(tmp_path, tiny, caplog):
    model, opt = tiny
    path = save_checkpoint(tmp_path, model, opt, _state(2, plan="old"), keep_last=2)
    with caplog.at_level(logging.WARNING):
        assert choose_checkpoint(tmp_path, "auto", _identity("new")) is None
    assert "data_plan: old -> new" in caplog.text
    with pytest.raises(CheckpointError, match="data_plan: old -> new"):
        choose_checkpoint(tmp_path, str(path), _identity("new"))
    with pytest.raises(CheckpointError, match="runtime.world_size: 1 -> 2"):
        choose_checkpoint(tmp_path, str(path), _identity("old", world=2))
    assert choose_checkpoint(tmp_path, "never", _identity("old")) is None
    assert choose_checkpoint(tmp_path, str(path), _identity("old")) == path


# --------------------------------------------------------------------------- torchrun
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def _spec(corpus: Corpus, run_dir: Path, ckpt: Path, url: str | None = None, options=None):
    params = PARAMS_BY_METHOD["baseline"](
        max_steps=10,
        batch_size=2,
        lr=2e-3,
        warmup_steps=1,
        eval_every=5,
        val_samples=4,
        max_seq_len=256,
        chunk_size=100,
        save_every=2,
        keep_last=2,
    )
    spec = JobSpec(
        method="baseline",
        run_dir=str(run_dir),
        params=params.model_dump(),
        runtime=RuntimeParams(nproc_per_node=2, strategy="fsdp", omp_threads=1),
        init_model=str(corpus.model_dir),
        train_jsonl=str(corpus.train_jsonl),
        valid_jsonl=str(corpus.valid_jsonl),
        checkpoint_dir=str(ckpt),
        checkpoint_url=url,
        storage_options=options or {},
    )
    run_dir.mkdir(parents=True)
    build_data_plan(
        "baseline", params, corpus.train_metadata, corpus.valid_metadata, world_size=2
    ).save(spec.plan_path)
    return spec


def _identity_dir(root: Path) -> Path:
    """The one run identity's checkpoint directory under a method's checkpoint location."""
    (found,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return found


def _losses(spec: JobSpec) -> dict[int, float]:
    lines = spec.history_path.read_text().splitlines()
    return {r["step"]: r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r}


def _worker_pids(spec: JobSpec) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"weighted_mtp.training.worker" in cmd and str(spec.spec_path).encode() in cmd:
            pids.append(int(proc.name))
    return pids


def _launch_and_kill(spec: JobSpec, after_step: int) -> None:
    """Run ``spec`` and SIGKILL one worker once ``after_step`` steps are in the history."""
    failure: list[BaseException] = []

    def run():
        try:
            launch(spec, show_progress=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline:
        if spec.history_path.exists() and len(_losses(spec)) >= after_step:
            break
        time.sleep(0.05)
    pids = _worker_pids(spec)
    assert pids, "no worker process found to kill"
    os.kill(pids[-1], signal.SIGKILL)
    thread.join(120)
    assert failure and isinstance(failure[0], TrainingJobError), failure


@pytest.mark.distributed
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_losses(corpus, tmp_path):
    reference = _spec(corpus, tmp_path / "ref", tmp_path / "ckpt_ref")
    launch(reference, show_progress=False)
    expected = _losses(reference)
    assert sorted(expected) == list(range(1, 11))

    first = _spec(corpus, tmp_path / "first", tmp_path / "ckpt")
    _launch_and_kill(first, after_step=5)
    done = _losses(first)
    assert len(done) < 10  # it really was interrupted
    saved = [s for s, _ in list_checkpoints(_identity_dir(tmp_path / "ckpt"))]
    assert saved and max(saved) < 10

    second = _spec(corpus, tmp_path / "second", tmp_path / "ckpt")
    launch(second, show_progress=False)
    resumed = _losses(second)
    assert sorted(resumed) == list(range(1, 11))  # the history carries on across the resume
    start = max(saved)
    log = (second.log_dir / "rank_0.log").read_text()
    assert f"resuming from step {start} of 10" in log
    for step in range(start + 1, 11):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


@pytest.mark.distributed
@pytest.mark.slow
def test_resume_from_s3_after_losing_the_machine(corpus, tmp_path, moto_s3_endpoint):
    options = {"client_kwargs": {"endpoint_url": moto_s3_endpoint}}
    fs = fsspec.filesystem("s3", **options)
    fs.mkdir("wmtp-ckpt")
    url = "s3://wmtp-ckpt/checkpoints/baseline"
    reference = _spec(corpus, tmp_path / "ref", tmp_path / "ckpt_ref")
    launch(reference, show_progress=False)
    expected = _losses(reference)

    first = _spec(corpus, tmp_path / "first", tmp_path / "machine1", url, options)
    _launch_and_kill(first, after_step=6)
    time.sleep(1.0)
    run_url = f"{url}/{_identity_dir(tmp_path / 'machine1').name}"  # the identity's directory
    remote = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(run_url) if "step_" in p)
    assert remote, "nothing reached S3 before the kill"
    # A new machine: an empty local checkpoint directory, the checkpoints only on S3.
    second = _spec(corpus, tmp_path / "second", tmp_path / "machine2", url, options)
    launch(second, show_progress=False)
    log = (second.log_dir / "rank_0.log").read_text()
    assert "fetched checkpoint of step" in log and "resuming from step" in log
    resumed = _losses(second)
    for step in range(min(int(r[5:]) for r in remote) + 1, 11):
        if step in resumed:
            assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step
    assert max(resumed) == 10
    assert fs.exists(f"{run_url}/step_00000010/manifest.json")


@pytest.mark.distributed
@pytest.mark.slow
def test_failed_upload_is_reported_and_fails_the_run(corpus, tmp_path, moto_s3_endpoint):
    from tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    options = {
        "client_kwargs": {"endpoint_url": dead},
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }
    spec = _spec(corpus, tmp_path / "run", tmp_path / "ckpt", "s3://wmtp-none/ckpt", options)
    os.environ["WMTP_CHECKPOINT_UPLOAD_RETRIES"] = "2"
    os.environ["WMTP_CHECKPOINT_UPLOAD_BACKOFF_S"] = "0.1"
    try:
        with pytest.raises(TrainingJobError, match="never reached s3://wmtp-none/ckpt"):
            launch(spec, show_progress=False)
    finally:
        os.environ.pop("WMTP_CHECKPOINT_UPLOAD_RETRIES")
        os.environ.pop("WMTP_CHECKPOINT_UPLOAD_BACKOFF_S")
    log = (spec.log_dir / "rank_0.log").read_text()
    assert "could not be uploaded" in log
    assert (spec.final_model_dir / "model.safetensors").exists()  # the model is kept
    assert list_checkpoints(_identity_dir(tmp_path / "ckpt"))  # and the checkpoints, locally
    assert np.isfinite(list(_losses(spec).values())).all()
