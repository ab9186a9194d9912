"""The explanation views reproduce the training losses' own weights on a real collated batch."""

from __future__ import annotations

import re

import pytest
import torch

import weighted_mtp.losses.methods.weighted as methods
from tests.model_fixtures import tiny_args
from weighted_mtp.alignment import head_valid_counts, shift_labels
from weighted_mtp.data.collator import PromptOutputCollator
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.evaluation.token_weights import (
    reference_ce,
    rho1_kept_tokens,
    td_token_weights,
    tokens_html,
)
from weighted_mtp.losses.methods import LossContext, Rho1Method, VerifiableMethod
from weighted_mtp.model_io.reference import ReferenceModel
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.models.value_head import ValueHead
from weighted_mtp.training.module import MTPTrainingModule

SOLUTIONS = [
    ("a, b = map(int, input().split())\nprint(a + b)\n", True),
    ("a, b = map(int, input().split())\nprint(a - b)\n", False),
    ("n = int(input())\nprint(n * 2)\n", True),
    ("n = int(input())\nfor i in range(n):\n    print(i)\n", False),
]
RECORDS = [
    {
        "instruction": "Read the input and print the answer.",
        "input": "",
        "output": code,
        "is_correct": ok,
    }
    for code, ok in SOLUTIONS
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    text = [r["instruction"] + "\n" + r["output"] for r in RECORDS] * 30
    return train_tokenizer(text, vocab_size=320)


@pytest.fixture(scope="module")
def batch(tokenizer):
    return PromptOutputCollator(tokenizer, max_length=96)(RECORDS)


def _model(tokenizer: Tokenizer) -> MTPTransformer:
    torch.manual_seed(0)
    args = tiny_args(vocab_size=tokenizer.vocab_size, max_seq_len=96, n_future_tokens=3)
    return MTPTransformer(args).double().eval()


class _Spy:
    """Records what the training loss hands to mtp_cross_entropy: its weights, and the
    tokens a select_fn keeps per head."""

    def __init__(self, monkeypatch) -> None:
        self.weights: torch.Tensor | None = None
        self.kept: dict[int, torch.Tensor] = {}
        real = methods.mtp_cross_entropy

        def spy(*args, **kwargs):
            self.weights = kwargs.get("weights")
            select = kwargs.get("select_fn")
            if select is not None:

                def recording(k, ce, valid):
                    chosen, denominator = select(k, ce, valid)
                    self.kept[k] = chosen.bool()
                    return chosen, denominator

                kwargs["select_fn"] = recording
            return real(*args, **kwargs)

        monkeypatch.setattr(methods, "mtp_cross_entropy", spy)


def _train_loss(module, batch, ref_ce=None):
    targets = shift_labels(batch["labels"])
    ctx = LossContext(denominators=head_valid_counts(targets, module.n_heads).double())
    return module(batch["input_ids"], targets, batch.get("is_correct"), ref_ce, ctx=ctx)


def test_td_weights_are_the_verifiable_loss_weights(monkeypatch, tokenizer, batch):
    model = _model(tokenizer)
    torch.manual_seed(1)
    # A wide value head: TD errors large enough that both clamps are reached.
    head = ValueHead(model.args.dim, init_std=1.0).double()
    method = VerifiableMethod(beta=0.5, w_min=0.2, w_max=3.0, gamma=0.95)
    spy = _Spy(monkeypatch)
    _train_loss(MTPTrainingModule(model, head, method), batch)
    assert spy.weights is not None

    view = td_token_weights(model, head, batch, method)
    torch.testing.assert_close(view.weights, spy.weights, rtol=0, atol=0)
    assert view.weights.shape == batch["input_ids"].shape
    on = view.weights[view.mask]
    assert (on < 1).any() and (on > 1).any()  # it both down- and up-weights
    assert on.min() >= 0.2 and on.max() <= 3.0 and bool((on == 3.0).any() or (on == 0.2).any())
    assert (view.weights[~view.mask] == 0).all()
    assert view.rewards.tolist() == [1.0, 0.0, 1.0, 0.0]
    # The last output token's TD error uses the reward: R - V(s_T).
    last = int(view.mask[0].nonzero().max())
    assert float(view.td[0, last]) == pytest.approx(1.0 - float(view.values[0, last]))


def test_td_weights_need_the_reward(tokenizer, batch):
    model = _model(tokenizer)
    without = {k: v for k, v in batch.items() if k != "is_correct"}
    with pytest.raises(KeyError, match="is_correct"):
        td_token_weights(model, ValueHead(model.args.dim), without, VerifiableMethod())
    with pytest.raises(KeyError, match="labels"):
        td_token_weights(
            model, ValueHead(model.args.dim), {"input_ids": batch["input_ids"]}, VerifiableMethod()
        )


def _reference(tokenizer: Tokenizer) -> ReferenceModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(2)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=96,
    )
    return ReferenceModel(LlamaForCausalLM(config).double())


@pytest.mark.parametrize("head0_always", [True, False])
def test_rho1_selection_is_the_rho1_loss_selection(monkeypatch, tokenizer, batch, head0_always):
    model = _model(tokenizer)
    reference = _reference(tokenizer)
    targets = shift_labels(batch["labels"])
    ref_ce = reference_ce(reference, batch["input_ids"], targets, chunk_size=16)
    # The reference CE is -log p of each target token under the reference.
    logp = reference.token_log_probs(batch["input_ids"], targets)
    valid = targets >= 0
    torch.testing.assert_close(ref_ce[valid], -logp[valid].double(), rtol=1e-6, atol=1e-6)
    assert (ref_ce[~valid] == 0).all()

    method = Rho1Method(reference=lambda ids, tg: ref_ce, top_k=0.4, head0_always=head0_always)
    spy = _Spy(monkeypatch)
    _train_loss(MTPTrainingModule(model, None, method), batch, ref_ce)
    view = rho1_kept_tokens(model, batch, method, ref_ce)

    first = 1 if head0_always else 0
    assert sorted(spy.kept) == list(range(first, model.args.n_future_tokens))
    for k, kept in spy.kept.items():
        assert torch.equal(view.kept[k], kept), f"head {k}"
        assert view.kept_ratio()[k] == pytest.approx(0.4, abs=0.05)
        assert not view.valid[k][:, :k].any()  # head k cannot predict the first k targets
    if head0_always:
        assert torch.equal(view.kept[0], valid)
        assert view.kept_ratio()[0] == 1.0
    assert (view.kept <= view.valid).all()


def test_tokens_html_colours_each_output_token(tokenizer, batch):
    ids = batch["input_ids"][0]
    mask = shift_labels(batch["labels"])[0] >= 0
    weights = torch.zeros(mask.shape)
    weights[mask] = torch.linspace(0.1, 5.0, int(mask.sum()))
    page = tokens_html(tokenizer, ids.tolist(), weights.tolist(), mask.tolist())
    spans = re.findall(r"<span title='weight ([0-9.]+)' style='background:rgba\((\d+),", page)
    assert len(spans) == int(mask.sum())
    # Below 1: red; above 1: green.
    assert {red for w, red in spans if float(w) < 1} == {"220"}
    assert {red for w, red in spans if float(w) > 1} == {"0"}
    # The spans spell the output (word spaces kept), then EOS.
    text = re.sub(r"<[^>]+>", "", page).replace("\u21b5", "")
    assert text == RECORDS[0]["output"] + "\u27e8eos\u27e9"

    kept = tokens_html(
        tokenizer, ids.tolist(), [float(i % 2) for i in range(len(ids))], mask.tolist(), kind="kept"
    )
    assert "line-through" in kept and "title='kept'" in kept
    with pytest.raises(ValueError, match="kind"):
        tokens_html(tokenizer, ids.tolist(), weights.tolist(), mask.tolist(), kind="heat")
    with pytest.raises(ValueError, match="lengths differ"):
        tokens_html(tokenizer, ids.tolist(), [1.0], mask.tolist())
