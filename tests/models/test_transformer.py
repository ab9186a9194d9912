"""Layout, shapes, dtypes and causality of the MTP transformer."""

from __future__ import annotations

import pytest
import torch

from weighted_mtp.models import (
    ModelArgs,
    MTPTransformer,
    apply_rope,
    debug_args,
    rope_tables,
)

BLOCK_KEYS = [
    "attention.wq.weight",
    "attention.wk.weight",
    "attention.wv.weight",
    "attention.wo.weight",
    "feed_forward.w1.weight",
    "feed_forward.w2.weight",
    "feed_forward.w3.weight",
    "attention_norm.weight",
    "ffn_norm.weight",
]


def test_state_dict_keys_follow_meta_7b_1t_4_layout() -> None:
    # 7B_1T_4 in miniature: n_layers=6, 4 future tokens -> layers.0..2 and extra_heads.0..2.
    args = ModelArgs(dim=32, n_layers=6, n_heads=4, vocab_size=50, multiple_of=16)
    state = MTPTransformer(args).state_dict()
    expected = {"tok_embeddings.weight", "norm.weight", "output.weight"}
    expected |= {f"layers.{i}.{key}" for i in range(3) for key in BLOCK_KEYS}
    expected |= {f"extra_heads.{i}.{key}" for i in range(3) for key in BLOCK_KEYS}
    assert set(state) == expected  # no RoPE tables, nothing else
    assert state["layers.0.attention.wk.weight"].shape == (32, 32)
    assert state["layers.0.feed_forward.w1.weight"].shape == (args.ffn_hidden_dim, 32)
    assert state["output.weight"].shape == (50, 32)


def test_gqa_and_ffn_shapes() -> None:
    args = debug_args()
    model = MTPTransformer(args)
    assert model.layers[0].attention.wk.weight.shape == (2 * 16, 64)
    assert model.layers[0].feed_forward.w3.weight.shape == (args.ffn_hidden_dim, 64)
    assert args.ffn_hidden_dim == 176  # int(2 * 256 / 3) = 170, rounded up to 16


def test_logit_shapes_and_heads_are_blocks_on_the_trunk() -> None:
    torch.manual_seed(0)
    model = MTPTransformer(debug_args(n_layers=5)).double().eval()
    tokens = torch.randint(0, 128, (2, 9))
    with torch.no_grad():
        logits, hidden = model(tokens, return_hidden=True)
        head0 = model(tokens, return_all_heads=False)
        assert logits.shape == (2, 9, 4, 128) and head0.shape == (2, 9, 1, 128)
        assert hidden.shape == (2, 9, 64)
        torch.testing.assert_close(head0, logits[:, :, :1])
        torch.testing.assert_close(model.output(hidden), logits[:, :, 0])
        trunk = model.trunk_forward(tokens)
        for k in range(4):
            by_hand = model.output(model.head_forward(k, trunk))
            torch.testing.assert_close(by_hand, logits[:, :, k], atol=1e-12, rtol=0)
        # The heads differ (distinct blocks), so head k is not head 0 relabelled.
        assert not torch.allclose(logits[:, :, 1], logits[:, :, 0])
    assert model.head_block(0) is model.layers[-1]
    assert model.head_block(3) is model.extra_heads[2]


def test_causal_every_head() -> None:
    torch.manual_seed(0)
    model = MTPTransformer(debug_args()).double().eval()
    tokens = torch.randint(0, 128, (1, 10))
    changed = tokens.clone()
    changed[0, 6] = (changed[0, 6] + 1) % 128
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-12, rtol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_padding_mask_without_cache_matches_unpadded_row() -> None:
    torch.manual_seed(0)
    model = MTPTransformer(debug_args()).double().eval()
    row = torch.randint(1, 128, (6,))
    tokens = torch.cat([torch.zeros(3, dtype=torch.long), row])[None]
    attention = torch.tensor([[False] * 3 + [True] * 6])
    positions = (attention.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        padded = model(tokens, positions=positions, key_padding_mask=attention)
        alone = model(row[None])
    assert torch.isfinite(padded).all()
    torch.testing.assert_close(padded[:, 3:], alone, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtypes_keep_rope_precise(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    reference = MTPTransformer(debug_args()).eval()
    model = MTPTransformer(debug_args()).eval()
    model.load_state_dict(reference.state_dict())
    model.to(dtype)
    table_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert model.rope_cos.dtype == table_dtype and model.rope_sin.dtype == table_dtype
    cos, _ = rope_tables(16, 256, 10000.0, dtype=table_dtype)
    torch.testing.assert_close(model.rope_cos, cos)
    tokens = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        got = model(tokens)
        expected = reference(tokens)
    assert got.dtype == dtype
    tol = 1e-6 if dtype == torch.float64 else 0.1
    torch.testing.assert_close(got.float(), expected, atol=tol, rtol=tol)


def test_meta_device_init_then_to_empty_rebuilds_rope() -> None:
    with torch.device("meta"):
        model = MTPTransformer(debug_args())
    model.to_empty(device="cpu")
    cos, sin = rope_tables(16, 256, 10000.0)
    torch.testing.assert_close(model.rope_cos, cos)
    torch.testing.assert_close(model.rope_sin, sin)


def test_rope_matches_meta_complex_formula() -> None:
    # Meta: freqs_cis = polar(1, outer(t, 1 / theta ** (arange(0, d, 2)[: d // 2] / d))).
    d, theta = 8, 10000.0
    freqs = 1.0 / (theta ** (torch.arange(0, d, 2)[: d // 2].double() / d))
    cis = torch.polar(
        torch.ones(5, d // 2, dtype=torch.float64), torch.outer(torch.arange(5.0).double(), freqs)
    )
    cos, sin = rope_tables(d, 5, theta, dtype=torch.float64)
    torch.testing.assert_close(cos, cis.real)
    torch.testing.assert_close(sin, cis.imag)


def test_errors_name_the_problem() -> None:
    model = MTPTransformer(debug_args(max_seq_len=8))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="key_padding_mask"):
        model(
            torch.zeros(1, 4, dtype=torch.long), key_padding_mask=torch.ones(1, 5, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="positions"):
        model(torch.zeros(1, 4, dtype=torch.long), positions=torch.full((1, 4), 8))


def test_real_rope_path_equals_complex_path() -> None:
    # The real path serves devices without complex kernels (MPS); both must agree.
    x = torch.randn(2, 5, 3, 8, dtype=torch.float64)
    cos, sin = rope_tables(8, 5, 100.0, dtype=torch.float64)
    cos, sin = cos[None, :, None], sin[None, :, None]
    real = apply_rope(x, cos, sin)
    torch.testing.assert_close(apply_rope(x, cos, sin, torch.complex(cos, sin)), real)
    # Pairs are adjacent features: position 0 is the identity, norms are kept.
    torch.testing.assert_close(real[:, 0], x[:, 0])
    torch.testing.assert_close(real.norm(dim=-1), x.norm(dim=-1))
