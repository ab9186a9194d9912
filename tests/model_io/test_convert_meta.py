"""convert_meta: a checkpoint written in Meta's release format converts to a model directory
that loads to the same logits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from tests.model_fixtures import train_sentencepiece
from weighted_mtp.model_io import load_model
from weighted_mtp.model_io.convert_meta import main, parse_size
from weighted_mtp.model_io.model_dir import INDEX_FILE, read_metadata
from weighted_mtp.models.args import ModelArgs
from weighted_mtp.models.transformer import MTPTransformer

ARGS = ModelArgs(
    dim=32,
    n_layers=4,
    n_heads=4,
    vocab_size=48,
    multiple_of=16,
    ffn_dim_multiplier=1.0,
    n_future_tokens=2,
    rope_theta=500.0,
)
TOKENS = torch.randint(0, 48, (2, 20), generator=torch.Generator().manual_seed(0))
# Meta's params.json: no max_seq_len, no n_kv_heads (7B_1T_4 has neither).
META_PARAMS = {
    "dim": 32,
    "n_layers": 4,
    "n_heads": 4,
    "vocab_size": 48,
    "multiple_of": 16,
    "ffn_dim_multiplier": 1.0,
    "norm_eps": 1e-5,
    "rope_theta": 500.0,
    "n_future_tokens": 2,
}


@pytest.fixture(scope="module")
def tokenizer_model() -> bytes:
    text = ["def add(a, b):\n    return a + b\n", "print(sum(map(int, input().split())))\n"] * 20
    return train_sentencepiece(text, vocab_size=48)


@pytest.fixture
def reference() -> MTPTransformer:
    torch.manual_seed(0)
    model = MTPTransformer(ARGS).eval()
    with torch.no_grad():  # non-trivial norm gains
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    return model


def write_release(
    directory: Path, state: dict, tokenizer: bytes, *, shards: int = 1, rope_freqs: bool = True
) -> Path:
    """Meta's layout: params.json, tokenizer.model, consolidated.pth or consolidated.NN.pth."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "params.json").write_text(json.dumps(META_PARAMS))
    (directory / "tokenizer.model").write_bytes(tokenizer)
    state = dict(state)
    if rope_freqs:  # LLaMA-1/2 releases store it; the converter must drop it
        state["rope.freqs"] = torch.zeros(ARGS.head_dim // 2)
    if shards == 1:
        torch.save(state, directory / "consolidated.pth")
        return directory
    # fairscale's split, written out here independently of the converter's table.
    row_split = ("wq", "wk", "wv", "w1", "w3", "output")
    col_split = ("wo", "w2", "tok_embeddings")
    for rank in range(shards):
        part = {}
        for key, tensor in state.items():
            module = key.split(".")[-2] if "." in key else key
            if module in row_split:
                part[key] = tensor.chunk(shards, dim=0)[rank].clone()
            elif module in col_split:
                part[key] = tensor.chunk(shards, dim=1)[rank].clone()
            else:
                part[key] = tensor.clone()
        torch.save(part, directory / f"consolidated.{rank:02d}.pth")
    return directory


def test_cli_converts_and_logits_are_identical(tmp_path, reference, tokenizer_model) -> None:
    src = write_release(tmp_path / "7B_1T_4", reference.state_dict(), tokenizer_model)
    dst = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "weighted_mtp.model_io.convert_meta", str(src), str(dst)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = load_model(dst)
    assert loaded.args.n_future_tokens == 2 and loaded.args.dim == 32
    with torch.no_grad():
        assert torch.equal(loaded(TOKENS), reference(TOKENS))
    assert (dst / "tokenizer.model").read_bytes() == tokenizer_model
    meta = read_metadata(dst)
    assert meta["dtype"] == "float32" and meta["origin"] == "meta:7B_1T_4"
    assert meta["source_files"] == ["consolidated.pth"]
    sp = spm.SentencePieceProcessor(model_file=str(dst / "tokenizer.model"))
    assert sp.get_piece_size() == 48


def test_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "weighted_mtp.model_io.convert_meta", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert "SRC_DIR" in proc.stdout and "DST_DIR" in proc.stdout and "--dtype" in proc.stdout


def test_bf16_release_stays_bf16(tmp_path, reference, tokenizer_model) -> None:
    bf16 = reference.to(torch.bfloat16)
    src = write_release(tmp_path / "src", bf16.state_dict(), tokenizer_model)
    assert main([str(src), str(tmp_path / "out"), "--max-shard-size", "8KB"]) == 0
    assert read_metadata(tmp_path / "out")["dtype"] == "bfloat16"
    assert (tmp_path / "out" / INDEX_FILE).exists()
    loaded = load_model(tmp_path / "out")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        assert torch.equal(loaded(TOKENS), bf16(TOKENS))


def test_dtype_option_casts(tmp_path, reference, tokenizer_model) -> None:
    src = write_release(tmp_path / "src", reference.state_dict(), tokenizer_model)
    assert main([str(src), str(tmp_path / "out"), "--dtype", "float16"]) == 0
    assert read_metadata(tmp_path / "out")["dtype"] == "float16"


def test_model_parallel_shards_are_merged(tmp_path, reference, tokenizer_model) -> None:
    src = write_release(tmp_path / "src", reference.state_dict(), tokenizer_model, shards=2)
    assert main([str(src), str(tmp_path / "out"), "--max-seq-len", "64"]) == 0
    loaded = load_model(tmp_path / "out")
    assert loaded.args.max_seq_len == 64
    with torch.no_grad():
        assert torch.equal(loaded(TOKENS), reference(TOKENS))
    assert read_metadata(tmp_path / "out")["source_files"] == [
        "consolidated.00.pth",
        "consolidated.01.pth",
    ]


@pytest.mark.parametrize("missing", ["tokenizer.model", "params.json", "consolidated.pth"])
def test_missing_files_are_named(tmp_path, reference, tokenizer_model, capsys, missing) -> None:
    src = write_release(tmp_path / "src", reference.state_dict(), tokenizer_model)
    (src / missing).unlink()
    assert main([str(src), str(tmp_path / "out")]) == 1
    assert missing in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_wrong_shape_is_named(tmp_path, reference, tokenizer_model, capsys) -> None:
    state = dict(reference.state_dict())
    state["layers.0.attention.wq.weight"] = torch.zeros(16, 32)
    src = write_release(tmp_path / "src", state, tokenizer_model)
    assert main([str(src), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "layers.0.attention.wq.weight" in err and "consolidated.pth" in err


def test_parse_size() -> None:
    assert parse_size("5GB") == 5_000_000_000
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("1000") == 1000
