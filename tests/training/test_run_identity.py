"""Run identity: resume continues only the same experiment. A changed learning rate, a
retrained critic (a new init-model fingerprint) or a changed Rho-1 top_k starts from step 1
and says why in one line; operational knobs do not; another run's checkpoints are never
pruned; an explicit checkpoint of another identity is refused. Rank 0's long I/O (resume
download + verification, the SHA256 manifest, the final upload) happens while the other ranks
wait outside the training collectives, with an explicit timeout."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.micro import build_micro_mtp
from weighted_mtp.model_io.model_dir import save_model_dir
from weighted_mtp.models import ModelArgs
from weighted_mtp.pipelines.training_nodes import job_identity
from weighted_mtp.training import checkpoint
from weighted_mtp.training.checkpoint import (
    CheckpointError,
    TrainerState,
    choose_checkpoint,
    fresh_start_reason,
    identity_root,
    list_checkpoints,
    local_other_runs,
    save_checkpoint,
    verify_checkpoint,
)
from weighted_mtp.training.checkpoint_storage import CheckpointStorage
from weighted_mtp.training.config import PARAMS_BY_METHOD, RuntimeParams
from weighted_mtp.training.data_plan import build_data_plan
from weighted_mtp.training.launcher import launch
from weighted_mtp.training.run_identity import (
    RunIdentity,
    identity_differences,
    model_fingerprint,
    run_identity,
)
from weighted_mtp.training.spec import JobSpec

from . import io_wait_worker
from .corpus import Corpus, build_corpus

ARGS = ModelArgs(
    dim=32, n_layers=3, n_heads=2, n_kv_heads=1, vocab_size=64, multiple_of=16, n_future_tokens=2
)


def _model_dir(path: Path, seed: int) -> Path:
    save_model_dir(build_micro_mtp(ARGS, seed=seed), ARGS, b"tokenizer", path, origin="test")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    critic = _model_dir(root / "critic", seed=0)
    copied = root / "elsewhere" / "critic"
    shutil.copytree(critic, copied)
    retrained = _model_dir(root / "critic-retrained", seed=1)
    reference = root / "ref"  # a Hugging Face directory: no metadata.json
    reference.mkdir()
    (reference / "config.json").write_text('{"model_type": "llama"}')
    (reference / "model.safetensors").write_bytes(bytes(range(256)) * 16)
    return {"critic": critic, "copied": copied, "retrained": retrained, "reference": reference}


def _identity(
    models: dict[str, Path],
    method: str = "verifiable",
    init: str = "critic",
    plan: str = "plan-a",
    runtime: dict | None = None,
    **params,
) -> RunIdentity:
    return run_identity(
        method,
        PARAMS_BY_METHOD[method](**params),
        RuntimeParams(**(runtime or {})),
        plan_sha256=plan,
        init_model=str(models[init]),
        reference_model=str(models["reference"]) if method == "rho1" else None,
    )


# --------------------------------------------------------------------------- the identity
def test_what_changes_the_result_changes_the_identity(models):
    base = _identity(models, lr=1e-3)
    assert base == _identity(models, lr=1e-3)
    changed = {
        "params.lr": _identity(models, lr=2e-3),
        "params.beta": _identity(models, lr=1e-3, beta=0.5),
        "params.value_coef": _identity(models, lr=1e-3, value_coef=0.1),
        "params.max_steps": _identity(models, lr=1e-3, max_steps=200),
        "models.init_model": _identity(models, init="retrained", lr=1e-3),
        "data_plan": _identity(models, plan="plan-b", lr=1e-3),
        "runtime.world_size": _identity(models, runtime={"nproc_per_node": 2}, lr=1e-3),
        "runtime.dtype": _identity(models, runtime={"dtype": "bfloat16"}, lr=1e-3),
        "runtime.strategy": _identity(models, runtime={"strategy": "fsdp"}, lr=1e-3),
        "runtime.seed": _identity(models, runtime={"seed": 7}, lr=1e-3),
    }
    for field, other in changed.items():
        assert other.digest != base.digest, field
        differences = identity_differences(base.components, other.components)
        assert [d.split(":")[0] for d in differences] == [field], differences
    assert identity_differences(base.components, changed["params.lr"].components) == [
        "params.lr: 0.001 -> 0.002"
    ]
    rho1 = _identity(models, method="rho1", top_k=0.6)
    assert _identity(models, method="rho1", top_k=0.4).digest != rho1.digest
    assert rho1.components["models"]["reference_model"].startswith("stat:")


def test_operational_knobs_and_copies_keep_the_identity(models):
    base = _identity(models, lr=1e-3)
    same = [
        _identity(
            models,
            lr=1e-3,
            resume="never",
            save_every=5,
            keep_last=7,
            log_every=3,
            eval_every=9,
            val_samples=3,
            chunk_size=64,
        ),
        _identity(
            models,
            runtime={
                "activation_checkpointing": "blocks",
                "collective_timeout_s": 60.0,
                "omp_threads": 3,
                "rdzv_endpoint": "10.0.0.1:29400",
            },
            lr=1e-3,
        ),
        # The same model directory elsewhere: its content, not its path, is the identity.
        _identity(models, init="copied", lr=1e-3),
    ]
    for other in same:
        assert other.digest == base.digest, identity_differences(base.components, other.components)
    # 2 nodes x 2 ranks is the same job as 1 node x 4.
    four = _identity(models, runtime={"nproc_per_node": 4}, lr=1e-3)
    assert _identity(models, runtime={"nproc_per_node": 2, "nnodes": 2}, lr=1e-3) == four


def test_model_fingerprints(models, tmp_path):
    critic = model_fingerprint(models["critic"])
    assert critic.startswith("files:")  # read from metadata.json, no weight file re-hashed
    assert model_fingerprint(models["copied"]) == critic
    assert model_fingerprint(models["retrained"]) != critic
    ref = model_fingerprint(models["reference"])
    copy = tmp_path / "ref"
    shutil.copytree(models["reference"], copy)
    assert model_fingerprint(copy) == ref
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[100] ^= 1  # same size, other content
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert model_fingerprint(copy) != ref
    with pytest.raises(FileNotFoundError, match="no model directory"):
        model_fingerprint(tmp_path / "absent")


def test_the_node_and_the_worker_compute_the_same_identity(models, tmp_path):
    params = PARAMS_BY_METHOD["verifiable"](lr=1e-3)
    runtime = RuntimeParams(nproc_per_node=2)
    node = job_identity(
        "verifiable", params, runtime, "plan-a", ModelDirectory(str(models["critic"]))
    )
    spec = JobSpec(
        method="verifiable",
        run_dir=str(tmp_path),
        params=params.model_dump(mode="json"),
        runtime=runtime,
        init_model=str(models["critic"]),
        reference_model=str(models["reference"]),  # not a rho1 job: not part of it
        train_jsonl="unused",
    )
    assert spec.resolve_identity("plan-a") == node
    recorded = spec.model_copy(update={"identity": node})
    assert recorded.resolve_identity("plan-a") is node
    with pytest.raises(ValueError, match="records data plan plan-a"):
        recorded.resolve_identity("plan-b")
    assert JobSpec.model_validate_json(recorded.model_dump_json()).identity == node


# --------------------------------------------------------------------------- checkpoints
@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return model, opt


def _state(step: int, identity: RunIdentity) -> TrainerState:
    return TrainerState(
        step=step,
        tokens_seen=step,
        plan_sha256=identity.components.get("data_plan", ""),
        world_size=1,
        method="verifiable",
        scheduler={},
        run_identity=identity.digest,
        identity_components=identity.components,
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lr": 2e-3}, "params.lr: 0.001 -> 0.002"),
        ({"init": "retrained"}, "models.init_model: files:"),
        ({"method": "rho1", "top_k": 0.4}, "params.top_k: 0.6 -> 0.4"),
    ],
)
def test_auto_does_not_continue_another_experiment(models, tiny, tmp_path, change, field):
    model, opt = tiny
    method = change.get("method", "verifiable")
    old = _identity(models, method=method, lr=1e-3, **({"top_k": 0.6} if method == "rho1" else {}))
    new = _identity(models, **{"lr": 1e-3, **change})
    base = tmp_path / "checkpoints"
    finished = save_checkpoint(identity_root(base, old), model, opt, _state(100, old), keep_last=2)
    # The old run finished: with one directory per method, `auto` would continue it (zero
    # steps) and publish its weights.
    assert choose_checkpoint(identity_root(base, old), "auto", old) == finished
    assert choose_checkpoint(identity_root(base, new), "auto", new) is None
    line = fresh_start_reason(new, str(base), local_other_runs(base, new))
    assert "\n" not in line and old.short in line and field in line
    with pytest.raises(CheckpointError, match=f"identity {old.short}.*{field.split(':')[0]}"):
        choose_checkpoint(identity_root(base, new), str(finished), new)


def test_another_runs_late_checkpoints_never_prune_this_runs(models, tiny, tmp_path):
    model, opt = tiny
    old, new = _identity(models, lr=1e-3), _identity(models, lr=2e-3)
    base = tmp_path / "checkpoints"
    save_checkpoint(identity_root(base, new), model, opt, _state(100, new), keep_last=1)
    for step in (2000, 2100):  # the old run, still going or restarted, saves later steps
        save_checkpoint(identity_root(base, old), model, opt, _state(step, old), keep_last=1)
    save_checkpoint(identity_root(base, new), model, opt, _state(200, new), keep_last=1)
    assert [s for s, _ in list_checkpoints(identity_root(base, new))] == [200]
    assert [s for s, _ in list_checkpoints(identity_root(base, old))] == [2100]


def test_checkpoints_from_before_identities_are_never_resumed(models, tiny, tmp_path):
    model, opt = tiny
    identity = _identity(models, lr=1e-3)
    legacy = _state(4, identity)
    legacy.run_identity, legacy.identity_components = "", {}
    path = save_checkpoint(tmp_path, model, opt, legacy, keep_last=2)
    with pytest.raises(CheckpointError, match="records no run identity"):
        choose_checkpoint(tmp_path, str(path), identity)
    assert choose_checkpoint(identity_root(tmp_path, identity), "auto", identity) is None
    line = fresh_start_reason(identity, str(tmp_path), [], legacy=1)
    assert "1 checkpoint(s) from before run identities are ignored" in line


def test_the_manifest_is_hashed_off_the_training_thread(models, tiny, tmp_path, monkeypatch):
    model, opt = tiny
    identity = _identity(models, lr=1e-3)
    storage = CheckpointStorage(tmp_path)
    storage.select_identity(identity)
    hashed_on: list[str] = []
    real = checkpoint.sha256_file

    def spy(path, *args, **kwargs):
        hashed_on.append(threading.current_thread().name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "sha256_file", spy)
    debris = storage.local_root / "step_00000001"  # renamed, never committed (a crash)
    debris.mkdir(parents=True)
    for step in (2, 4):
        saved = save_checkpoint(
            storage.local_root, model, opt, _state(step, identity), keep_last=1, commit=False
        )
        assert not (saved / checkpoint.MANIFEST_FILE).exists()
        storage.commit_async(step, saved, keep_last=1)
    storage.finish()
    assert hashed_on and "MainThread" not in hashed_on
    assert [s for s, _ in list_checkpoints(storage.local_root)] == [4]
    verify_checkpoint(storage.local_root / "step_00000004")
    assert not debris.exists()
    stored = json.loads((storage.local_root / checkpoint.IDENTITY_FILE).read_text())
    assert stored["digest"] == identity.digest


def test_a_failed_commit_fails_finish(models, tiny, tmp_path):
    model, opt = tiny
    identity = _identity(models, lr=1e-3)
    storage = CheckpointStorage(tmp_path)
    storage.select_identity(identity)
    saved = save_checkpoint(
        storage.local_root, model, opt, _state(2, identity), keep_last=1, commit=False
    )
    shutil.rmtree(saved)  # the directory vanished before the commit
    storage.commit_async(2, saved, keep_last=1)
    with pytest.raises(CheckpointError, match="step 2.*could not be committed"):
        storage.finish()


def test_remote_mirror_is_per_identity_and_explains_a_fresh_start(models, tiny, tmp_path):
    model, opt = tiny
    old, new = _identity(models, lr=1e-3), _identity(models, lr=2e-3)
    url = f"memory://{tmp_path.name}/checkpoints/verifiable"  # an object store stand-in
    first = CheckpointStorage(tmp_path / "machine1", url)
    first.select_identity(old)
    saved = save_checkpoint(first.local_root, model, opt, _state(2, old), keep_last=2, commit=False)
    first.commit_async(2, saved, keep_last=2)
    first.finish()
    # A new machine, the same store: the new job sees only the old job's directory there.
    second = CheckpointStorage(tmp_path / "machine2", url)
    second.select_identity(new)
    assert second.remote_url == f"{url}/{new.short}"
    assert second.fetch_latest() is None
    others, legacy = second.other_runs()
    line = fresh_start_reason(new, second.remote_url, others, legacy)
    assert f"{url}/{old.short}" in line and "params.lr: 0.001 -> 0.002" in line
    # The old job on a new machine fetches its own checkpoint.
    third = CheckpointStorage(tmp_path / "machine3", url)
    third.select_identity(old)
    assert third.fetch_latest() == 2
    assert choose_checkpoint(third.local_root, "auto", old) == third.local_root / "step_00000002"


# --------------------------------------------------------------------------- rank 0's I/O
@pytest.mark.distributed
def test_other_ranks_wait_for_rank0_io_beyond_the_collective_timeout(tmp_path):
    out = tmp_path / "result"
    assert io_wait_worker.IO_SECONDS > io_wait_worker.GROUP_TIMEOUT_S
    mp.start_processes(
        io_wait_worker.run, args=(str(tmp_path / "store"), str(out)), nprocs=2, start_method="spawn"
    )
    assert [Path(f"{out}.{r}").read_text() for r in (0, 1)] == ["step_00000004"] * 2


# --------------------------------------------------------------------------- torchrun
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def _spec(corpus: Corpus, run_dir: Path, ckpt: Path, *, node_identity: bool, **overrides):
    settings = dict(
        max_steps=4,
        batch_size=2,
        grad_accum_steps=1,
        lr=2e-3,
        warmup_steps=1,
        eval_every=100,
        val_samples=2,
        max_seq_len=256,
        chunk_size=100,
        save_every=2,
        keep_last=1,
    )
    settings.update(overrides)
    params = PARAMS_BY_METHOD["baseline"](**settings)
    runtime = RuntimeParams(nproc_per_node=1, omp_threads=1)
    plan = build_data_plan(
        "baseline", params, corpus.train_metadata, corpus.valid_metadata, world_size=1
    )
    identity = (
        job_identity(
            "baseline", params, runtime, plan.fingerprint(), ModelDirectory(str(corpus.model_dir))
        )
        if node_identity
        else None
    )
    spec = JobSpec(
        method="baseline",
        run_dir=str(run_dir),
        params=params.model_dump(mode="json"),
        runtime=runtime,
        init_model=str(corpus.model_dir),
        train_jsonl=str(corpus.train_jsonl),
        valid_jsonl=str(corpus.valid_jsonl),
        checkpoint_dir=str(ckpt),
        identity=identity,
    )
    run_dir.mkdir(parents=True)
    plan.save(spec.plan_path)
    return spec


def _steps(spec: JobSpec) -> list[int]:
    lines = spec.history_path.read_text().splitlines()
    return sorted({r["step"] for r in map(json.loads, lines) if "train/loss" in r})


@pytest.mark.distributed
@pytest.mark.slow
def test_a_changed_job_trains_from_step_1_and_keeps_its_checkpoints(corpus, tmp_path):
    ckpt = tmp_path / "checkpoints"
    # The old run: more steps, another learning rate; it finishes with step_00000006.
    old = _spec(corpus, tmp_path / "old", ckpt, node_identity=True, max_steps=6, lr=2e-3)
    launch(old, show_progress=False)
    # The new run (identity computed by the worker): must not continue the old one.
    new = _spec(corpus, tmp_path / "new", ckpt, node_identity=False, lr=1e-3)
    launch(new, show_progress=False)
    log = (new.log_dir / "rank_0.log").read_text()
    assert "resuming" not in log
    (line,) = [x for x in log.splitlines() if "training from step 1" in x]
    assert "params.lr: 0.002 -> 0.001" in line and "params.max_steps: 6 -> 4" in line
    assert _steps(new) == [1, 2, 3, 4]
    assert old.identity is not None
    assert [s for s, _ in list_checkpoints(identity_root(ckpt, old.identity))] == [6]
    (new_dir,) = [p for p in ckpt.iterdir() if p.is_dir() and p.name != old.identity.short]
    assert [s for s, _ in list_checkpoints(new_dir)] == [4]
    # The worker computed the identity the node computes (same job: same directory).
    again = _spec(corpus, tmp_path / "again", ckpt, node_identity=True, lr=1e-3)
    assert again.identity is not None and again.identity.short == new_dir.name
