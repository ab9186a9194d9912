"""Model directory IO: bit-exact round trips, sharding, checksums and precise errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from tests.model_fixtures import tiny_args, tiny_model
from weighted_mtp.model_io.loading import load_model
from weighted_mtp.model_io.model_dir import (
    INDEX_FILE,
    METADATA_FILE,
    WEIGHTS_FILE,
    ChecksumMismatchError,
    DtypeMismatchError,
    MissingKeyError,
    ModelFileNotFoundError,
    ShapeMismatchError,
    UnexpectedKeyError,
    read_metadata,
    read_state_dict,
    save_model_dir,
    sha256_file,
    verify_checksums,
)
from weighted_mtp.models.args import ModelArgs
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.models.value_head import ValueHead

TOKENIZER = b"not parsed by the checkpoint code, only copied and hashed"


@pytest.fixture
def model() -> MTPTransformer:
    return tiny_model()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shard", [None, 4096], ids=["single", "sharded"])
def test_round_trip_is_bit_exact(tmp_path: Path, model, dtype, shard) -> None:
    head = ValueHead(32)
    out = tmp_path / "m"
    save_model_dir(
        model, model.args, TOKENIZER, out, dtype=dtype, value_head=head, max_shard_bytes=shard
    )

    stored = read_state_dict(out)
    expected = {k: v.to(dtype) for k, v in model.state_dict().items()}
    for key, value in head.state_dict().items():
        expected[f"value_head.{key}"] = value.detach().to(dtype)
    assert set(stored) == set(expected)
    for key, tensor in expected.items():
        assert stored[key].dtype == dtype, key
        assert torch.equal(stored[key], tensor), key

    meta = read_metadata(out)
    assert meta["dtype"] == str(dtype).removeprefix("torch.")
    assert meta["has_value_head"] is True
    assert (out / "tokenizer.model").read_bytes() == TOKENIZER
    assert ModelArgs.from_json(out / "params.json") == model.args
    for name, digest in meta["files"].items():
        assert sha256_file(out / name) == digest
    if shard:
        index = json.loads((out / INDEX_FILE).read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) > 2 and not (out / WEIGHTS_FILE).exists()
        assert set(index["weight_map"]) == set(expected)
        assert index["metadata"]["total_size"] == sum(
            t.numel() * t.element_size() for t in expected.values()
        )
        assert set(shards) <= set(meta["files"])
    else:
        assert not (out / INDEX_FILE).exists()

    loaded, loaded_head = load_model(out, with_value_head=True)
    for key, value in loaded_head.state_dict().items():
        assert torch.equal(value, expected[f"value_head.{key}"]), key
    tokens = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model.to(dtype)(tokens))


def test_overwrite_replaces_directory_and_leaves_no_temporaries(tmp_path: Path, model) -> None:
    out = tmp_path / "m"
    save_model_dir(model, model.args, TOKENIZER, out, max_shard_bytes=4096)
    save_model_dir(model, model.args, TOKENIZER, out)
    assert not (out / INDEX_FILE).exists()
    assert sorted(p.name for p in out.iterdir()) == [
        METADATA_FILE,
        WEIGHTS_FILE,
        "params.json",
        "tokenizer.model",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    verify_checksums(out)


def test_failed_write_keeps_previous_directory(tmp_path: Path, model) -> None:
    out = tmp_path / "m"
    save_model_dir(model, model.args, TOKENIZER, out)
    before = read_metadata(out)
    with pytest.raises(ModelFileNotFoundError, match="nope.model"):
        save_model_dir(model, model.args, tmp_path / "nope.model", out)
    assert read_metadata(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


@pytest.mark.parametrize("victim", ["tokenizer.model", "model-00002-of-"])
def test_sha256_mismatch_names_the_file(tmp_path: Path, model, victim: str) -> None:
    out = tmp_path / "m"
    save_model_dir(model, model.args, TOKENIZER, out, max_shard_bytes=4096)
    path = next(p for p in out.iterdir() if p.name.startswith(victim))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last byte of a shard is tensor data: the header still parses
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=path.name):
        verify_checksums(out)
    with pytest.raises(ChecksumMismatchError, match=path.name):
        load_model(out)
    load_model(out, verify=False)  # the check, not the format, refused it


def test_missing_shard_is_named(tmp_path: Path, model) -> None:
    out = tmp_path / "m"
    save_model_dir(model, model.args, TOKENIZER, out, max_shard_bytes=4096)
    shard = sorted(out.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(ModelFileNotFoundError, match=shard.name):
        load_model(out, verify=False)


def _save_state(tmp_path: Path, state: dict, args: ModelArgs, **kwargs) -> Path:
    out = tmp_path / "m"
    save_model_dir(state, args, TOKENIZER, out, **kwargs)
    return out


def test_missing_key_error_names_key_and_file(tmp_path: Path, model) -> None:
    state = dict(model.state_dict())
    del state["layers.1.feed_forward.w3.weight"]
    out = _save_state(tmp_path, state, model.args)
    with pytest.raises(
        MissingKeyError, match=r"'layers\.1\.feed_forward\.w3\.weight'.*model\.safetensors"
    ):
        load_model(out)
    out_sharded = tmp_path / "sharded"
    save_model_dir(state, model.args, TOKENIZER, out_sharded, max_shard_bytes=4096)
    with pytest.raises(MissingKeyError, match=r"w3\.weight.*model\.safetensors\.index\.json"):
        load_model(out_sharded)


def test_shape_mismatch_error_names_key_file_and_shapes(tmp_path: Path, model) -> None:
    state = dict(model.state_dict())
    state["extra_heads.0.attention.wk.weight"] = torch.zeros(8, 32)
    out = _save_state(tmp_path, state, model.args, max_shard_bytes=4096)
    index = json.loads((out / INDEX_FILE).read_text())
    shard = index["weight_map"]["extra_heads.0.attention.wk.weight"]
    with pytest.raises(ShapeMismatchError) as err:
        load_model(out)
    message = str(err.value)
    assert "'extra_heads.0.attention.wk.weight'" in message and shard in message
    assert "(8, 32)" in message and "(16, 32)" in message


def test_unexpected_key_error_names_key_and_file(tmp_path: Path, model) -> None:
    state = dict(model.state_dict())
    state["layers.9.attention.wq.weight"] = torch.zeros(32, 32)
    out = _save_state(tmp_path, state, model.args)
    with pytest.raises(
        UnexpectedKeyError, match=r"model\.safetensors: unexpected weight 'layers\.9"
    ):
        load_model(out)


def test_dtype_mismatch_with_metadata_is_refused(tmp_path: Path, model) -> None:
    out = _save_state(tmp_path, model.state_dict(), model.args, dtype=torch.bfloat16)
    meta_path = out / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["dtype"] = "float16"  # metadata.json is not in its own checksum list
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        DtypeMismatchError,
        match=r"model\.safetensors: '[\w.]+' is bfloat16, metadata.json says float16",
    ):
        load_model(out)


def test_mixed_dtypes_need_an_explicit_dtype(tmp_path: Path, model) -> None:
    state = dict(model.state_dict())
    state["norm.weight"] = state["norm.weight"].half()
    with pytest.raises(DtypeMismatchError, match="mix dtypes"):
        save_model_dir(state, model.args, TOKENIZER, tmp_path / "m")
    save_model_dir(state, model.args, TOKENIZER, tmp_path / "m", dtype="float32")
    assert read_metadata(tmp_path / "m")["dtype"] == "float32"


def test_shared_storage_is_saved_as_copies(tmp_path: Path) -> None:
    weight = torch.randn(4, 4)
    state = {"a": weight, "b": weight, "c": weight[:2]}
    save_model_dir(state, tiny_args(), TOKENIZER, tmp_path / "m")
    stored = safetensors.torch.load_file(tmp_path / "m" / WEIGHTS_FILE)
    assert torch.equal(stored["a"], weight) and torch.equal(stored["b"], weight)
    assert torch.equal(stored["c"], weight[:2])
