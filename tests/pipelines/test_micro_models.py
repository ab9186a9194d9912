"""micro_models: node functions, the pipeline on a temporary catalog, and the catalog wiring."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from tests.model_fixtures import train_sentencepiece
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.datasets import HFModelDirectoryDataset, ModelDirectoryDataset
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.model_dir import ModelDirectoryContents
from weighted_mtp.models import MTPTransformer
from weighted_mtp.pipelines.micro_models import create_pipeline
from weighted_mtp.pipelines.micro_models.nodes import (
    MicroMTPParams,
    MicroReferenceParams,
    build_micro_mtp_model,
    build_micro_reference_model,
)
from weighted_mtp.training.config import PretrainParams

CONF = Path(__file__).resolve().parents[2] / "conf"
MTP = MicroMTPParams(dim=32, n_layers=4, n_heads=4, n_future_tokens=2, multiple_of=16, seed=3)
REF = MicroReferenceParams(dim=32, n_layers=1, n_heads=4, max_seq_len=64, seed=4)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    text = ["for i in range(n):\n    print(i)\n", "x = int(input())\nprint(x * 2)\n"] * 20
    return Tokenizer(train_sentencepiece(text, vocab_size=60))


def test_micro_mtp_node(tokenizer: Tokenizer) -> None:
    contents = build_micro_mtp_model(tokenizer, MTP)
    assert isinstance(contents, ModelDirectoryContents)
    args = contents.args
    assert args.vocab_size == tokenizer.vocab_size == 60
    assert (args.dim, args.n_layers, args.n_future_tokens) == (32, 4, 2)
    model = contents.model
    assert isinstance(model, MTPTransformer)
    assert contents.tokenizer is tokenizer and contents.dtype == "float32"

    same = build_micro_mtp_model(tokenizer, MTP).model.state_dict()
    other = build_micro_mtp_model(tokenizer, MicroMTPParams(**{**MTP.__dict__, "seed": 4}))
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, same[key]), key
    assert not torch.equal(model.output.weight, other.model.output.weight)

    # Scaled residual init: wo/w2 std 0.02 / sqrt(2 * blocks on a path), the rest 0.02.
    depth = args.n_layers - args.n_future_tokens + 1
    residual = torch.cat([b.attention.wo.weight.flatten() for b in model.layers])
    plain = torch.cat([b.attention.wq.weight.flatten() for b in model.layers])
    assert residual.std().item() == pytest.approx(0.02 / math.sqrt(2 * depth), rel=0.15)
    assert plain.std().item() == pytest.approx(0.02, rel=0.15)
    assert torch.equal(model.norm.weight, torch.ones(32))


def test_micro_reference_node(tokenizer: Tokenizer) -> None:
    random = MicroReferenceParams(**{**REF.__dict__, "init": "random"})
    model, tok = build_micro_reference_model(tokenizer, random, ModelDirectory("unused"))
    assert tok is tokenizer
    assert model.config.vocab_size == tokenizer.vocab_size
    assert model.config.eos_token_id == tokenizer.eos_id
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 1
    assert model.model.embed_tokens.weight.shape == (60, 32)


def test_micro_reference_from_the_base_model(tmp_path: Path, tokenizer: Tokenizer) -> None:
    """init: base_model gives a causal LM whose logits are the base model's head 0."""
    contents = build_micro_mtp_model(tokenizer, MTP)
    ModelDirectoryDataset(path=str(tmp_path / "base")).save(contents)
    model, tok = build_micro_reference_model(tokenizer, REF, ModelDirectory(str(tmp_path / "base")))
    assert tok is tokenizer and model.config.eos_token_id == tokenizer.eos_id
    assert model.config.num_hidden_layers == MTP.n_layers - MTP.n_future_tokens + 1
    tokens = torch.randint(0, 60, (2, 12))
    with torch.no_grad():
        expected = contents.model(tokens)[:, :, 0]
        torch.testing.assert_close(model(input_ids=tokens).logits, expected, rtol=0, atol=1e-5)


# Inputs of the pretraining node that only a training job reads.
_TRAINING_ONLY_INPUTS = (
    "training_runs",
    "codecontests_train_jsonl@location",
    "codecontests_train_metadata",
    "codecontests_valid_jsonl@location",
    "codecontests_valid_metadata",
    "pretrain_checkpoints",
    "params:runtime",
)


def test_pipeline_runs_on_a_tmp_catalog(tmp_path: Path, tokenizer: Tokenizer) -> None:
    catalog = DataCatalog(
        {
            "tokenizer": MemoryDataset(tokenizer),
            "params:micro_models.mtp": MemoryDataset(MTP),
            "params:micro_models.reference": MemoryDataset(REF),
            # Pretraining off: the random model becomes the base model as it is (the tiny
            # default run in tests/test_kedro_run.py pretrains through the launcher).
            "params:micro_models.pretraining": MemoryDataset(PretrainParams(enabled=False)),
            **{name: MemoryDataset(f"unused: {name}") for name in _TRAINING_ONLY_INPUTS},
            "micro_mtp_init": ModelDirectoryDataset(path=str(tmp_path / "micro-mtp-init")),
            "base_model": ModelDirectoryDataset(path=str(tmp_path / "micro-mtp")),
            "reference_model": HFModelDirectoryDataset(path=str(tmp_path / "micro-ref")),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)

    handle = catalog.load("base_model")
    model = handle.load()
    assert model.args.vocab_size == 60 and not model.training
    assert handle.tokenizer_bytes() == tokenizer.model_proto
    meta = handle.read_metadata()
    assert meta["dtype"] == "float32" and meta["origin"].startswith("micro_models")
    assert catalog.load("pretrain_training_history").empty
    expected = build_micro_mtp_model(tokenizer, MTP).model
    tokens = torch.randint(0, 60, (1, 10))
    with torch.no_grad():
        assert torch.equal(model(tokens), expected(tokens))

    ref = catalog.load("reference_model").load(expected_vocab_size=tokenizer.vocab_size)
    assert ref.logits(tokens).shape == (1, 10, 60)
    assert (tmp_path / "micro-ref" / "tokenizer.model").read_bytes() == tokenizer.model_proto


def test_catalog_entries_base_and_a100() -> None:
    base = OmegaConfigLoader(str(CONF), base_env="base", default_run_env="base", env="base")
    base_catalog = base["catalog"]
    assert base_catalog["base_model"]["path"] == "data/06_models/micro-mtp"
    assert base_catalog["reference_model"]["path"] == "data/06_models/micro-ref"
    assert base["parameters"]["micro_models"]["mtp"]["n_future_tokens"] == 4
    MicroMTPParams(**base["parameters"]["micro_models"]["mtp"])  # the yml fits the dataclass
    MicroReferenceParams(**base["parameters"]["micro_models"]["reference"])

    a100 = OmegaConfigLoader(str(CONF), base_env="base", default_run_env="base", env="a100")
    entries = a100["catalog"]
    for name, suffix in [("base_model", "meta-llama-mtp-7b_1t_4"), ("reference_model", "sheared")]:
        assert entries[name]["path"].startswith("s3://wmtp-artifacts/models/")
        assert suffix in entries[name]["path"]
        assert entries[name]["read_only"] is True
        assert entries[name]["credentials"] == "s3_credentials"

    # Building the a100 catalog touches no network (no side effects in dataset constructors),
    # and the micro_models output refuses to overwrite the released model.
    credentials = {"s3_credentials": {"key": "k", "secret": "s"}}
    catalog = DataCatalog.from_config(
        {k: entries[k] for k in ("base_model", "reference_model")}, credentials
    )
    with pytest.raises(Exception, match="read-only"):
        catalog.save("base_model", ModelDirectoryContents(None, None, b""))
