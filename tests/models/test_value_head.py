"""The value head: per-token features pooled by a causal running max, read linearly with a bias;
causal through the whole model; which parameters the critic's and verifiable's losses train."""

from __future__ import annotations

import torch

from weighted_mtp.alignment import IGNORE_INDEX
from weighted_mtp.losses import CriticMethod, LossContext, VerifiableMethod
from weighted_mtp.models import MTPTransformer, ValueHead, debug_args
from weighted_mtp.models.value_head import VALUE_FEATURES, running_max
from weighted_mtp.training.module import MTPTrainingModule


def _slow_value(head: ValueHead, hidden: torch.Tensor, mask: torch.Tensor | None):
    """Position by position: the max over the masked positions so far of each feature of
    relu(A rmsnorm(h) + a) (0 before any), then w . pooled + b."""
    h = hidden.double()
    normed = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5) * head.norm.weight.double()
    feats = torch.relu(normed @ head.features.weight.double().T + head.features.bias.double())
    bsz, seqlen = hidden.shape[:2]
    out = torch.zeros(bsz, seqlen, dtype=torch.float64)
    for b in range(bsz):
        for t in range(seqlen):
            upto = torch.ones(t + 1, dtype=torch.bool) if mask is None else mask[b, : t + 1]
            pooled = (
                feats[b, : t + 1][upto].amax(0)
                if upto.any()
                else torch.zeros(feats.shape[-1], dtype=torch.float64)
            )
            out[b, t] = pooled @ head.weight.double()[0] + head.bias.double()
    return out


def test_state_keys_shapes_and_initial_bias() -> None:
    head = ValueHead(64)
    assert tuple(head.state_dict()) == ValueHead.STATE_KEYS
    assert head.features.weight.shape == (VALUE_FEATURES, 64)
    assert head.weight.shape == (1, VALUE_FEATURES)
    assert torch.equal(head.bias, torch.zeros(1))
    assert ValueHead(64, features=8).weight.shape == (1, 8)


def test_values_equal_a_position_by_position_reference() -> None:
    torch.manual_seed(0)
    head = ValueHead(16, init_std=0.5, features=12).double()
    with torch.no_grad():
        head.bias.fill_(0.3)
        head.norm.weight.uniform_(0.5, 1.5)
    hidden = torch.randn(2, 6, 16, dtype=torch.float64)
    torch.testing.assert_close(head(hidden), _slow_value(head, hidden, None))
    mask = torch.tensor(
        [[False, False, True, True, True, False], [False, True, True, False] + [True] * 2]
    )
    got = head(hidden, mask)
    torch.testing.assert_close(got, _slow_value(head, hidden, mask))
    # Before a row's first output position the pooled features are 0: V = b.
    torch.testing.assert_close(got[0, :2], torch.full((2,), 0.3, dtype=torch.float64))


def test_running_max_ignores_unmasked_positions_and_is_causal() -> None:
    feats = torch.tensor([[[5.0], [1.0], [3.0], [2.0], [9.0]]])
    mask = torch.tensor([[False, True, True, True, False]])
    assert running_max(feats, mask)[0, :, 0].tolist() == [0.0, 1.0, 3.0, 3.0, 3.0]


def test_a_later_token_never_changes_an_earlier_value() -> None:
    torch.manual_seed(0)
    model = MTPTransformer(debug_args(dim=32, n_layers=3, n_future_tokens=2)).double()
    module = MTPTrainingModule(model, ValueHead(32, init_std=1.0).double(), VerifiableMethod())
    tokens = torch.randint(0, 128, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[:, :3] = False
    with torch.no_grad():
        before = module.value_head(module.head_hiddens(tokens, 1)[0], mask)
        changed = tokens.clone()
        changed[:, 6] = (changed[:, 6] + 1) % 128
        after = module.value_head(module.head_hiddens(changed, 1)[0], mask)
    torch.testing.assert_close(after[:, :6], before[:, :6], rtol=0, atol=0)
    assert not torch.equal(after[:, 6:], before[:, 6:])


def _batch_and_ctx(seed: int = 0):
    torch.manual_seed(seed)
    tokens = torch.randint(0, 128, (4, 12))
    targets = torch.cat([tokens[:, 1:], torch.full((4, 1), IGNORE_INDEX)], 1)
    targets[:, :4] = IGNORE_INDEX
    valid = targets != IGNORE_INDEX
    denominators = torch.tensor(
        [float((targets[:, k:] != IGNORE_INDEX).sum()) for k in range(2)], dtype=torch.float64
    )
    assert valid.any()
    return tokens, targets, torch.tensor([1, 0, 1, 0]), LossContext(denominators=denominators)


def _module(method):
    torch.manual_seed(0)
    model = MTPTransformer(debug_args(dim=32, n_layers=3, n_future_tokens=2)).double()
    return MTPTrainingModule(model, ValueHead(32, init_std=0.5).double(), method)


def _grads(method) -> tuple[dict[str, torch.Tensor | None], MTPTrainingModule]:
    module = _module(method)
    tokens, targets, correct, ctx = _batch_and_ctx()
    loss, _ = module(tokens, targets, correct, ctx=ctx)
    loss.backward()
    return {n: p.grad for n, p in module.named_parameters()}, module


def test_the_critic_trains_the_value_head_alone() -> None:
    grads, module = _grads(CriticMethod())
    assert all(grads[f"value_head.{k}"].abs().sum() > 0 for k in ValueHead.STATE_KEYS)
    # The policy the critic hands to verifiable is base_model's, untouched.
    assert all(not p.requires_grad and p.grad is None for p in module.model.parameters())


def test_verifiable_value_loss_reaches_the_trunk_through_the_head() -> None:
    with_value, _ = _grads(VerifiableMethod(value_coef=1.0))
    without, _ = _grads(VerifiableMethod(value_coef=0.0))
    assert all(with_value[f"value_head.{k}"].abs().sum() > 0 for k in ValueHead.STATE_KEYS)
    # The TD weights read V detached: without the value loss nothing trains the head.
    assert all(not without[f"value_head.{k}"].any() for k in ValueHead.STATE_KEYS)
    trunk = [n for n in with_value if n.startswith("model.layers.")]
    assert trunk and all(not torch.equal(with_value[n], without[n]) for n in trunk)
