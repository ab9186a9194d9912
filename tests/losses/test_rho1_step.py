"""Rho-1 under gradient accumulation and data parallelism: every head's step loss is the mean
CE over the step's kept tokens (all micro-batches, all ranks), against a token loop over 4
micro-batches of unequal sizes, in one process and in 2 gloo processes (DDP)."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from weighted_mtp.alignment import IGNORE_INDEX
from weighted_mtp.losses.methods import Batch, Rho1Method
from weighted_mtp.models import MTPTransformer, debug_args
from weighted_mtp.training.distributed import WorldInfo
from weighted_mtp.training.loop import step_context
from weighted_mtp.training.module import MTPTrainingModule

V, T, N_HEADS, TOP_K = 40, 14, 4, 0.5
ROWS = (1, 3, 2, 4)  # rows per micro-batch: unequal on purpose
PROMPTS = (4, 6, 3, 8)  # prompt lengths by row (cycled): unequal valid counts too


def _model() -> MTPTransformer:
    torch.manual_seed(0)
    return MTPTransformer(debug_args(vocab_size=V, dim=32, n_heads=4, n_kv_heads=2)).double()


def _micro_batches(seed: int, scale: int = 1) -> list[dict[str, torch.Tensor]]:
    """4 micro-batches of ``scale * ROWS[m]`` rows, with prompts and padding."""
    g = torch.Generator().manual_seed(seed)
    out, r = [], 0
    for n in ROWS:
        n *= scale
        tokens = torch.randint(0, V, (n, T), generator=g)
        targets = torch.roll(tokens, -1, 1)
        for row in range(n):
            targets[row, : PROMPTS[r % len(PROMPTS)]] = IGNORE_INDEX
            targets[row, T - 1 - (r % 3) :] = IGNORE_INDEX  # padding of 0..2 columns + end
            r += 1
        ref_ce = torch.rand(n, T, generator=g, dtype=torch.float64) * 3
        out.append({"input_ids": tokens, "targets": targets, "ref_ce": ref_ce})
    return out


def _loop_step_loss(model: MTPTransformer, micro: list[dict], head0_always: bool):
    """The obvious definition: per head, select each micro-batch's top ``TOP_K`` tokens by
    excess loss, then the step loss is sum over every kept token of its CE / their count."""
    total = 0.0
    for k in range(N_HEADS):
        kept = []
        for mb in micro:
            logits = model(mb["input_ids"])  # [B, T, n_heads, V]
            items = []
            tokens, targets, ref = mb["input_ids"], mb["targets"], mb["ref_ce"]
            for b in range(tokens.shape[0]):
                for t in range(T - k):
                    j = t + k
                    if targets[b, j] == IGNORE_INDEX:
                        continue
                    ce = F.cross_entropy(logits[b, t, k][None], targets[b, j][None])
                    items.append((float(ce.detach()) - float(ref[b, j]), ce))
            if k == 0 and head0_always:
                kept += [ce for _, ce in items]
                continue
            n_keep = max(1, math.ceil(TOP_K * len(items)))
            kept += [ce for _, ce in sorted(items, key=lambda x: -x[0])[:n_keep]]
        total = total + sum(kept) / len(kept)
    return total


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _step(module: torch.nn.Module, micro: list[dict], world: WorldInfo) -> torch.Tensor:
    """One optimizer step's forward/backward as the loop runs it (``step_context``)."""
    batches = [Batch(input_ids=m["input_ids"], targets=m["targets"]) for m in micro]
    ctx = step_context(batches, N_HEADS, world, chunk_size=16)
    total = torch.zeros((), dtype=torch.float64)
    for batch, m in zip(batches, micro, strict=True):
        batch.ref_ce = m["ref_ce"]  # what method.prepare(batch) would have set
        loss, _ = module(batch.input_ids, batch.targets, None, batch.ref_ce, ctx=ctx)
        loss.backward()
        total = total + loss.detach()
    return total


@pytest.mark.parametrize("head0_always", [True, False])
def test_step_loss_is_the_mean_over_the_kept_tokens_of_the_step(head0_always):
    micro = _micro_batches(0)
    model = _model()
    method = Rho1Method(reference=lambda i, t: None, top_k=TOP_K, head0_always=head0_always)
    module = MTPTrainingModule(model, None, method)
    cpu = WorldInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    loss = _step(module, micro, cpu)
    ours = _grads(model)
    model.zero_grad(set_to_none=True)

    expected = _loop_step_loss(model, micro, head0_always)
    expected.backward()
    assert float(loss) == pytest.approx(float(expected), abs=1e-10)
    for name, g in _grads(model).items():
        torch.testing.assert_close(ours[name], g, rtol=1e-9, atol=1e-11, msg=name)


def test_accumulation_needs_the_micro_batch_counts():
    from weighted_mtp.losses.methods import LossContext

    module = MTPTrainingModule(_model(), None, Rho1Method())
    mb = _micro_batches(0)[1]
    ctx = LossContext(denominators=torch.ones(N_HEADS, dtype=torch.float64), n_micro=2)
    with pytest.raises(ValueError, match="micro_counts is required with 2 micro-batches"):
        module(mb["input_ids"], mb["targets"], None, mb["ref_ce"], ctx=ctx)


# --------------------------------------------------------------------------- 2 processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_part(micro: list[dict], rank: int) -> list[dict]:
    """Rank ``rank``'s half of each micro-batch (the first rows go to rank 0)."""
    out = []
    for mb in micro:
        half = mb["input_ids"].shape[0] // 2
        rows = slice(0, half) if rank == 0 else slice(half, None)
        out.append({key: value[rows] for key, value in mb.items()})
    return out


def _run_rank(rank: int, world: int, port: int, out: dict) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from weighted_mtp.training.parallelize import gradient_sync

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        micro = _rank_part(_micro_batches(1, scale=2), rank)
        model = _model()
        module = MTPTrainingModule(model, None, Rho1Method(top_k=TOP_K, head0_always=False))
        wrapped = DistributedDataParallel(module)
        info = WorldInfo(rank=rank, local_rank=rank, world_size=world, device=torch.device("cpu"))
        batches = [Batch(input_ids=m["input_ids"], targets=m["targets"]) for m in micro]
        ctx = step_context(batches, N_HEADS, info, chunk_size=16)
        total = torch.zeros((), dtype=torch.float64)
        for i, (batch, m) in enumerate(zip(batches, micro, strict=True)):
            batch.ref_ce = m["ref_ce"]
            with gradient_sync(wrapped, i == len(batches) - 1):
                loss, _ = wrapped(batch.input_ids, batch.targets, None, batch.ref_ce, ctx=ctx)
            loss.backward()
            total = total + loss.detach()
        dist.all_reduce(total)
        out[rank] = {"loss": float(total) / world, "grads": _grads(model)}
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_process_and_the_token_loop():
    with mp.get_context("spawn").Manager() as manager:
        out = manager.dict()
        mp.start_processes(
            _run_rank, args=(2, _free_port(), out), nprocs=2, join=True, start_method="spawn"
        )
        results = dict(out)
    # One process on the same micro-batches, whole: rank 0's rows then rank 1's, the order
    # the gather sees.
    micro = _micro_batches(1, scale=2)
    model = _model()
    module = MTPTrainingModule(model, None, Rho1Method(top_k=TOP_K, head0_always=False))
    cpu = WorldInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    single = _step(module, micro, cpu)
    single_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    expected = _loop_step_loss(model, micro, head0_always=False)
    assert float(single) == pytest.approx(float(expected), abs=1e-10)
    for rank in (0, 1):
        assert results[rank]["loss"] == pytest.approx(float(single), abs=1e-10)
        for name, g in single_grads.items():
            torch.testing.assert_close(
                results[rank]["grads"][name], g, rtol=1e-8, atol=1e-10, msg=f"{rank} {name}"
            )
