"""TokenizerMismatchError: the one check that pairs a model with a tokenizer, and the evaluation
node that uses it before loading any weights (the training nodes: test_training_pipelines)."""

from __future__ import annotations

import functools
import json
import uuid
from pathlib import Path

import pytest

from tests.model_fixtures import tiny_args
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.reference import HFModelDirectory
from weighted_mtp.model_io.tokenizer_check import (
    TokenizerMismatchError,
    check_model_tokenizer,
    check_same_tokenizer,
    check_vocab_size,
    shipped_tokenizer,
)
from weighted_mtp.pipelines.evaluation.nodes import EvaluationParams, generate_completions

TEXTS = ["def f(x):\n    return x + 1\n", "print(sum(map(int, input().split())))\n"] * 40


@functools.cache
def tokenizer(vocab_size: int) -> Tokenizer:
    return train_tokenizer(TEXTS, vocab_size=vocab_size)


def params_only_dir(path: Path, vocab_size: int, proto: bytes | None) -> Path:
    """A model directory with params.json (and tokenizer.model), no weights: the check must
    decide before anything tries to read them."""
    path.mkdir(parents=True)
    args = tiny_args(vocab_size=vocab_size)
    fields = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of")
    (path / "params.json").write_text(
        json.dumps({**{f: getattr(args, f) for f in fields}, "n_future_tokens": 2})
    )
    if proto is not None:
        (path / "tokenizer.model").write_bytes(proto)
    return path


def test_same_bytes_pass_and_different_ones_name_both_files() -> None:
    a, b = tokenizer(300), tokenizer(290)
    check_same_tokenizer(a, "data/tokenizer.model", a.model_proto, "model/tokenizer.model")
    with pytest.raises(TokenizerMismatchError) as info:
        check_same_tokenizer(a, "data/tokenizer.model", b, "model/tokenizer.model", hint="fix it")
    message = str(info.value)
    assert message.startswith("tokenizer mismatch: data/tokenizer.model (300 tokens, sha256 ")
    assert "differs from model/tokenizer.model (290 tokens, sha256 " in message
    assert message.endswith("; fix it")
    # One exception type that callers catching ValueError (as the workers' did) still catch.
    assert isinstance(info.value, ValueError)


def test_vocab_size_names_the_model_file() -> None:
    check_vocab_size(tokenizer(300), "tok", 300, "m/params.json")
    with pytest.raises(TokenizerMismatchError, match=r"tok \(300 tokens.*m/params\.json.* 32000"):
        check_vocab_size(tokenizer(300), "tok", 32000, "m/params.json")


def test_model_directory_check(tmp_path: Path) -> None:
    ours, other = tokenizer(300), tokenizer(290)
    shipped = ModelDirectory(str(params_only_dir(tmp_path / "a", 300, ours.model_proto)))
    check_model_tokenizer(shipped, ours, "tok", vocab_size=300, require_shipped=True)
    with pytest.raises(TokenizerMismatchError, match=r"a/tokenizer\.model \(300 tokens"):
        check_model_tokenizer(shipped, other, "tok")
    bare = HFModelDirectory(str(params_only_dir(tmp_path / "b", 300, None)))
    assert shipped_tokenizer(bare) is None
    check_model_tokenizer(bare, ours, "tok", vocab_size=300)  # nothing shipped: size only
    with pytest.raises(TokenizerMismatchError, match="vocab_size is 290"):
        check_model_tokenizer(bare, ours, "tok", vocab_size=290)
    with pytest.raises(FileNotFoundError, match=r"b/tokenizer\.model does not exist"):
        check_model_tokenizer(bare, ours, "tok", require_shipped=True)


def test_model_directory_on_s3(moto_s3_endpoint: str) -> None:
    import s3fs

    options = {"client_kwargs": {"endpoint_url": moto_s3_endpoint}}
    fs = s3fs.S3FileSystem(**options)
    bucket = f"tok-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    fs.pipe(f"{bucket}/model/tokenizer.model", tokenizer(300).model_proto)
    remote = ModelDirectory(f"s3://{bucket}/model", options)
    check_model_tokenizer(remote, tokenizer(300), "tok", require_shipped=True)
    with pytest.raises(TokenizerMismatchError, match=rf"s3://{bucket}/model/tokenizer\.model"):
        check_model_tokenizer(remote, tokenizer(290), "tok")


# --------------------------------------------------------------------------- evaluation node
PARAMS = EvaluationParams(models=["m"], datasets={"humaneval": {}})
RUNTIME = {"device": "cpu", "dtype": "float32"}


def test_generation_refuses_another_tokenizer_before_loading(tmp_path: Path) -> None:
    model = ModelDirectory(str(params_only_dir(tmp_path / "m", 300, tokenizer(300).model_proto)))
    with pytest.raises(TokenizerMismatchError) as info:
        generate_completions(model, tokenizer(290), [], PARAMS, RUNTIME, str(tmp_path / "runs"))
    message = str(info.value)
    assert "catalog entry `tokenizer`, which encodes the prompts" in message
    assert "(290 tokens" in message and "vocab_size is 300" in message


def test_generation_refuses_a_shipped_tokenizer_of_the_same_size(tmp_path: Path) -> None:
    retrained = train_tokenizer([t.upper() for t in TEXTS], vocab_size=300)
    assert retrained.vocab_size == 300 and retrained.model_proto != tokenizer(300).model_proto
    model = ModelDirectory(str(params_only_dir(tmp_path / "m", 300, retrained.model_proto)))
    with pytest.raises(TokenizerMismatchError, match=r"differs from .*m/tokenizer\.model"):
        generate_completions(model, tokenizer(300), [], PARAMS, RUNTIME, str(tmp_path / "runs"))
