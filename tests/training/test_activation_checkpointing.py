"""Activation checkpointing (``runtime.activation_checkpointing: blocks``) changes memory, not
maths: every method's loss and gradients equal those without it (float64), under DDP and FSDP2
on 2 processes too, and the state-dict keys stay the model's own."""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.model_fixtures import tiny_args
from weighted_mtp.alignment import IGNORE_INDEX
from weighted_mtp.losses.methods import (
    BaselineMethod,
    CriticMethod,
    LossContext,
    Method,
    Rho1Method,
    VerifiableMethod,
)
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.models.value_head import ValueHead
from weighted_mtp.training.module import MTPTrainingModule
from weighted_mtp.training.parallelize import (
    apply_activation_checkpointing,
    inner_module,
    parallelize,
)

METHODS = {
    "baseline": BaselineMethod,
    "critic": CriticMethod,
    "verifiable": lambda: VerifiableMethod(beta=0.5),
    "rho1": lambda: Rho1Method(top_k=0.5),
}


def _module(method: Method, dtype: torch.dtype) -> MTPTrainingModule:
    torch.manual_seed(0)
    args = tiny_args(n_layers=4, n_future_tokens=3)
    model = MTPTransformer(args).train()
    return MTPTrainingModule(model, ValueHead(args.dim), method).to(dtype)


def _batch(seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 64, (4, 24), generator=g)
    targets = torch.roll(input_ids, -1, 1)
    targets[:, :5] = IGNORE_INDEX  # the prompt
    targets[1, 18:] = IGNORE_INDEX  # a shorter row (padding)
    targets[:, -1] = IGNORE_INDEX
    return {
        "input_ids": input_ids,
        "targets": targets,
        "is_correct": torch.tensor([True, False, True, False]),
        "ref_ce": torch.rand(4, 24, generator=g, dtype=torch.float64).to(dtype) * 4,
    }


def _ctx(targets: torch.Tensor, n_heads: int, scale: float = 1.0) -> LossContext:
    from weighted_mtp.alignment import head_valid_counts

    counts = head_valid_counts(targets, n_heads).to(torch.float64)
    return LossContext(denominators=counts * scale, loss_scale=scale)


def _loss_and_grads(module: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    module.zero_grad(set_to_none=True)
    loss, _ = module(**batch, ctx=_ctx(batch["targets"], module.n_heads))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _saved_bytes_of_forward(module: torch.nn.Module, batch: dict, ctx: LossContext) -> int:
    """Bytes of tensors autograd keeps from one forward for the backward (which then runs,
    so that nothing is left half-done; its gradients are cleared)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = module(**batch, ctx=ctx)
    loss.backward()
    module.zero_grad(set_to_none=True)
    return total


def _saved_bytes(module: torch.nn.Module, batch: dict) -> int:
    return _saved_bytes_of_forward(module, batch, _ctx(batch["targets"], module.n_heads))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_blocks_give_the_same_loss_and_gradients_float64(name):
    plain = _module(METHODS[name](), torch.float64)
    checkpointed = apply_activation_checkpointing(copy.deepcopy(plain), "blocks")
    batch = _batch(1, torch.float64)
    loss_a, grads_a = _loss_and_grads(plain, batch)
    loss_b, grads_b = _loss_and_grads(checkpointed, batch)
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=1e-6)
    assert grads_a and grads_a.keys() == grads_b.keys()
    for key, grad in grads_a.items():
        torch.testing.assert_close(grads_b[key], grad, rtol=0, atol=1e-6, msg=key)
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()


def test_blocks_keep_fewer_activations():
    plain = _module(BaselineMethod(), torch.float64)
    checkpointed = apply_activation_checkpointing(copy.deepcopy(plain), "blocks")
    batch = _batch(2, torch.float64)
    # Only each block's input survives the forward; its internals are recomputed.
    assert _saved_bytes(checkpointed, batch) < 0.5 * _saved_bytes(plain, batch)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="activation_checkpointing='layers'"):
        apply_activation_checkpointing(_module(BaselineMethod(), torch.float32), "layers")


# --------------------------------------------------------------------------- 2 processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_rank(rank: int, world: int, port: int, out: dict) -> None:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from weighted_mtp.training.optim import build_optimizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for strategy in ("ddp", "fsdp"):
            for mode in ("none", "blocks"):
                module = _module(VerifiableMethod(beta=0.5), torch.float32)
                keys = set(module.state_dict())
                wrapped = parallelize(
                    module,
                    strategy,
                    torch.device("cpu"),
                    param_dtype=torch.float32,
                    activation_checkpointing=mode,
                )
                optimizer = build_optimizer(wrapped, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.95))
                losses, saved = [], 0
                for step in range(2):
                    batch = _batch(10 * step + rank, torch.float32)
                    local = _ctx(batch["targets"], 3).denominators
                    dist.all_reduce(local)
                    ctx = LossContext(denominators=local, loss_scale=float(world))

                    if step == 0:
                        saved = _saved_bytes_of_forward(wrapped, batch, ctx)
                    loss, _ = wrapped(**batch, ctx=ctx)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    reduced = loss.detach() / world
                    dist.all_reduce(reduced)
                    losses.append(float(reduced))
                model_sd, optim_sd = get_state_dict(wrapped, optimizer)
                out[(rank, strategy, mode)] = {
                    "losses": losses,
                    "saved": saved,
                    "keys_match": set(model_sd) == keys
                    and set(inner_module(wrapped).state_dict()) == keys
                    and set(optim_sd["state"]) <= keys,
                }
    finally:
        dist.destroy_process_group()


def test_two_processes_same_losses_with_blocks_under_ddp_and_fsdp():
    with mp.get_context("spawn").Manager() as manager:
        out = manager.dict()
        mp.start_processes(
            _run_rank, args=(2, _free_port(), out), nprocs=2, join=True, start_method="spawn"
        )
        results = dict(out)
    for rank in (0, 1):
        for strategy in ("ddp", "fsdp"):
            none, blocks = results[(rank, strategy, "none")], results[(rank, strategy, "blocks")]
            assert none["keys_match"] and blocks["keys_match"], strategy
            assert blocks["saved"] < 0.5 * none["saved"], strategy
            assert blocks["losses"] == pytest.approx(none["losses"], rel=1e-6, abs=1e-7), strategy


# --------------------------------------------------------------------------- the real workers
@pytest.mark.distributed
@pytest.mark.slow
def test_workers_write_the_same_history_and_model_keys_with_blocks(tmp_path):
    """Through the launcher and torchrun (2 FSDP2 processes, verifiable: value head group
    included): ``runtime.activation_checkpointing=blocks`` gives the history of ``none`` and a
    final model directory with the same keys."""
    import json

    import numpy as np
    from safetensors import safe_open

    from weighted_mtp.training.config import PARAMS_BY_METHOD, RuntimeParams
    from weighted_mtp.training.data_plan import build_data_plan
    from weighted_mtp.training.launcher import launch
    from weighted_mtp.training.spec import JobSpec

    from .corpus import build_corpus

    corpus = build_corpus(tmp_path / "corpus")
    params = PARAMS_BY_METHOD["verifiable"](
        max_steps=3, batch_size=2, lr=2e-3, warmup_steps=1, eval_every=3, val_samples=4,
        max_seq_len=256, chunk_size=100,
    )  # fmt: skip
    runs = {}
    for mode in ("none", "blocks"):
        spec = JobSpec(
            method="verifiable",
            run_dir=str(tmp_path / mode),
            params=params.model_dump(),
            runtime=RuntimeParams(
                nproc_per_node=2, strategy="fsdp", omp_threads=1, activation_checkpointing=mode
            ),
            init_model=str(corpus.model_dir),
            train_jsonl=str(corpus.train_jsonl),
            valid_jsonl=str(corpus.valid_jsonl),
        )
        (tmp_path / mode).mkdir()
        build_data_plan(
            "verifiable", params, corpus.train_metadata, corpus.valid_metadata, world_size=2
        ).save(spec.plan_path)
        launch(spec, show_progress=False)
        history = [json.loads(line) for line in spec.history_path.read_text().splitlines()]
        with safe_open(str(spec.final_model_dir / "model.safetensors"), "pt") as f:
            keys = set(f.keys())
        runs[mode] = ([h["train/loss"] for h in history if "train/loss" in h], keys)
    (losses_none, keys_none), (losses_blocks, keys_blocks) = runs["none"], runs["blocks"]
    assert len(losses_none) == 3
    np.testing.assert_allclose(losses_blocks, losses_none, rtol=1e-6)
    assert keys_blocks == keys_none and not any("checkpoint" in k for k in keys_none)
