"""The training step an estimate measures: the real module, wrapper, optimizer and loss context
built at the configured shape (in whatever tensor mode is active), and one optimizer step as
``loop.train`` runs it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from weighted_mtp.losses.methods import (
    Batch,
    LossContext,
    reference_token_ce,
)
from weighted_mtp.models.args import ModelArgs
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.models.value_head import ValueHead
from weighted_mtp.training.config import (
    RuntimeParams,
    TrainingParams,
)
from weighted_mtp.training.estimate.params import EstimateError
from weighted_mtp.training.module import MTPTrainingModule, build_method
from weighted_mtp.training.optim import build_optimizer
from weighted_mtp.training.parallelize import gradient_sync, inner_module, parallelize


def reference_model(config: Mapping[str, Any], dtype: torch.dtype, device: torch.device):
    """The frozen Rho-1 reference as the worker loads it (``runtime.dtype``, on the device,
    eval, no gradients), built from its ``config.json`` fields instead of its weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from weighted_mtp.model_io.reference import ReferenceModel

    fields_ = dict(config)
    hf_config = AutoConfig.for_model(fields_.pop("model_type"), **fields_)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    return ReferenceModel(model, source="estimate.reference")


@dataclass
class Step:
    """The module, optimizer and batch of one estimate, and the loop's step over them."""

    method_name: str
    params: TrainingParams
    runtime: RuntimeParams
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    reference: nn.Module | None
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ctx: LossContext
    autocast: Callable[[], contextlib.AbstractContextManager]

    @property
    def micro_batches(self) -> int:
        return min(self.params.grad_accum_steps, 2)

    def prime_optimizer(self) -> None:
        """Create AdamW's states as a first step would (zero gradients, one ``step``), so that
        the measured step carries them from its first forward, without the cost of a first
        forward and backward."""
        for p in self.wrapped.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, before_micro_batch: Callable[[], None] = lambda: None) -> None:
        """One optimizer step as ``loop.train`` runs it (forward + backward per micro-batch
        through the wrapper, clip, AdamW, zero_grad)."""
        method = inner_module(self.wrapped).method  # type: ignore[attr-defined]
        trainable = [p for p in self.wrapped.parameters() if p.requires_grad]
        n = self.micro_batches
        for m in range(n):
            before_micro_batch()
            input_ids, targets, is_correct = self.batch
            batch = Batch(input_ids=input_ids, targets=targets, is_correct=is_correct)
            method.prepare(batch)
            with gradient_sync(self.wrapped, m == n - 1), self.autocast():
                loss, _metrics = self.wrapped(
                    batch.input_ids, batch.targets, batch.is_correct, batch.ref_ce, ctx=self.ctx
                )
            loss.backward()
            del loss, _metrics, batch
        torch.nn.utils.clip_grad_norm_(trainable, self.params.grad_clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def equal_all_gather(world_size: int) -> Callable[[torch.Tensor], tuple[torch.Tensor, int]]:
    # Every rank of an estimate holds the same shapes: the gather is one all_gather_single
    # of world_size equal parts (the loop's all_gather_cat_at pads to the longest, the same
    # size), and this rank's part starts at rank * its length.
    def gather(t: torch.Tensor) -> tuple[torch.Tensor, int]:
        local = t.detach().reshape(-1).contiguous()
        out = local.new_empty(world_size * local.numel())
        dist.all_gather_single(out, local)
        return out, dist.get_rank() * local.numel()

    return gather


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    out = t.detach().clone()
    dist.all_reduce(out)
    return out


def build_step(
    method_name: str,
    params: TrainingParams,
    runtime: RuntimeParams,
    args: ModelArgs,
    reference: Mapping[str, Any] | None,
    device: torch.device,
    world_size: int,
    parallel_mode: contextlib.AbstractContextManager,
) -> Step:
    """Build the step's objects inside the current (fake or real) tensor mode; ``parallelize``
    runs inside ``parallel_mode`` (outside the fake mode: FSDP2 builds its device mesh from
    real rank tensors)."""
    if params.max_seq_len > args.max_seq_len:
        raise EstimateError(
            f"{method_name}.max_seq_len={params.max_seq_len} exceeds the model's max_seq_len="
            f"{args.max_seq_len}"
        )
    param_dtype = getattr(torch, runtime.dtype)
    ref_module = None
    reference_ce = None
    if method_name == "rho1":
        if reference is None:
            raise EstimateError("rho1 needs the reference's shape: estimate.reference")
        ref_module = reference_model(reference, param_dtype, device)
        chunk = params.chunk_size

        @torch.no_grad()
        def reference_ce(input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            hidden = ref_module.model.model(input_ids=input_ids, use_cache=False).last_hidden_state
            return reference_token_ce(hidden, ref_module.model.lm_head.weight, targets, chunk)

    method = build_method(method_name, params, reference_ce)
    # fp32 master weights, as the worker loads them; FSDP2 casts blocks to runtime.dtype.
    with torch.device(device):
        model = MTPTransformer(args)
        value_head = ValueHead(args.dim) if method.uses_value_head else None
    module = MTPTrainingModule(model, value_head, method)
    module.train()
    with parallel_mode:
        wrapped = parallelize(
            module,
            runtime.strategy,
            device,
            param_dtype=param_dtype,
            activation_checkpointing=runtime.activation_checkpointing,
        )
    optimizer = build_optimizer(
        wrapped, lr=params.lr, weight_decay=params.weight_decay, betas=(params.beta1, params.beta2)
    )
    bsz, seqlen = params.batch_size, params.max_seq_len
    input_ids = torch.randint(0, args.vocab_size, (bsz, seqlen), device=device)
    targets = torch.randint(0, args.vocab_size, (bsz, seqlen), device=device)
    is_correct = torch.ones(bsz, dtype=torch.bool, device=device)
    n_heads = args.n_future_tokens
    # Every target real: head k's valid tokens over the step and the world.
    per_micro = torch.tensor([bsz * (seqlen - k) for k in range(n_heads)], dtype=torch.float64)
    denominators = (per_micro * params.grad_accum_steps * world_size).to(device)
    ctx = LossContext(
        denominators=denominators,
        loss_scale=float(world_size),
        n_micro=params.grad_accum_steps,
        all_gather=equal_all_gather(world_size),
        all_reduce_sum=all_reduce_sum,
        chunk_size=params.chunk_size,
        micro_counts=(per_micro * world_size).repeat(params.grad_accum_steps, 1).to(device),
    )
    # The loop's autocast: on for CUDA in a low-precision dtype; an estimate of a CUDA run on
    # a CPU-only machine uses CPU autocast with the same dtype.
    use_autocast = runtime.device == "cuda" and param_dtype != torch.float32

    def autocast() -> contextlib.AbstractContextManager:
        if not use_autocast:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=param_dtype)

    return Step(
        method_name,
        params,
        runtime,
        wrapped,
        optimizer,
        ref_module,
        (input_ids, targets, is_correct),
        ctx,
        autocast,
    )


def check_strategy(runtime: RuntimeParams) -> None:
    if runtime.strategy != "fsdp":
        raise EstimateError(
            f"runtime.strategy={runtime.strategy!r}: the estimate covers FSDP2 (the multi-GPU "
            "configuration, conf/a100); under ddp every rank holds the whole model, its "
            "gradients and AdamW states (16 bytes a parameter) before any activation"
        )
