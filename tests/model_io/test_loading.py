"""load_model: params.json and HF config.json directories, dtypes, value heads, S3 via moto."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
import torch
from kedro.io.core import DatasetError
from transformers import LlamaConfig, LlamaForCausalLM

from tests.model_fixtures import tiny_args, tiny_model
from weighted_mtp.datasets import ModelDirectoryDataset
from weighted_mtp.model_io import load_model
from weighted_mtp.model_io.hf_config import args_from_hf_config
from weighted_mtp.model_io.loading import ModelDirectory, read_model_args
from weighted_mtp.model_io.meta_model import build_meta_model
from weighted_mtp.model_io.model_dir import (
    MissingKeyError,
    ModelDirectoryContents,
    ModelDirectoryError,
    ModelFileNotFoundError,
    local_model_dir,
    read_metadata,
    save_model_dir,
)
from weighted_mtp.models.args import ModelArgs, ModelArgsError
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.models.value_head import VALUE_FEATURES, ValueHead

TOKENIZER = b"sentencepiece bytes"


ROPE_THETA = 500.0  # not the default (10000.0): a rope_theta lost on the way changes logits


@pytest.fixture
def model() -> MTPTransformer:
    return tiny_model(rope_theta=ROPE_THETA)


def same_architecture(a: ModelArgs, b: ModelArgs) -> bool:
    """Equal up to multiple_of/ffn_dim_multiplier, which a HF config fixes only through their
    result (intermediate_size)."""
    return (
        a.ffn_hidden_dim == b.ffn_hidden_dim
        and replace(a, multiple_of=b.multiple_of, ffn_dim_multiplier=b.ffn_dim_multiplier) == b
    )


def logits(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens)


TOKENS = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- params.json
def test_loaded_model_is_eval_and_equal(tmp_path: Path, model) -> None:
    save_model_dir(model, model.args, TOKENIZER, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, MTPTransformer) and not loaded.training
    assert loaded.args == model.args
    assert torch.equal(logits(loaded, TOKENS), logits(model, TOKENS))
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])


def test_dtype_handling(tmp_path: Path, model) -> None:
    save_model_dir(model, model.args, TOKENIZER, tmp_path / "bf16", dtype="bf16")
    stored_bf16 = load_model(tmp_path / "bf16")
    assert {p.dtype for p in stored_bf16.parameters()} == {torch.bfloat16}
    # RoPE tables stay float32 whatever the weights' dtype.
    assert stored_bf16.rope_cos.dtype == torch.float32
    assert torch.equal(logits(stored_bf16, TOKENS), logits(model.to(torch.bfloat16), TOKENS))

    upcast = load_model(tmp_path / "bf16", dtype=torch.float32)
    assert {p.dtype for p in upcast.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="unknown dtype 'int3'"):
        load_model(tmp_path / "bf16", dtype="int3")


def test_value_head_saved_or_fresh(tmp_path: Path, model, caplog) -> None:
    head = ValueHead(32)
    save_model_dir(model, model.args, TOKENIZER, tmp_path / "with", value_head=head)
    _, loaded_head = load_model(tmp_path / "with", with_value_head=True)
    for key, value in head.state_dict().items():
        assert torch.equal(loaded_head.state_dict()[key], value), key
    assert isinstance(load_model(tmp_path / "with"), MTPTransformer)

    save_model_dir(model, model.args, TOKENIZER, tmp_path / "without")
    with caplog.at_level(logging.WARNING, logger="weighted_mtp.model_io.loading"):
        loaded, fresh = load_model(tmp_path / "without", dtype="bf16", with_value_head=True)
    assert "fresh initialisation" in caplog.text
    assert fresh.weight.shape == (1, VALUE_FEATURES) and fresh.weight.dtype == torch.bfloat16
    assert 0.005 < fresh.weight.float().std() < 0.05
    hidden = torch.randn(2, 5, 32, dtype=torch.bfloat16)
    assert fresh(hidden).shape == (2, 5)


@pytest.mark.parametrize("stored", [("weight",), ("weight", "bias")], ids=["no_bias", "linear"])
def test_an_older_value_head_is_refused_clearly(tmp_path: Path, model, stored) -> None:
    # Critic directories written before the running-max head hold value_head.weight [1, dim]
    # (the per-position head) or weight and bias (the running-mean head): linear heads, which
    # this one does not compute. Loading them names the fix.
    old_head = {"weight": torch.randn(1, 32), "bias": torch.zeros(1)}
    head = {k: old_head[k] for k in stored}
    save_model_dir(model, model.args, TOKENIZER, tmp_path / "old", value_head=head)
    with pytest.raises(MissingKeyError, match="older linear value head.*retrain the critic"):
        load_model(tmp_path / "old", with_value_head=True)
    with pytest.raises(MissingKeyError, match="older linear value head.*retrain the critic"):
        build_meta_model(tmp_path / "old", with_value_head=True)
    assert isinstance(load_model(tmp_path / "old"), MTPTransformer)  # the policy still loads


def test_a_value_head_without_its_weight_is_refused(tmp_path: Path, model) -> None:
    head = ValueHead(32)
    save_model_dir(model, model.args, TOKENIZER, tmp_path / "bad", value_head={"bias": head.bias})
    with pytest.raises(MissingKeyError, match="value_head.'weight'"):
        load_model(tmp_path / "bad", with_value_head=True)
    with pytest.raises(MissingKeyError, match="value_head.'weight'"):
        build_meta_model(tmp_path / "bad", with_value_head=True)


def test_missing_directory_and_params_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelFileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileNotFoundError, match=r"params\.json nor config\.json"):
        load_model(tmp_path / "empty")


# --------------------------------------------------------------------------- HF config.json
def _hf_model(args: ModelArgs, tie: bool = False) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.dim,
        intermediate_size=args.ffn_hidden_dim,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_seq_len,
        rms_norm_eps=args.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta},
        tie_word_embeddings=tie,
    )
    torch.manual_seed(3)
    hf = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # random norm gains: a swapped norm cannot hide
        for name, param in hf.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    return hf


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_hf_llama_directory_matches_transformers(tmp_path: Path, tie: bool) -> None:
    args = tiny_args(n_future_tokens=1, n_layers=2, rope_theta=ROPE_THETA)
    hf = _hf_model(args, tie=tie)
    hf.save_pretrained(tmp_path / "hf")
    loaded = load_model(tmp_path / "hf")
    assert same_architecture(loaded.args, args)
    with torch.no_grad():
        expected = hf(input_ids=TOKENS).logits
    torch.testing.assert_close(logits(loaded, TOKENS)[:, :, 0], expected, atol=1e-5, rtol=1e-5)


def test_hf_config_with_meta_keys_and_future_tokens(tmp_path: Path, model) -> None:
    args = model.args
    directory = tmp_path / "m"
    directory.mkdir()
    config = {
        "model_type": "llama",
        "hidden_size": args.dim,
        "intermediate_size": args.ffn_hidden_dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_kv_heads,
        "vocab_size": args.vocab_size,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,  # transformers 4 spelling
        "max_position_embeddings": args.max_seq_len,
        "n_future_tokens": args.n_future_tokens,
    }
    (directory / "config.json").write_text(json.dumps(config))
    safetensors.torch.save_file(model.state_dict(), str(directory / "model.safetensors"))
    loaded = load_model(directory)
    assert same_architecture(loaded.args, args)
    assert torch.equal(logits(loaded, TOKENS), logits(model, TOKENS))


def test_hf_config_mapping() -> None:
    llama2_7b = {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "max_position_embeddings": 4096,
    }
    args = args_from_hf_config(llama2_7b)
    assert (args.dim, args.n_layers, args.n_heads, args.vocab_size) == (4096, 32, 32, 32000)
    assert args.ffn_hidden_dim == 11008 and args.n_future_tokens == 1
    assert args.rope_theta == 10000.0 and args.max_seq_len == 4096
    sheared = args_from_hf_config({**llama2_7b, "hidden_size": 2560, "intermediate_size": 6912})
    assert sheared.ffn_hidden_dim == 6912
    # A width no multiple_of reaches from 8/3 * dim needs ffn_dim_multiplier.
    odd = args_from_hf_config({**llama2_7b, "hidden_size": 64, "intermediate_size": 200})
    assert odd.ffn_hidden_dim == 200 and odd.ffn_dim_multiplier is not None
    with pytest.raises(ModelArgsError, match="RoPE scaling"):
        args_from_hf_config({**llama2_7b, "rope_parameters": {"rope_type": "linear", "factor": 2}})
    with pytest.raises(ModelArgsError, match="missing 'vocab_size'"):
        args_from_hf_config({k: v for k, v in llama2_7b.items() if k != "vocab_size"})


# --------------------------------------------------------------------------- S3 (moto)
@pytest.fixture
def s3(moto_s3_endpoint: str) -> dict:
    import s3fs

    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": moto_s3_endpoint},
    }
    bucket = f"wmtp-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(**options).mkdir(bucket)
    return {"options": options, "bucket": bucket}


def test_s3_round_trip(tmp_path: Path, model, s3) -> None:
    url = f"s3://{s3['bucket']}/models/tiny"
    head = ValueHead(32)
    save_model_dir(
        model,
        model.args,
        TOKENIZER,
        url,
        value_head=head,
        max_shard_bytes=8192,
        storage_options=s3["options"],
    )
    assert read_metadata(url, s3["options"])["has_value_head"] is True
    assert read_model_args(url, s3["options"]) == model.args

    cache = tmp_path / "cache"
    loaded, loaded_head = load_model(
        url, with_value_head=True, cache_dir=cache, storage_options=s3["options"]
    )
    assert torch.equal(logits(loaded, TOKENS), logits(model, TOKENS))
    assert torch.equal(loaded_head.weight, head.weight)
    first = local_model_dir(url, cache_dir=cache, storage_options=s3["options"])
    stamp = (first / "metadata.json").stat().st_mtime_ns
    # Unchanged remote: the cached copy is reused, not downloaded again.
    again = local_model_dir(url, cache_dir=cache, storage_options=s3["options"])
    assert again == first and (again / "metadata.json").stat().st_mtime_ns == stamp

    # Overwriting remotely (single file now) invalidates the cache and leaves no stale shards.
    save_model_dir(model, model.args, TOKENIZER, url, storage_options=s3["options"])
    refreshed = local_model_dir(url, cache_dir=cache, storage_options=s3["options"])
    assert not list(refreshed.glob("model-*.safetensors"))
    assert torch.equal(logits(load_model(refreshed), TOKENS), logits(model, TOKENS))

    # A retrained model of the same architecture: every file has the same size as before.
    torch.manual_seed(42)
    retrained = MTPTransformer(model.args).eval()
    save_model_dir(retrained, model.args, TOKENIZER, url, storage_options=s3["options"])
    reloaded = load_model(url, cache_dir=cache, storage_options=s3["options"])
    assert torch.equal(logits(reloaded, TOKENS), logits(retrained, TOKENS))

    with pytest.raises(ModelDirectoryError, match="bucket root"):
        save_model_dir(
            model, model.args, TOKENIZER, f"s3://{s3['bucket']}", storage_options=s3["options"]
        )


def test_dataset_on_s3(tmp_path: Path, model, s3) -> None:
    url = f"s3://{s3['bucket']}/models/ds"
    dataset = ModelDirectoryDataset(
        path=url,
        credentials={"key": "testing", "secret": "testing"},
        fs_args={"client_kwargs": s3["options"]["client_kwargs"]},
        cache_dir=str(tmp_path / "cache"),
    )
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="not a model directory"):
        dataset.load()
    dataset.save(ModelDirectoryContents(model, model.args, TOKENIZER, origin="test"))
    assert dataset.exists()
    handle = dataset.load()
    assert isinstance(handle, ModelDirectory) and handle.path == url
    assert "testing" not in repr(handle)  # credentials stay out of logs
    assert handle.read_metadata()["origin"] == "test"
    assert handle.tokenizer_bytes() == TOKENIZER
    assert torch.equal(logits(handle.load(), TOKENS), logits(model, TOKENS))

    # Saving a handle copies the directory: publish S3 -> local.
    local = ModelDirectoryDataset(path=str(tmp_path / "copy"))
    local.save(handle)
    assert torch.equal(logits(local.load().load(), TOKENS), logits(model, TOKENS))

    frozen = ModelDirectoryDataset(path=url, read_only=True)
    with pytest.raises(DatasetError, match="read-only"):
        frozen.save(ModelDirectoryContents(model, model.args, TOKENIZER))
