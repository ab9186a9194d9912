"""Start-up of a distributed job: one download per machine, then each rank fills only its shard.

Two real processes each time (spawned, gloo): a cold S3 cache is downloaded once while the other
process waits; a model built on the meta device and filled after FSDP2 sharding (or before DDP)
holds exactly the directory's weights, its RoPE tables and a fresh value head that is the same
on every rank.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import sys
import uuid
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.distributed as dist

from tests.conftest import free_port
from tests.model_fixtures import tiny_args, tiny_model
from weighted_mtp.model_io import load_model
from weighted_mtp.model_io.meta_model import build_meta_model
from weighted_mtp.model_io.model_dir import (
    ModelDirectoryError,
    local_model_dir,
    read_state_dict,
    save_model_dir,
)
from weighted_mtp.model_io.weight_reader import SafetensorsRows
from weighted_mtp.models.value_head import ValueHead

TOKENIZER = b"sentencepiece bytes"
SEED = 7


def _spawn(target, args_per_process: list[tuple], timeout_s: float = 120) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=args) for args in args_per_process]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout_s)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    codes = [proc.exitcode for proc in procs]
    assert codes == [0] * len(procs), f"child exit codes {codes}"


# --------------------------------------------------------------------------- cold S3 cache
def _fetch_in_child(url: str, options: dict, cache: str, out: str, index: int, barrier) -> None:
    import s3fs

    original = s3fs.S3FileSystem._get_file

    async def counted_get_file(self, rpath, lpath, **kwargs):
        with open(Path(out) / f"downloads-{index}.log", "a") as log:
            log.write(f"{rpath}\n")
        await asyncio.sleep(0.2)  # slow enough that both processes are inside the fetch
        return await original(self, rpath, lpath, **kwargs)

    s3fs.S3FileSystem._get_file = counted_get_file
    barrier.wait()
    path = local_model_dir(url, cache_dir=cache, storage_options=options)
    digests = {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }
    (Path(out) / f"result-{index}.json").write_text(json.dumps([str(path), digests]))


@pytest.mark.distributed
def test_cold_s3_cache_is_downloaded_once_per_machine(tmp_path: Path, moto_s3_endpoint) -> None:
    import s3fs

    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": moto_s3_endpoint},
    }
    bucket = f"wmtp-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(**options).mkdir(bucket)
    url = f"s3://{bucket}/models/tiny"
    model = tiny_model()
    save_model_dir(model, model.args, TOKENIZER, url, max_shard_bytes=8192, storage_options=options)
    remote_files = [
        p for p in s3fs.S3FileSystem(**options).find(f"{bucket}/models/tiny") if "." in p
    ]
    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    barrier = mp.get_context("spawn").Barrier(2)
    _spawn(_fetch_in_child, [(url, options, str(cache), str(out), i, barrier) for i in (0, 1)])

    downloads = [
        line for log in sorted(out.glob("downloads-*.log")) for line in log.read_text().split()
    ]
    assert sorted(downloads) == sorted(set(downloads)), "a file was downloaded twice"
    assert len(downloads) == len(remote_files)
    (path0, files0), (path1, files1) = (
        json.loads((out / f"result-{i}.json").read_text()) for i in (0, 1)
    )
    assert path0 == path1 and files0 == files1
    assert len(files0) == len(remote_files) + 1  # and the listing file
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == [
        f".{Path(path0).name}.lock"
    ], "a staging directory was left behind"
    assert torch.equal(load_model(path0).output.weight, model.output.weight)


# --------------------------------------------------------------------------- sharded fill
LAYOUTS = ("meta_bf16_sharded_with_head", "meta_fp32_fresh_head", "hf_tied")


def _load_in_child(rank: int, port: int, strategy: str, cases: list[tuple[str, bool, str]]) -> None:
    torch.set_num_threads(1)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.tensor import DTensor

    from weighted_mtp.losses.methods import BaselineMethod
    from weighted_mtp.models.transformer import rope_tables
    from weighted_mtp.training.module import MTPTrainingModule
    from weighted_mtp.training.parallelize import parallelize

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        for model_dir, with_head, out in cases:
            pending = build_meta_model(model_dir, with_head, seed=SEED)
            module = MTPTrainingModule(pending.model, pending.value_head, BaselineMethod())
            cpu = torch.device("cpu")
            # The order train() uses: DDP needs real parameters, FSDP2 shards meta ones.
            if strategy == "ddp":
                module.to_empty(device=cpu)
                pending.fill()
            wrapped = parallelize(module, strategy, cpu, param_dtype=None)
            if strategy == "fsdp":
                module.to_empty(device=cpu)
                pending.fill()
            args = pending.args
            cos, sin = rope_tables(args.head_dim, args.max_seq_len, args.rope_theta)
            local = [p.to_local() if isinstance(p, DTensor) else p for p in module.parameters()]
            report = {
                "rope": torch.equal(pending.model.rope_cos, cos)
                and torch.equal(pending.model.rope_sin, sin),
                "local_numel": sum(t.numel() for t in local),
                "dtypes": sorted({str(t.dtype) for t in local}),
            }
            if pending.value_head is not None:
                head = pending.value_head.weight
                head = head.full_tensor() if isinstance(head, DTensor) else head
                report["head"] = head.tolist()
            state = get_model_state_dict(
                wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
            if rank == 0:
                tensors = {k: v.contiguous() for k, v in state.items()}
                safetensors.torch.save_file(tensors, str(Path(out) / "state.safetensors"))
            (Path(out) / f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()
    # Once fully_shard has run, torch keeps the gloo group's C++ threads (and rank 0's TCPStore
    # server thread) running after destroy_process_group; the interpreter's teardown then races
    # them and, under load, ends in std::terminate (exit -6) after the work succeeded. The
    # results are on disk: leave without that teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _hf_directory(path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    args = tiny_args(n_future_tokens=1, n_layers=2)
    config = LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.dim,
        intermediate_size=args.ffn_hidden_dim,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_seq_len,
        tie_word_embeddings=True,
    )
    torch.manual_seed(3)
    LlamaForCausalLM(config).save_pretrained(path)


def _write_layout(layout: str, model_dir: Path) -> None:
    if layout == "hf_tied":
        _hf_directory(model_dir)
        return
    model = tiny_model(n_layers=4, n_future_tokens=2)
    if layout == "meta_bf16_sharded_with_head":
        torch.manual_seed(11)
        save_model_dir(
            model,
            model.args,
            TOKENIZER,
            model_dir,
            dtype="bfloat16",
            value_head=ValueHead(model.args.dim),
            max_shard_bytes=4096,
        )
    else:
        save_model_dir(model, model.args, TOKENIZER, model_dir)


def _check_layout(layout: str, model_dir: Path, out: Path, strategy: str) -> None:
    with_head = layout != "hf_tied"
    got = safetensors.torch.load_file(str(out / "state.safetensors"))
    # The directory's own weights (Meta names), as float32 master weights.
    reference = load_model(model_dir, dtype=torch.float32, with_value_head=with_head)
    ref_model, ref_head = reference if with_head else (reference, None)
    expected = {f"model.{k}": v for k, v in ref_model.state_dict().items()}
    if layout != "hf_tied":
        raw = read_state_dict(model_dir)
        for key, value in raw.items():
            name = key if key.startswith("value_head.") else f"model.{key}"
            if name in expected:
                assert torch.equal(expected[name], value.float()), key
    if layout == "meta_fp32_fresh_head":  # the critic's start: seeded, not the global RNG's
        torch.manual_seed(SEED)
        fresh = ValueHead(ref_model.args.dim)
        expected.update({f"value_head.{k}": v for k, v in fresh.state_dict().items()})
    elif ref_head is not None:
        expected.update({f"value_head.{k}": v for k, v in ref_head.state_dict().items()})
    assert sorted(got) == sorted(expected), layout
    for key, value in expected.items():
        assert got[key].dtype == torch.float32, (layout, key)
        assert torch.equal(got[key], value), (layout, key)

    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["rope"] for r in reports), f"{layout}: RoPE tables not rebuilt after to_empty"
    assert all(r["dtypes"] == ["torch.float32"] for r in reports), layout
    if with_head:  # every rank starts from the same value head
        assert reports[0]["head"] == reports[1]["head"] == expected["value_head.weight"].tolist()
    full = sum(v.numel() for v in got.values())
    if strategy == "fsdp":
        # Each rank allocated its shard only: together exactly one model.
        assert sum(r["local_numel"] for r in reports) == full, layout
        assert max(r["local_numel"] for r in reports) < full, layout
    else:
        assert all(r["local_numel"] == full for r in reports), layout


@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_sharded_fill_holds_the_directory_weights(tmp_path: Path, strategy: str) -> None:
    cases = []
    for layout in LAYOUTS:
        _write_layout(layout, tmp_path / layout)
        (tmp_path / f"out-{layout}").mkdir()
        cases.append((str(tmp_path / layout), layout != "hf_tied", str(tmp_path / f"out-{layout}")))
    port = free_port()
    _spawn(_load_in_child, [(rank, port, strategy, cases) for rank in (0, 1)])
    for layout in LAYOUTS:
        _check_layout(layout, tmp_path / layout, tmp_path / f"out-{layout}", strategy)


# --------------------------------------------------------------------------- in-process
def test_rows_are_read_into_place_and_cast(tmp_path: Path) -> None:
    weight = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    safetensors.torch.save_file(
        {"w": weight, "h": weight.to(torch.bfloat16)}, str(tmp_path / "x.safetensors")
    )
    reader = SafetensorsRows(tmp_path, {"w": "x.safetensors", "h": "x.safetensors"})
    into = torch.empty(2, 5)
    pointer = into.data_ptr()
    assert reader.read_rows("w", 3, 5, out=into) is into and into.data_ptr() == pointer
    assert torch.equal(into, weight[3:5])
    cast = torch.empty(4, 5)
    reader.read_rows("h", 1, 5, out=cast)
    assert torch.equal(cast, weight[1:5].to(torch.bfloat16).float())
    assert torch.equal(reader.read_rows("w"), weight)
    with pytest.raises(ValueError, match="out is"):
        reader.read_rows("w", 0, 2, out=torch.empty(3, 5))
    with pytest.raises(IndexError):
        reader.read_rows("w", 4, 7)


def test_fill_before_to_empty_is_refused(tmp_path: Path) -> None:
    model = tiny_model()
    save_model_dir(model, model.args, TOKENIZER, tmp_path / "m")
    pending = build_meta_model(tmp_path / "m")
    with pytest.raises(ModelDirectoryError, match="to_empty"):
        pending.fill()
    pending.model.to_empty(device="cpu")
    pending.fill()
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(pending.model.eval()(tokens), model(tokens))
