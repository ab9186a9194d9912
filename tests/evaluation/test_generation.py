"""Batched KV-cache generation: padding, cache, sampling, stop sequences (real MTPTransformer)."""

from __future__ import annotations

import pytest
import torch

from weighted_mtp.evaluation.generation import (
    generate,
    generate_samples,
    left_pad,
    select_next_token,
)
from weighted_mtp.models import MTPTransformer, debug_args

# A decode for tests: every token is one character, so stop sequences can be placed exactly.
ALPHABET = "abcdefghijklmnopqrstuvwxyz\n# ()=:"


def decode(ids: list[int]) -> str:
    return "".join(ALPHABET[i % len(ALPHABET)] for i in ids)


@pytest.fixture(scope="module")
def model() -> MTPTransformer:
    torch.manual_seed(0)
    # float64: argmax comparisons between differently batched computations never hit a
    # rounding tie. init std 0.3 gives peaked, context-dependent logits.
    net = MTPTransformer(debug_args(max_seq_len=96))
    net.init_weights(std=0.3)
    return net.double().eval()


PROMPTS = [[5, 9, 13], [7, 1, 2, 3, 4, 5, 6, 8, 11], [100], [3, 3, 3, 3, 20]]


def greedy_by_recompute(model: MTPTransformer, prompt: list[int], n: int) -> list[int]:
    """Reference: no cache, no padding, the whole prefix recomputed for every token."""
    seq = list(prompt)
    for _ in range(n):
        logits = model(torch.tensor([seq]), return_all_heads=False)
        seq.append(int(logits[0, -1, 0].argmax()))
    return seq[len(prompt) :]


def test_cached_generation_equals_recomputing_the_prefix(model):
    for prompt in PROMPTS:
        [gen] = generate(model, [prompt], max_new_tokens=12)
        assert gen.token_ids == greedy_by_recompute(model, prompt, 12)
        assert gen.finish_reason == "length"


def test_batched_left_padded_greedy_equals_per_prompt_greedy(model):
    alone = [generate(model, [p], max_new_tokens=12)[0].token_ids for p in PROMPTS]
    batched = [g.token_ids for g in generate(model, PROMPTS, max_new_tokens=12)]
    assert batched == alone
    # Rows finishing early (EOS) leave the batch; the others must be unaffected.
    eos = alone[1][4]
    batched_eos = generate(model, PROMPTS, max_new_tokens=12, eos_id=eos)
    for gen, ref in zip(batched_eos, alone, strict=True):
        expected = ref[: ref.index(eos)] if eos in ref else ref
        assert gen.token_ids == expected
        assert gen.finish_reason == ("eos" if eos in ref else "length")


def test_left_pad_marks_padding():
    tokens, valid = left_pad([[1, 2], [3]], pad_id=0)
    assert tokens.tolist() == [[1, 2], [0, 3]]
    assert valid.tolist() == [[True, True], [False, True]]


def test_sampling_is_reproducible_per_seed_and_differs_across_seeds(model):
    def run(seed: int) -> list[list[list[int]]]:
        out = generate_samples(
            model,
            PROMPTS,
            n_samples=3,
            batch_size=5,
            max_new_tokens=10,
            temperature=1.0,
            top_p=0.95,
            seed=seed,
        )
        return [[g.token_ids for g in per_prompt] for per_prompt in out]

    first, again, other = run(1), run(1), run(2)
    assert first == again
    assert first != other
    # Samples of one prompt differ among themselves (it is sampling, not greedy).
    assert any(len({tuple(s) for s in per_prompt}) > 1 for per_prompt in first)


def test_tiny_top_p_is_greedy(model):
    greedy = generate_samples(model, PROMPTS, max_new_tokens=10, batch_size=3)
    nucleus = generate_samples(
        model, PROMPTS, max_new_tokens=10, batch_size=3, temperature=1.5, top_p=1e-9, seed=7
    )
    assert [[g.token_ids for g in p] for p in nucleus] == [[g.token_ids for g in p] for p in greedy]


def test_top_p_samples_only_from_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    picks = select_next_token(logits, temperature=1.0, top_p=0.7, generator=gen)
    # Mass before token 1 is 0.5 < 0.7, before token 2 is 0.8 >= 0.7: only {0, 1} allowed.
    assert set(picks.tolist()) == {0, 1}
    assert 0.5 < (picks == 0).float().mean() < 0.75  # renormalised 0.5 / 0.8 = 0.625


def test_stop_sequences_truncate_the_completion(model):
    prompt = PROMPTS[1]
    [free] = generate(model, [prompt], max_new_tokens=30, decode=decode)
    stop_text = free.text[6:8]  # a stop sequence that the greedy completion does contain
    first = free.text.find(stop_text)
    [stopped] = generate(
        model, [prompt], max_new_tokens=30, decode=decode, stop=[stop_text, "never"]
    )
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:first]
    # Generation stopped at the token completing the stop sequence, not at the budget.
    assert stopped.n_tokens == first + len(stop_text)
    assert stopped.token_ids == free.token_ids[: stopped.n_tokens]


def test_stop_rows_finish_early_in_a_batch(model):
    free = generate(model, PROMPTS, max_new_tokens=20, decode=decode)
    stop_text = free[0].text[3:5]
    stopped = generate(model, PROMPTS, max_new_tokens=20, decode=decode, stop=[stop_text])
    for s, f in zip(stopped, free, strict=True):
        cut = f.text.find(stop_text)
        assert s.text == (f.text if cut < 0 else f.text[:cut])
        assert s.finish_reason == ("length" if cut < 0 else "stop")


def test_n_samples_per_prompt_in_prompt_order(model):
    calls = []
    out = generate_samples(
        model,
        PROMPTS,
        n_samples=3,
        batch_size=4,
        max_new_tokens=4,
        temperature=0.8,
        seed=3,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert [len(s) for s in out] == [3, 3, 3, 3]
    assert all(g.n_tokens == 4 for s in out for g in s)
    assert calls[-1] == (12, 12) and len(calls) == 3
    # Greedy rows of one prompt are identical whatever batch they landed in.
    greedy = generate_samples(model, PROMPTS, n_samples=2, batch_size=3, max_new_tokens=6)
    for per_prompt, prompt in zip(greedy, PROMPTS, strict=True):
        ref = greedy_by_recompute(model, prompt, 6)
        assert all(g.token_ids == ref for g in per_prompt)


def test_long_prompts_are_clipped_to_fit_the_model(model):
    long_prompt = list(range(1, 120))  # longer than max_seq_len=96
    [[gen]] = generate_samples(model, [long_prompt], max_new_tokens=8)
    assert gen.token_ids == greedy_by_recompute(model, long_prompt[-88:], 8)


@torch.no_grad()
def reference_generate(
    model: MTPTransformer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    stop: tuple[str, ...] = (),
    seed: int = 0,
) -> list[tuple[list[int], str]]:
    """The obvious batched loop (the implementation before the lean one): the full forward
    with a freshly built padding mask and positions at every step, every head-0 logit
    unembedded, a finished row dropped at the step it finishes. Returns (tokens, reason)."""
    generator = torch.Generator().manual_seed(seed)
    tokens, prompt_valid = left_pad(prompts, pad_id=0)
    batch, width = tokens.shape
    valid = torch.ones(batch, width + max_new_tokens, dtype=torch.bool)
    valid[:, :width] = prompt_valid
    lengths = prompt_valid.sum(dim=1)
    cache = model.new_cache(batch, width + max_new_tokens)
    logits = model(
        tokens,
        cache=cache,
        return_all_heads=False,
        positions=(prompt_valid.long().cumsum(dim=1) - 1).clamp(min=0),
        key_padding_mask=prompt_valid,
    )[:, -1, 0]
    out: list[list[int]] = [[] for _ in prompts]
    reasons = ["length"] * len(prompts)
    rows = list(range(len(prompts)))
    for step in range(max_new_tokens):
        next_tokens = select_next_token(
            logits, temperature=temperature, top_p=top_p, generator=generator
        )
        keep = []
        for j, token in enumerate(next_tokens.tolist()):
            row = rows[j]
            if token == eos_id:
                reasons[row] = "eos"
                continue
            out[row].append(token)
            if any(s in decode(out[row]) for s in stop):
                reasons[row] = "stop"
                continue
            keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        index = torch.tensor(keep)
        cache = cache.select_rows(index)
        rows, lengths, valid = [rows[j] for j in keep], lengths[index], valid[index]
        logits = model(
            next_tokens[index][:, None],
            start_pos=width + step,
            cache=cache,
            return_all_heads=False,
            positions=(lengths + step)[:, None],
            key_padding_mask=valid[:, : width + step + 1],
        )[:, -1, 0]
    return list(zip(out, reasons, strict=True))


class ForwardOnly(torch.nn.Module):
    """The model seen only through the contract of docs/contracts.md (forward + new_cache),
    so generate() takes its generic path instead of the MTPTransformer one."""

    def __init__(self, inner: MTPTransformer) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, tokens, **kwargs):
        return self.inner(tokens, **kwargs)

    def new_cache(self, batch_size: int, max_len: int):
        return self.inner.new_cache(batch_size, max_len)


MIXED = [[5, 9, 13], [7, 1, 2, 3, 4, 5, 6, 8, 11], [100], [3, 3, 3, 3, 20], [40, 41]]


@pytest.mark.parametrize(
    "sampling",
    [dict(), dict(temperature=0.8, top_p=0.95, seed=5), dict(temperature=1.3, seed=11)],
    ids=["greedy", "top-p", "full-softmax"],
)
@pytest.mark.parametrize("path", ["mtp", "forward-only"])
def test_lean_generation_equals_the_obvious_loop(model, sampling, path):
    free = reference_generate(model, MIXED, max_new_tokens=16, **sampling)
    # An EOS some rows emit and a stop sequence some rows contain, so that rows leave the
    # batch at different steps (which also changes the random numbers the others draw).
    eos = free[1][0][5]
    stop = (decode(free[3][0])[1:3],)
    expected = reference_generate(
        model, MIXED, max_new_tokens=16, eos_id=eos, stop=stop, **sampling
    )
    reasons = {reason for _, reason in expected}
    # Greedy rows are independent: both rules fire. Sampled rows change course once a row
    # leaves (the draws shift), so at least one of them must fire.
    assert reasons >= {"eos", "stop"} if not sampling else reasons & {"eos", "stop"}
    seed = sampling.pop("seed", 0)
    net = model if path == "mtp" else ForwardOnly(model)
    got = generate(
        net,
        MIXED,
        max_new_tokens=16,
        eos_id=eos,
        decode=decode,
        stop=stop,
        generator=torch.Generator().manual_seed(seed),
        **sampling,
    )
    assert [(g.token_ids, g.finish_reason) for g in got] == expected
    # Without EOS or stop every row runs to the budget, tokens kept on the device.
    plain = generate(
        net, MIXED, max_new_tokens=16, generator=torch.Generator().manual_seed(seed), **sampling
    )
    assert [(g.token_ids, g.finish_reason) for g in plain] == free


def test_unpadded_batch_equals_rows_alone(model):
    # Equal lengths: no mask, positions = slots; each row must still decode as it would alone.
    prompts = [[5, 9, 13, 2], [7, 1, 2, 3], [100, 4, 4, 4]]
    batched = generate(model, prompts, max_new_tokens=12)
    for prompt, gen in zip(prompts, batched, strict=True):
        assert gen.token_ids == greedy_by_recompute(model, prompt, 12)


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_sampling_follows_the_distribution(top_p):
    probs = torch.tensor([0.4, 0.0, 0.3, 0.2, 0.1])
    logits = torch.log(probs).repeat(8000, 1)  # -inf for the impossible token 1
    gen = torch.Generator().manual_seed(3)
    picks = select_next_token(logits, temperature=1.0, top_p=top_p, generator=gen)
    freq = torch.bincount(picks, minlength=5).double() / picks.numel()
    # top_p 0.9: masses before tokens 0, 2, 3, 4 are 0, 0.4, 0.7, 0.9 -> token 4 is cut.
    kept = probs if top_p == 1.0 else probs * torch.tensor([1.0, 1, 1, 1, 0])
    expected = (kept / kept.sum()).double()
    assert freq[1] == 0 and (top_p == 1.0 or freq[4] == 0)
    # 8000 draws: a standard error below 0.006 per token; 0.025 is over 4 of them.
    torch.testing.assert_close(freq, expected, atol=0.025, rtol=0)


def test_sampling_never_picks_a_zero_weight_token_at_the_edges(monkeypatch):
    # Uniform draws at 0 and just below 1 hit the ends of the cumulative weights, where
    # zero-weight tokens sit (masked out of the nucleus, or underflowed probabilities).
    from weighted_mtp.evaluation import sampling

    edges = torch.tensor([[0.0], [1.0 - 2**-24]])
    monkeypatch.setattr(sampling.torch, "rand", lambda shape, **kw: edges.to(kw["dtype"]))
    weights = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]]).repeat(2, 1)
    assert sampling._inverse_cdf(weights, None).tolist() == [1, 3]


def test_row_generators_sample_each_row_as_it_would_alone(model):
    # One generator per row: a row's samples do not depend on its neighbours, nor on the rows
    # that leave the batch before it (EOS, stop), so any split of rows gives the same samples.
    seeds = [11, 12, 13, 14, 15]

    def streams(chosen):
        return [torch.Generator().manual_seed(s) for s in chosen]

    sampling = dict(max_new_tokens=16, temperature=0.9, top_p=0.95)
    free = generate(model, MIXED, generators=streams(seeds), **sampling)
    eos = free[1].token_ids[5]
    stop = (decode(free[3].token_ids)[1:3],)
    rules = dict(eos_id=eos, decode=decode, stop=stop, **sampling)
    batched = generate(model, MIXED, generators=streams(seeds), **rules)
    assert {g.finish_reason for g in batched} >= {"eos", "stop"}
    alone = [
        generate(model, [prompt], generators=streams([seed]), **rules)[0]
        for prompt, seed in zip(MIXED, seeds, strict=True)
    ]
    assert batched == alone
    with pytest.raises(ValueError, match="generators for"):
        generate(model, MIXED, generators=streams(seeds[:2]), **sampling)
