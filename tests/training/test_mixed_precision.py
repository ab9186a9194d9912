"""Mixed precision that keeps the maths: under FSDP2's bf16 parameter policy (on CPU/gloo here)
the trunk computes in bf16 while the value head, the TD weights and the loss inputs stay fp32.

The TD test builds the situation the issue describes: a critic that reads V ~ 0.5 with
token-to-token changes of 1e-3..1e-2 (the TD errors), where bf16's spacing is 2^-8 ~ 3.9e-3.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tests.model_fixtures import tiny_args
from weighted_mtp.alignment import IGNORE_INDEX, head_valid_counts
from weighted_mtp.losses.methods import LossContext, Rho1Method, VerifiableMethod
from weighted_mtp.losses.methods import weighted as methods_module
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.models.value_head import ValueHead, running_max
from weighted_mtp.training.module import MTPTrainingModule
from weighted_mtp.training.parallelize import parallelize
from weighted_mtp.weighting import td_weights as real_td_weights

BETA = 0.9
DIM = 128
FP32_EPS = 2.0**-24  # fp32 unit roundoff


@pytest.fixture
def one_rank(tmp_path: Path, restore_excepthook):
    """A one-process gloo group: FSDP2 applies its policies as on many ranks."""
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    input_ids = torch.randint(0, 64, (4, 32), generator=g)
    targets = torch.roll(input_ids, -1, 1)
    targets[:, :4] = IGNORE_INDEX
    targets[2, 25:] = IGNORE_INDEX
    targets[:, -1] = IGNORE_INDEX
    return {
        "input_ids": input_ids,
        "targets": targets,
        "is_correct": torch.tensor([True, False, True, False]),
    }


def _ctx(targets: torch.Tensor, n_heads: int) -> LossContext:
    return LossContext(denominators=head_valid_counts(targets, n_heads).to(torch.float64))


def _critic_like_module(batch: dict) -> MTPTrainingModule:
    """A tiny model whose hidden states share one dominant direction (as a trained LM's do),
    and a value head whose readout is scaled so that V is 0.5 on average over the output
    positions and moves by ~1e-3 where a feature's running max rises."""
    torch.manual_seed(0)
    args = tiny_args(dim=DIM, n_layers=4, n_future_tokens=2, max_seq_len=64)
    model = MTPTransformer(args).train()
    with torch.no_grad():
        shared = torch.randn(DIM)
        emb = model.tok_embeddings.weight
        emb.copy_(shared + 0.4 * torch.randn_like(emb))
        hidden = model.head_forward(0, model.trunk_forward(batch["input_ids"]))
        mask = batch["targets"] != IGNORE_INDEX
        head = ValueHead(DIM)
        head.weight.copy_(torch.randn_like(head.weight) * 2e-3)
        head.bias.fill_(0.5 - float(head(hidden, mask)[mask].mean()))
    return MTPTrainingModule(model, head, VerifiableMethod(beta=BETA))


def _record_td(module: MTPTrainingModule, batch: dict, monkeypatch) -> dict[str, torch.Tensor]:
    """One training forward; returns the value head's input and output and the TD errors and
    weights the verifiable loss built."""
    seen: dict[str, torch.Tensor] = {}

    def td_weights(td, mask, *args, **kwargs):
        seen["td"], seen["mask"] = td, mask
        seen["weights"] = real_td_weights(td, mask, *args, **kwargs)
        return seen["weights"]

    def on_value_head(_module, inputs, output):
        seen["hidden"], seen["values"] = inputs[0].detach(), output.detach()

    monkeypatch.setattr(methods_module, "td_weights", td_weights)
    hook = module.value_head.register_forward_hook(on_value_head)
    try:
        module(**batch, ctx=_ctx(batch["targets"], 2))
    finally:
        hook.remove()
    return seen


def test_td_weights_of_a_bf16_trunk_match_fp32(one_rank, monkeypatch):
    """Tolerance, derived: the bf16 trunk moves head 0's hidden state h; the fp32 head adds
    nothing but fp32 rounding. So per position t the value may differ from the all-fp32
    reference by e_t = |V_exact(h_bf16) - V_ref| (exact maths on the bf16 trunk's state) plus
    twice the fp32 rounding bound of the head's dot products (both sides round); a TD error by e_t + e_{t+1} (e_T
    at a row's terminal, R - V_T); and a weight, since |exp(a) - exp(b)| <= exp(b) *
    expm1(|a - b|) and the clamp is 1-Lipschitz, by exp(td_ref / beta) * expm1(that / beta).
    The trunk's share (max e_t) must itself be below bf16's rounding of V (2^-9 at V ~ 0.5),
    or the tolerance would say nothing. Today's bf16 head rounds V to bf16's grid on top of
    that and fails."""
    batch = _batch()
    reference = _critic_like_module(batch)
    mixed = parallelize(
        copy.deepcopy(reference), "fsdp", torch.device("cpu"), param_dtype=torch.bfloat16
    )
    ref = _record_td(reference, batch, monkeypatch)
    got = _record_td(mixed, batch, monkeypatch)

    assert got["hidden"].dtype == torch.float32 and got["values"].dtype == torch.float32
    assert not torch.equal(got["hidden"], ref["hidden"])  # the trunk did run in bf16
    mask = ref["mask"]
    inner = mask & torch.roll(mask, -1, 1)  # positions followed by another output position
    # The regime of the issue: V ~ 0.5, TD errors inside a sequence far below bf16's spacing
    # of V (2^-9); the head moves V only where a feature's running max rises.
    assert ref["values"][mask].sub(0.5).abs().max() < 0.05
    assert 1e-4 < ref["td"][inner].abs().median() < 1e-2

    # Exact maths on the bf16 trunk's state, and an fp32 rounding bound of the head's three
    # stages (norm, features A x + a, readout w . f), each a dot product: its error is at most
    # n * eps * sum |terms|, and the norm's relative error (dim + 2) * eps carries through A.
    exact_head = copy.deepcopy(reference.value_head).double()
    h = got["hidden"].double()
    with torch.no_grad():
        exact = exact_head(h, mask)
        x = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5) * exact_head.norm.weight
        feats = running_max(exact_head.token_features(h), mask)
    w, a = exact_head.weight[0].abs(), exact_head.features.weight.abs()
    n_feats = w.numel()
    readout = n_feats * (feats * w).abs().sum(-1)
    features = (2 * DIM + 2) * ((x.abs() @ a.T).cummax(1).values * w).sum(-1)
    e = (exact - ref["values"].double()).abs() + 2 * FP32_EPS * (readout + features)
    assert e[mask].max() < 2.0**-9, "the bf16 trunk alone moves V by bf16's spacing"
    d_td = torch.where(inner, e + torch.roll(e, -1, 1), e)
    tol = torch.exp(ref["td"].double() / BETA) * torch.expm1(d_td / BETA) + 1e-12
    err = (got["weights"].double() - ref["weights"].double()).abs()
    worst = (err - tol)[mask].max()
    assert worst <= 0, f"TD weights off by up to {err[mask].max():.2e} (tolerance {tol[mask]})"


def test_loss_inputs_reach_the_loss_unrounded(one_rank):
    """ref_ce (Rho-1's ranking input) and the step's token-count denominators keep their dtype
    and values through the root's forward while the blocks compute in bf16."""
    batch = _batch()
    ref_ce = torch.rand(4, 32, generator=torch.Generator().manual_seed(1)) * 5
    assert not torch.equal(ref_ce.bfloat16().float(), ref_ce)  # bf16 would round it
    seen: dict[str, torch.Tensor] = {}

    class RecordingRho1(Rho1Method):
        def loss(self, module, b, ctx):
            seen["ref_ce"], seen["denominators"] = b.ref_ce, ctx.denominators
            return super().loss(module, b, ctx)

    torch.manual_seed(0)
    args = tiny_args(n_future_tokens=2)
    module = MTPTrainingModule(MTPTransformer(args).train(), None, RecordingRho1(top_k=0.5))
    block_out: list[torch.dtype] = []
    module.blocks()[0].register_forward_hook(lambda _m, _i, out: block_out.append(out.dtype))
    wrapped = parallelize(module, "fsdp", torch.device("cpu"), param_dtype=torch.bfloat16)
    ctx = LossContext(denominators=torch.tensor([1001.0, 997.0], dtype=torch.float64))
    loss, _ = wrapped(**batch, ref_ce=ref_ce, ctx=ctx)
    loss.backward()

    assert block_out == [torch.bfloat16]  # the policy is in effect
    assert seen["ref_ce"].dtype == torch.float32 and torch.equal(seen["ref_ce"], ref_ce)
    assert seen["denominators"].dtype == torch.float64
    assert seen["denominators"].tolist() == [1001.0, 997.0]


def test_rho1_reference_runs_in_the_policy_precision(tmp_path):
    """``runtime.dtype: bfloat16``: the frozen reference is loaded in bf16 (the policy's forward
    precision under FSDP2) and its per-token CE comes out in fp32."""
    from weighted_mtp.model_io.micro import build_micro_reference
    from weighted_mtp.model_io.reference import load_reference_model, save_reference_model
    from weighted_mtp.training.config import RuntimeParams
    from weighted_mtp.training.distributed import WorldInfo
    from weighted_mtp.training.spec import JobSpec
    from weighted_mtp.training.worker import _build_method

    vocab = 40
    ref_dir = tmp_path / "ref"
    model = build_micro_reference(vocab, dim=32, n_layers=2, n_heads=4, max_seq_len=64, seed=5)
    save_reference_model(model, ref_dir, tokenizer=b"spm")
    spec = JobSpec(
        method="rho1",
        run_dir=str(tmp_path),
        params={"chunk_size": 16},
        runtime=RuntimeParams(dtype="bfloat16"),
        init_model=str(tmp_path / "unused"),
        reference_model=str(ref_dir),
        train_jsonl=str(tmp_path / "unused.jsonl"),
    )
    method = _build_method(spec, WorldInfo(0, 0, 1, torch.device("cpu")), vocab)
    input_ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    targets = torch.roll(input_ids, -1, 1)
    targets[:, -1] = IGNORE_INDEX
    ref_ce = method.reference(input_ids, targets)

    def ce_in(dtype: torch.dtype) -> torch.Tensor:
        ref = load_reference_model(ref_dir, dtype=dtype)
        with torch.no_grad():
            hidden = ref.model.model(input_ids=input_ids, use_cache=False).last_hidden_state
            return methods_module.reference_token_ce(hidden, ref.model.lm_head.weight, targets, 16)

    assert ref_ce.dtype == torch.float32
    torch.testing.assert_close(ref_ce, ce_in(torch.bfloat16), rtol=0, atol=0)
    assert not torch.equal(ref_ce, ce_in(torch.float32))
