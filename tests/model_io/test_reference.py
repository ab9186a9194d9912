"""The Rho-1 reference: micro-ref round trip, per-token outputs, vocabulary guard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kedro.io.core import DatasetError

from weighted_mtp.datasets import HFModelDirectoryDataset
from weighted_mtp.model_io.micro import build_micro_reference
from weighted_mtp.model_io.model_dir import ModelFileNotFoundError
from weighted_mtp.model_io.reference import (
    HFModelDirectory,
    ReferenceModel,
    ReferenceVocabMismatchError,
    load_reference_model,
    save_reference_model,
)

VOCAB = 40
TOKENS = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def micro_ref_dir(tmp_path: Path):
    model = build_micro_reference(VOCAB, dim=32, n_layers=2, n_heads=4, max_seq_len=64, seed=5)
    out = tmp_path / "micro-ref"
    save_reference_model(model, out, tokenizer=b"spm")
    return model, out


def test_micro_ref_loads_with_per_token_outputs(micro_ref_dir) -> None:
    model, out = micro_ref_dir
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "tokenizer.model").read_bytes() == b"spm"
    ref = load_reference_model(out, "cpu", None, VOCAB)
    assert isinstance(ref, ReferenceModel) and ref.vocab_size == VOCAB
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    ref.train()  # a training loop calling .train() on everything must not unfreeze it
    assert not ref.model.training

    logits = ref.logits(TOKENS)
    assert logits.shape == (2, 9, VOCAB)
    with torch.no_grad():
        assert torch.equal(logits, model(input_ids=TOKENS).logits)

    logp = ref.log_probs(TOKENS)
    assert logp.dtype == torch.float32
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 9))
    targets = TOKENS.roll(-1, dims=1)
    targets[:, -1] = -100
    picked = ref.token_log_probs(TOKENS, targets)
    assert picked.shape == (2, 9)
    assert torch.equal(picked[:, :-1], logp[:, :-1].gather(-1, targets[:, :-1, None])[..., 0])
    assert torch.all(picked[:, -1] == 0)


def test_micro_ref_is_seeded(tmp_path: Path) -> None:
    a = build_micro_reference(VOCAB, dim=32, n_layers=1, n_heads=4, seed=1)
    b = build_micro_reference(VOCAB, dim=32, n_layers=1, n_heads=4, seed=1)
    c = build_micro_reference(VOCAB, dim=32, n_layers=1, n_heads=4, seed=2)
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_mismatched_vocab_is_refused(micro_ref_dir) -> None:
    _, out = micro_ref_dir
    with pytest.raises(ReferenceVocabMismatchError) as err:
        load_reference_model(out, expected_vocab_size=32000)
    message = str(err.value)
    assert "config.json" in message and "40" in message and "32000" in message


def test_dtype_and_missing_config(micro_ref_dir, tmp_path: Path) -> None:
    _, out = micro_ref_dir
    ref = load_reference_model(out, dtype="bfloat16", expected_vocab_size=VOCAB)
    assert ref.model.dtype == torch.bfloat16
    assert ref.log_probs(TOKENS).dtype == torch.float32
    with pytest.raises(ModelFileNotFoundError, match="config.json"):
        load_reference_model(tmp_path)


def test_hf_dataset_round_trip(micro_ref_dir, tmp_path: Path) -> None:
    model, _ = micro_ref_dir
    dataset = HFModelDirectoryDataset(path=str(tmp_path / "ds"))
    assert not dataset.exists()
    dataset.save((model, b"spm"))
    handle = dataset.load()
    assert isinstance(handle, HFModelDirectory)
    ref = handle.load(expected_vocab_size=VOCAB)
    with torch.no_grad():
        assert torch.equal(ref.logits(TOKENS), model(input_ids=TOKENS).logits)
    with pytest.raises(DatasetError, match="PreTrainedModel"):
        dataset.save("not a model")
    with pytest.raises(DatasetError, match="read-only"):
        HFModelDirectoryDataset(path=str(tmp_path / "ds"), read_only=True).save(model)


@pytest.mark.parametrize("n_kv_heads", [None, 2], ids=["mha", "gqa"])
def test_causal_lm_from_mtp_equals_head_0(n_kv_heads: int | None) -> None:
    """The converted reference's logits are the MTP model's head 0 (RoPE row permutation,
    norms, GQA); the extra heads are left out."""
    from weighted_mtp.model_io.reference import causal_lm_from_mtp
    from weighted_mtp.models import ModelArgs, MTPTransformer

    torch.manual_seed(0)
    args = ModelArgs(
        dim=64, n_layers=5, n_heads=4, n_kv_heads=n_kv_heads, vocab_size=96, multiple_of=16,
        n_future_tokens=3, rope_theta=500.0, norm_eps=1e-6, max_seq_len=64,
    )  # fmt: skip
    model = MTPTransformer(args).eval()
    with torch.no_grad():  # random norm gains: a swapped or missing norm cannot go unnoticed
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    before = torch.random.get_rng_state()
    causal_lm = causal_lm_from_mtp(model, eos_token_id=2)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert causal_lm.config.num_hidden_layers == 3 and causal_lm.config.eos_token_id == 2
    tokens = torch.randint(0, 96, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(
            causal_lm(input_ids=tokens).logits, model(tokens)[:, :, 0], atol=1e-5, rtol=1e-5
        )
