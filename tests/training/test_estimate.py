"""The memory estimate (training/estimate/) against the same step measured on real tensors.

The estimate runs the real training module on fake tensors under FSDPMemTracker; the
measurement runs the very same step on real CPU tensors (same fake 4-rank process group, so the
same shards and buffers) and reads the peak from the CPU allocator's own running total as the
profiler records it, an instrument independent of the tracker. Micro shapes (dim 64).
"""

from __future__ import annotations

import re
import sys

import pytest
import torch.distributed as dist

from weighted_mtp.models.args import ModelArgs
from weighted_mtp.models.transformer import debug_args
from weighted_mtp.models.value_head import ValueHead
from weighted_mtp.training.config import PARAMS_BY_METHOD, RuntimeParams
from weighted_mtp.training.estimate import (
    GIB,
    EstimateError,
    EstimateParams,
    MemoryEstimate,
    check_model_args,
    check_reference_config,
    estimate_memory,
    fake_process_group,
    measure_memory,
)

ARGS = debug_args(n_kv_heads=None, vocab_size=512, max_seq_len=256)
REFERENCE = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 512,
    "max_position_embeddings": 256,
}
# (method, activation checkpointing, grad_accum_steps): every method, both checkpointing modes,
# and the accumulation path (a second micro-batch on top of the first one's sharded gradients).
CASES = [
    ("baseline", "none", 2),
    ("baseline", "blocks", 1),
    ("critic", "none", 1),
    ("verifiable", "blocks", 2),
    ("rho1", "blocks", 1),
]
# A step whose peak is set by the parameters, gradients and AdamW states, as at 7B with one
# sequence per micro-batch: wide blocks, a tiny vocabulary, one 8-token sequence. Estimated
# first in the process (cold DTensor caches), where the stock tracker also counted the global
# shapes DTensor's sharding propagation computes in the same fake mode (1.6x the measured peak).
STATE_BOUND = ("baseline", "blocks", 1)
STATE_BOUND_ARGS = debug_args(n_kv_heads=None, vocab_size=64, dim=256, n_layers=8, max_seq_len=64)


def _setup(method: str, checkpointing: str, accum: int, batch_size: int = 4, seqlen: int = 128):
    params = PARAMS_BY_METHOD[method](
        batch_size=batch_size,
        grad_accum_steps=accum,
        max_seq_len=seqlen,
        chunk_size=256,
        warmup_steps=0,
    )
    runtime = RuntimeParams(
        device="cuda",
        strategy="fsdp",
        dtype="bfloat16",
        nproc_per_node=4,
        activation_checkpointing=checkpointing,
    )
    return params, runtime


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, str, int], tuple[MemoryEstimate, int]]:
    out = {}
    for case in CASES:
        params, runtime = _setup(*case)
        estimate = estimate_memory(case[0], params, runtime, ARGS, reference=REFERENCE)
        measured = measure_memory(case[0], params, runtime, ARGS, reference=REFERENCE)
        out[case] = (estimate, measured)
    return out


def test_a_state_bound_step_is_estimated_within_20_percent():
    params, runtime = _setup(*STATE_BOUND, batch_size=1, seqlen=8)
    estimate = estimate_memory("baseline", params, runtime, STATE_BOUND_ARGS)
    measured = measure_memory("baseline", params, runtime, STATE_BOUND_ARGS)
    assert abs(estimate.peak / measured - 1) <= 0.20, (estimate, measured)


@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_the_estimate_is_within_20_percent_of_the_measured_peak(results, case):
    estimate, measured = results[case]
    assert abs(estimate.peak / measured - 1) <= 0.20, (
        f"{case}: estimated {estimate.peak} B, measured {measured} B"
    )


def test_the_parts_add_up_and_the_report_ends_with_the_peak_line(results):
    estimate, _ = results[("rho1", "blocks", 1)]
    parts = (
        estimate.parameters,
        estimate.gradients,
        estimate.optimizer,
        estimate.activations,
        estimate.loss,
        estimate.other,
    )
    assert all(part >= 0 for part in parts) and sum(parts) == estimate.peak
    assert estimate.reference > 0 and estimate.reference <= estimate.parameters
    assert estimate.optimizer > 0 and estimate.activations > 0
    last = estimate.report(80)[-1]
    assert re.fullmatch(r"peak per GPU: \d+\.\d GiB of 80 GiB \(rho1, 4 ranks\)", last), last
    assert last == f"peak per GPU: {estimate.peak / GIB:.1f} GiB of 80 GiB (rho1, 4 ranks)"


def test_the_critic_holds_no_gradients_or_optimizer_states_but_the_value_heads(results):
    critic, _ = results[("critic", "none", 1)]
    baseline, _ = results[("baseline", "none", 2)]
    # At most the value head's own fp32 AdamW states (2) and gradient (1), sharded over the
    # 4 ranks (+10% for shard padding): nothing of the trunk's. (At 7B the head is ~2.1M
    # weights, 0.03% of the model; at dim 64 it is a sizeable part, so no ratio to baseline.)
    head = sum(p.numel() for p in ValueHead(ARGS.dim).parameters())
    assert critic.optimizer <= 1.1 * 2 * 4 * head / 4
    assert critic.gradients <= 1.1 * 4 * head / 4
    assert baseline.optimizer > 5 * critic.optimizer


def test_activation_checkpointing_lowers_the_activations(results):
    plain, _ = results[("baseline", "none", 2)]
    checkpointed, _ = results[("baseline", "blocks", 1)]
    assert checkpointed.activations < plain.activations / 2


def test_a_shape_that_differs_from_params_json_is_refused():
    configured = ModelArgs(dim=64, n_layers=4, n_heads=4, vocab_size=128, n_future_tokens=4)
    actual = ModelArgs(dim=128, n_layers=4, n_heads=4, vocab_size=128, n_future_tokens=4)
    with pytest.raises(EstimateError, match=r"dim: 64 here, 128 in the file"):
        check_model_args(configured, actual, source="params.json")
    check_model_args(configured, configured, source="params.json")


def test_the_reference_is_compared_as_transformers_resolves_it():
    # config.json files often leave num_key_value_heads out: it then equals the query heads.
    without = {k: v for k, v in REFERENCE.items() if k != "num_key_value_heads"}
    check_reference_config(REFERENCE, without, source="config.json")
    with pytest.raises(EstimateError, match=r"num_key_value_heads: 4 here, 2 in the file"):
        check_reference_config(REFERENCE, {**REFERENCE, "num_key_value_heads": 2}, source="c")


def test_estimate_params_refuse_an_unknown_model_field():
    with pytest.raises(ValueError, match="unknown field"):
        EstimateParams(model={"dim": 64, "n_layer": 4})
    assert EstimateParams().limit_gib == pytest.approx(72.0)


def test_ddp_and_an_existing_process_group_are_refused():
    params, runtime = _setup("baseline", "none", 1)
    with pytest.raises(EstimateError, match="strategy='ddp'"):
        estimate_memory("baseline", params, runtime.model_copy(update={"strategy": "ddp"}), ARGS)
    with fake_process_group(2), pytest.raises(EstimateError, match="already exists"):
        estimate_memory("baseline", params, runtime, ARGS)
    assert not dist.is_initialized()


def test_the_fake_group_gives_back_the_callers_excepthook():
    """torch wraps sys.excepthook in init_process_group and leaves it wrapped: the estimate
    runs in the user's process, whose hook (Rich's, IPython's) must survive it."""

    def own_hook(*args: object) -> None:
        pass

    saved, sys.excepthook = sys.excepthook, own_hook
    try:
        with fake_process_group(2):
            pass
        assert sys.excepthook is own_hook
    finally:
        sys.excepthook = saved
