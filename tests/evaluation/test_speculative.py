"""Self-speculative decoding returns exactly plain greedy's output, on real MTPTransformers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from weighted_mtp.evaluation.generation import generate
from weighted_mtp.evaluation.speculative import speculative_generate, speculative_generate_many
from weighted_mtp.models import MTPTransformer, debug_args

ALPHABET = "abcdefghijklmnopqrstuvwxyz\n# ()=:"


def decode(ids: list[int]) -> str:
    return "".join(ALPHABET[i % len(ALPHABET)] for i in ids)


PROMPTS = [[5, 9, 13], [7, 1, 2, 3, 4, 5, 6, 8, 11], [30], [3, 3, 3, 3, 20]]


@pytest.fixture(scope="module")
def random_model() -> MTPTransformer:
    torch.manual_seed(1)
    net = MTPTransformer(debug_args(max_seq_len=128))
    net.init_weights(std=0.3)
    return net.double().eval()


def rigged_model(vocab: int = 32, right_heads: int = 2) -> MTPTransformer:
    """Every block is the identity except the FFNs of heads 1..right_heads, which map the
    current token ``y`` to ``y + k``; embeddings are one-hot and the unembedding maps ``x`` to
    ``x + 1`` (mod vocab). So head 0 predicts ``y + 1``, heads 1..right_heads predict
    ``y + k + 1`` (correct multi-token guesses) and the remaining heads wrongly ``y + 1``."""
    args = debug_args(vocab_size=vocab, dim=64, n_layers=5, n_future_tokens=4, max_seq_len=128)
    net = MTPTransformer(args).double()
    with torch.no_grad():
        for block in [*net.layers, *net.extra_heads]:
            block.attention.wo.weight.zero_()
            block.feed_forward.w2.weight.zero_()
        net.tok_embeddings.weight.zero_()
        net.tok_embeddings.weight[:, :vocab] = torch.eye(vocab, dtype=torch.float64)
        succ = (torch.arange(vocab) + 1) % vocab
        net.output.weight.zero_()
        net.output.weight[succ, torch.arange(vocab)] = 1.0
        normed = 8.0  # RMSNorm of a one-hot vector in dim 64: 1 / sqrt(1/64)
        unit = F.silu(torch.tensor(normed, dtype=torch.float64)) * normed
        for k in range(1, right_heads + 1):
            ffn = net.head_block(k).feed_forward
            ffn.w1.weight.zero_()
            ffn.w3.weight.zero_()
            ffn.w1.weight[:vocab, :vocab] = torch.eye(vocab, dtype=torch.float64)
            ffn.w3.weight[:vocab, :vocab] = torch.eye(vocab, dtype=torch.float64)
            shift = torch.zeros(64, vocab, dtype=torch.float64)
            shift[(torch.arange(vocab) + k) % vocab, torch.arange(vocab)] = 1.0
            shift[torch.arange(vocab), torch.arange(vocab)] -= 1.0
            ffn.w2.weight.zero_()
            ffn.w2.weight[:, :vocab] = shift / unit
    return net.eval()


def test_identical_to_greedy_on_a_random_model(random_model):
    for prompt in PROMPTS:
        [greedy] = generate(random_model, [prompt], max_new_tokens=25)
        spec, stats = speculative_generate(random_model, prompt, max_new_tokens=25)
        assert spec.token_ids == greedy.token_ids
        assert stats.n_generated == 25
        assert 0.0 <= stats.acceptance_rate <= 1.0
        assert 1.0 <= stats.tokens_per_forward <= random_model.n_future_tokens


def test_identical_to_greedy_with_eos_and_stop(random_model):
    [free] = generate(random_model, [PROMPTS[1]], max_new_tokens=25, decode=decode)
    eos = free.token_ids[9]
    stop = [free.text[4:6]]
    for kwargs in ({"eos_id": eos}, {"stop": stop}, {"eos_id": eos, "stop": stop}):
        for prompt in PROMPTS:
            [greedy] = generate(random_model, [prompt], max_new_tokens=25, decode=decode, **kwargs)
            spec, _ = speculative_generate(
                random_model, prompt, max_new_tokens=25, decode=decode, **kwargs
            )
            assert spec == greedy


def test_rigged_model_accepts_the_right_heads_guesses():
    model = rigged_model(right_heads=2)
    [greedy] = generate(model, [[3, 5]], max_new_tokens=40)
    assert greedy.token_ids == [(6 + i) % 32 for i in range(40)]  # the rig works
    spec, stats = speculative_generate(model, [3, 5], max_new_tokens=40)
    assert spec.token_ids == greedy.token_ids
    # Heads 1 and 2 are right, head 3 is wrong: 2 of every 3 guesses accepted, so each
    # verification commits 3 tokens.
    assert stats.acceptance_rate == pytest.approx(2 / 3, abs=0.05)
    assert stats.tokens_per_forward > 2.5
    assert stats.n_forwards < 40 / 2.5


def test_all_heads_right_gives_n_tokens_per_forward():
    model = rigged_model(right_heads=3)
    spec, stats = speculative_generate(model, [0], max_new_tokens=41)
    assert spec.token_ids == [(1 + i) % 32 for i in range(41)]
    assert stats.acceptance_rate == 1.0
    assert stats.n_forwards == 11  # the prompt's forward gives 1 token, each other one 4
    assert stats.tokens_per_forward == pytest.approx(41 / 11)


def test_single_head_model_is_plain_greedy():
    torch.manual_seed(2)
    model = MTPTransformer(debug_args(n_future_tokens=1)).double().eval()
    [greedy] = generate(model, [PROMPTS[0]], max_new_tokens=10)
    spec, stats = speculative_generate(model, PROMPTS[0], max_new_tokens=10)
    assert spec.token_ids == greedy.token_ids
    assert stats.n_drafted == 0 and stats.acceptance_rate == 0.0
    assert stats.tokens_per_forward == 1.0


def test_stats_add_up_over_prompts(random_model):
    seen = []
    gens, stats = speculative_generate_many(
        random_model,
        PROMPTS,
        max_new_tokens=8,
        progress=lambda done, total: seen.append((done, total.n_generated)),
    )
    assert seen == [(i, 8 * i) for i in range(1, len(PROMPTS) + 1)]
    assert len(gens) == len(PROMPTS)
    assert stats.n_generated == 8 * len(PROMPTS)
    assert stats.n_accepted <= stats.n_drafted
    assert set(stats.as_dict()) >= {"acceptance_rate", "tokens_per_forward"}


class ForwardOnly(torch.nn.Module):
    """The model seen only through docs/contracts.md (forward, new_cache, n_future_tokens), so
    speculative_generate takes its generic path instead of the MTPTransformer one."""

    def __init__(self, inner: MTPTransformer) -> None:
        super().__init__()
        self.inner = inner
        self.n_future_tokens = inner.n_future_tokens

    def forward(self, tokens, **kwargs):
        return self.inner(tokens, **kwargs)

    def new_cache(self, batch_size: int, max_len: int):
        return self.inner.new_cache(batch_size, max_len)


def test_generic_model_path_gives_the_same_result_and_stats():
    model = rigged_model(right_heads=2)
    for net in (model, ForwardOnly(model)):
        spec, stats = speculative_generate(net, [3, 5], max_new_tokens=30)
        assert spec.token_ids == [(6 + i) % 32 for i in range(30)]
        # The prompt's guesses (heads 1, 2 right) are accepted: 3 tokens after the prompt's.
        assert stats.n_forwards < 30 / 2.5


def test_stacked_heads_verify_and_draft_as_the_full_forward(monkeypatch):
    """The MTPTransformer path runs the heads as one batched block with their own cache; what
    it commits and drafts must equal the model's full forward at every step, so a head cache
    left wrong by a partial acceptance would show here, not only in the speed."""
    from weighted_mtp.evaluation import speculative

    torch.manual_seed(3)
    # A small vocabulary makes random guesses agree often: partial acceptances of every length.
    net = MTPTransformer(debug_args(vocab_size=3, max_seq_len=128)).double().eval()
    net.init_weights(std=0.3)
    real_verify = speculative.verify
    steps: dict[str, list] = {"fast": [], "generic": []}

    for name, model in (("fast", net), ("generic", ForwardOnly(net))):

        def recording(*args, name=name, **kwargs):
            out = real_verify(*args, **kwargs)
            steps[name].append(out)
            return out

        monkeypatch.setattr(speculative, "verify", recording)
        for prompt in ([0, 1, 2, 1], [2], [1, 1, 0, 2, 2, 0, 1]):
            speculative_generate(model, prompt, max_new_tokens=40)
    assert steps["fast"] == steps["generic"]
    accepted = [len(verified) - 1 for verified, _ in steps["fast"]]
    assert {0, 1, 2, 3} <= set(accepted)  # every acceptance length was exercised
