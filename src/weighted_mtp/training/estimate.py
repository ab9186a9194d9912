"""Peak memory per GPU of one training step, estimated before any node is rented.

The real training module (:class:`~weighted_mtp.training.module.MTPTrainingModule` with the
method of ``losses/methods.py``, the value head of critic/verifiable, the frozen Rho-1
reference) is built at the configured shape on *fake tensors* (``FakeTensorMode``: shapes and
dtypes, no storage), wrapped by the real :func:`~weighted_mtp.training.parallelize.parallelize`
over a *fake process group* of ``world_size`` ranks (collectives that move nothing), and runs
the loop's step: a forward and a backward of ``batch_size x max_seq_len`` tokens per
micro-batch through the wrapper, gradient clipping and an AdamW step, with AdamW's states
already in place (as in every step after the first; they are created beforehand from zero
gradients, which costs no forward). PyTorch's
``FSDPMemTracker`` sees every tensor of rank 0 come and go and keeps the breakdown at the peak.
This is torchtitan's ``scripts/estimate`` applied to this project's module.

What the estimate assumes, and why it is an upper bound for the step's tensors:

- every target token is real (no padding, no prompt tokens left out of the loss) and every
  sequence is ``max_seq_len`` long: the boolean masks of the losses are all true, which is
  the largest a micro-batch's loss buffers can be (the data-dependent operations a fake
  tensor cannot answer are answered that way, :class:`_FullMasks`);
- two micro-batches per step when ``grad_accum_steps > 1``: the second one runs with the
  sharded gradients of the first in place, as every later one does;
- tensors only: the CUDA context, NCCL's buffers and the caching allocator's fragmentation
  (a few GiB on an A100) are not in it. That is what the headroom left by the sizing is for.

On a machine without a GPU (where it is meant to run) the fake tensors live on the CPU
device: FSDP2 builds its default mesh on the machine's accelerator, so the fake device follows
it. Shapes, dtypes and the mixed-precision policy are those of the CUDA run (``parallelize``
applies the bf16 policy on any device, and the loop's CUDA autocast becomes CPU autocast), so
the bytes are the same; the only CUDA-specific rule, the allocator's 512-byte rounding, is
negligible at this scale.

The fake process group lives in the calling process (``kedro estimate``'s), the one place
outside the torchrun workers that touches ``torch.distributed``: it moves no data, exists only
for the estimate, and the estimate refuses to run beside a real group.

Nothing here imports Kedro: ``kedro estimate`` (``weighted_mtp.cli``) reads the configuration
and calls :func:`estimate_memory`. :func:`measure_memory` runs the same step on real tensors
and measures its peak from the CPU allocator's own events (the profiler), which is how the
estimate is validated at small sizes (``tests/training/test_estimate.py``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from weighted_mtp.losses.methods import (
    Batch,
    LossContext,
    reference_token_ce,
)
from weighted_mtp.models.args import ModelArgs, ModelArgsError
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.models.value_head import ValueHead
from weighted_mtp.training.config import (
    RuntimeParams,
    TrainingParams,
)
from weighted_mtp.training.module import MTPTrainingModule, build_method
from weighted_mtp.training.optim import build_optimizer
from weighted_mtp.training.parallelize import gradient_sync, inner_module, parallelize

GIB = 2**30
_aten = torch.ops.aten


class EstimateError(ValueError):
    """The estimate cannot be made as configured (missing shape, shape mismatch...)."""


# --------------------------------------------------------------------------- configuration
class EstimateParams(BaseModel):
    """``estimate.*``: what ``kedro estimate`` builds when it cannot (or need not) read the
    model directories: ``model`` holds the fields of base_model's ``params.json`` (Meta's
    :class:`~weighted_mtp.models.args.ModelArgs`), ``reference`` those of reference_model's
    Hugging Face ``config.json`` (``model_type`` included; rho1 only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_memory_gib: float = Field(80.0, gt=0, description="memory of one GPU, GiB")
    headroom: float = Field(
        0.10, ge=0, lt=1, description="share of gpu_memory_gib a configuration must leave free"
    )
    model: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _shapes_valid(self) -> EstimateParams:
        if self.model is not None:
            model_args(self.model, source="estimate.model")
        if self.reference is not None and "model_type" not in self.reference:
            raise ValueError("estimate.reference needs model_type (e.g. llama)")
        return self

    @property
    def limit_gib(self) -> float:
        """The most a configuration may need: ``gpu_memory_gib x (1 - headroom)``."""
        return self.gpu_memory_gib * (1.0 - self.headroom)


def model_args(raw: Mapping[str, Any], *, source: str) -> ModelArgs:
    """``ModelArgs`` from a ``params.json``-like mapping; unknown keys are refused (a typo
    here would silently estimate another model)."""
    known = {f.name for f in fields(ModelArgs)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise EstimateError(
            f"{source}: unknown field(s) {unknown}; expected some of {sorted(known)}"
        )
    try:
        return ModelArgs.from_dict(dict(raw), source=source)
    except ModelArgsError as exc:
        raise EstimateError(str(exc)) from None


def shape_differences(configured: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """``"<field>: <configured> here, <actual> in the file"`` for every configured field the
    file disagrees on (numbers compared as numbers: ``1e-05`` equals ``1.0e-5``)."""
    problems = []
    for key, value in configured.items():
        other = actual.get(key)
        same = (
            value == other
            if not (isinstance(value, int | float) and isinstance(other, int | float))
            else float(value) == float(other)
        )
        if not same:
            problems.append(f"{key}: {value!r} here, {other!r} in the file")
    return problems


def check_model_args(configured: ModelArgs, actual: ModelArgs, *, source: str) -> None:
    """Refuse an estimate whose model shape is not the model's own ``params.json``."""
    problems = shape_differences(configured.to_dict(), actual.to_dict())
    if problems:
        raise EstimateError(
            f"estimate.model disagrees with {source}: " + "; ".join(problems) + " (fix "
            "estimate.model in conf/<env>/parameters_estimate.yml)"
        )


def check_reference_config(
    configured: Mapping[str, Any], actual: Mapping[str, Any], *, source: str
) -> None:
    """Refuse an estimate whose reference shape is not the reference's ``config.json``; both
    are resolved by ``transformers`` first, so a field the file leaves to its default
    (``num_key_value_heads``...) compares as the model would see it."""
    from transformers import AutoConfig

    def resolved(raw: Mapping[str, Any], label: str) -> Any:
        fields_ = dict(raw)
        model_type = fields_.pop("model_type", None)
        if model_type is None:
            raise EstimateError(f"{label}: no model_type")
        return AutoConfig.for_model(model_type, **fields_)

    mine, theirs = resolved(configured, "estimate.reference"), resolved(actual, source)
    problems = shape_differences(
        {key: getattr(mine, key, None) for key in configured},
        {key: getattr(theirs, key, None) for key in configured},
    )
    if problems:
        raise EstimateError(
            f"estimate.reference disagrees with {source}: " + "; ".join(problems) + " (fix "
            "estimate.reference in conf/<env>/parameters_estimate.yml)"
        )


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class MemoryEstimate:
    """Rank 0's memory at the peak of the step, bytes, split by what holds it.

    ``parameters``: fp32 shards, the bf16 blocks gathered at that moment (``gathered``,
    included) and the frozen Rho-1 reference (``reference``, included); ``gradients``: fp32
    shards and unsharded gradients awaiting their reduce-scatter; ``optimizer``: AdamW's
    moments (and, at the optimizer step, its temporaries); ``activations``: what the blocks
    (and the value head) keep for the backward, and the backward's temporaries; ``loss``: the
    method's loss buffers (head rows, fused cross-entropy gradients, logits chunk, TD weights);
    ``other``: the batch, and buffers of collectives in flight."""

    method: str
    world_size: int
    batch_size: int
    grad_accum_steps: int
    max_seq_len: int
    activation_checkpointing: str
    dtype: str
    device: str
    parameters: int
    gathered: int
    reference: int
    gradients: int
    optimizer: int
    activations: int
    loss: int
    other: int
    seconds: float

    @property
    def peak(self) -> int:
        return (
            self.parameters
            + self.gradients
            + self.optimizer
            + self.activations
            + self.loss
            + self.other
        )

    def peak_line(self, gpu_memory_gib: float) -> str:
        """The summary line ``kedro estimate`` ends with."""
        return (
            f"peak per GPU: {self.peak / GIB:.1f} GiB of {gpu_memory_gib:g} GiB "
            f"({self.method}, {self.world_size} ranks)"
        )

    def report(self, gpu_memory_gib: float) -> list[str]:
        """The breakdown, one line a part, ending with :meth:`peak_line`."""

        def gib(n: int) -> str:
            return f"{n / GIB:7.2f} GiB"

        extra = []
        if self.gathered:
            extra.append(f"{self.gathered / GIB:.2f} GiB gathered blocks")
        if self.reference:
            extra.append(f"{self.reference / GIB:.2f} GiB frozen reference")
        global_batch = self.batch_size * self.grad_accum_steps * self.world_size
        return [
            f"{self.method}: {self.world_size} ranks, micro-batch {self.batch_size} x "
            f"{self.max_seq_len} tokens, grad_accum_steps {self.grad_accum_steps} (global batch "
            f"{global_batch} sequences), {self.dtype}, activation_checkpointing "
            f"{self.activation_checkpointing}; fake tensors on {self.device}, "
            f"{self.seconds:.0f} s",
            f"  parameters  {gib(self.parameters)}" + (f"  ({', '.join(extra)})" if extra else ""),
            f"  gradients   {gib(self.gradients)}",
            f"  optimizer   {gib(self.optimizer)}",
            f"  activations {gib(self.activations)}",
            f"  loss        {gib(self.loss)}",
            f"  other       {gib(self.other)}  (the batch, collective buffers)",
            self.peak_line(gpu_memory_gib),
        ]


# --------------------------------------------------------------------------- fake execution
class _FullMasks(TorchDispatchMode):
    """Answers, for fake tensors, the operations whose result depends on tensor *values*,
    under the estimate's assumption that every boolean mask is all true (every target token
    real): ``x[mask]`` keeps every element, ``mask.nonzero()`` lists every position, and a
    scalar read (``bool(mask.any())``, ``float(norm)``) is true / 1. Shapes of everything
    downstream then follow from the batch shape alone."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is _aten.nonzero.default:
            x = args[0]
            return torch.empty((x.numel(), x.dim()), dtype=torch.long, device=x.device)
        if func in (_aten._local_scalar_dense.default, _aten.item.default):
            x = args[0]
            if x.dtype == torch.bool:
                return True
            return 1.0 if x.dtype.is_floating_point or x.dtype.is_complex else 1
        if func in (
            _aten.index.Tensor,
            _aten.index_put.default,
            _aten.index_put_.default,
            _aten._index_put_impl_.default,
        ):
            indices: list[torch.Tensor | None] = []
            for index in args[1]:
                if index is not None and index.dtype in (torch.bool, torch.uint8):
                    # An all-true mask over k dims selects every element: k index vectors.
                    indices.extend(
                        torch.empty(index.numel(), dtype=torch.long, device=index.device)
                        for _ in range(index.dim())
                    )
                else:
                    indices.append(index)
            args = (args[0], indices, *args[2:])
        return func(*args, **kwargs)


def _tracker_class() -> type:
    """``FSDPMemTracker`` with the three adjustments this module needs (built lazily: the
    import pulls in FSDP internals that ``kedro --help`` does not need)."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker, _FSDPRefType
    from torch.distributed.tensor._sharding_prop import ShardingPropagator

    propagation_code = ShardingPropagator._propagate_tensor_meta_non_cached.__code__

    def in_sharding_propagation() -> bool:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code is propagation_code:
                return True
            frame = frame.f_back
        return False

    class Tracker(FSDPMemTracker):
        """1. DTensor's sharding propagation computes output metadata by running the op on
        global-shape fake tensors in the *active* fake mode; under an estimate those are the
        same fake tensors as the real ones, so the stock tracker counts a whole unsharded
        copy of every tensor gradient clipping and the optimizer touch (25 GiB of phantom
        fp32 gradients at 7B). Ops run from there are not tracked.
        2. A block that does not run in a step (critic: heads 1-3) never gets an unsharded
        parameter; the stock post-backward hook fails on it. 3. Tensors created by the root
        module's own code in the forward, outside any submodule (the method's loss), are
        counted apart as ``loss``."""

        def __init__(self, mod: nn.Module, optm: torch.optim.Optimizer | None) -> None:
            super().__init__(mod, optm)
            self._root_name = type(mod).__name__
            self._loss_infos: dict[int, Any] = {}
            self.loss_at_peak = 0

        def _fsdp_param_group_post_backward(self, fsdp_mod, orig):  # type: ignore[no-untyped-def]
            tracked = super()._fsdp_param_group_post_backward(fsdp_mod, orig)

            def post_backward(*args: Any, **kwargs: Any) -> None:
                group = fsdp_mod._get_fsdp_state()._fsdp_param_group
                if group is not None and any(
                    not hasattr(p, "_unsharded_param") for p in group.fsdp_params
                ):
                    return orig(*args, **kwargs)
                return tracked(*args, **kwargs)

            return post_backward

        def _in_loss(self) -> bool:
            return not self._mod_tracker.is_bw and set(self._mod_tracker.parents) == {
                "Global",
                self._root_name,
            }

        def _track(self, reftype: Any, t: torch.Tensor) -> None:
            known = {id(st) for st in _storages(t) if st in self._WINFO}
            super()._track(reftype, t)
            if reftype is _FSDPRefType.ACT and self._in_loss():
                for st in _storages(t):
                    if id(st) not in known and st in self._WINFO:
                        winfo = self._WINFO[st][0]
                        self._loss_infos[id(winfo)] = winfo

        def _delete_callback(self, winfo: Any, w_st: Any) -> None:
            self._loss_infos.pop(id(winfo), None)
            super()._delete_callback(winfo, w_st)

        def _update_peak_stats(self, peak_state: Any) -> None:
            before = dict(self._peak_mem)
            super()._update_peak_stats(peak_state)
            if self._peak_mem != before:
                self.loss_at_peak = sum(
                    w.mem_consumed
                    for w in self._loss_infos.values()
                    if w.reftype is _FSDPRefType.ACT
                )

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if in_sharding_propagation():
                return func(*args, **(kwargs or {}))
            return super().__torch_dispatch__(func, types, args, kwargs)

    return Tracker


def _storages(t: torch.Tensor) -> set:
    from torch.distributed._tools.common_utils import get_untyped_storages

    return get_untyped_storages(t)


@contextlib.contextmanager
def fake_process_group(world_size: int) -> Iterator[None]:
    """A ``world_size``-rank process group of which this process is rank 0 and whose
    collectives move nothing (``torch.testing``'s fake backend)."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise EstimateError(
            "a process group already exists in this process; run the estimate on its own "
            "(kedro estimate)"
        )
    # init_process_group wraps sys.excepthook (a "[rank0]" prefix) and destroy_process_group
    # leaves it wrapped: this runs in the user's process (kedro estimate, a notebook), whose
    # own hook must come back with the group gone.
    hook = sys.excepthook
    dist.init_process_group("fake", rank=0, world_size=world_size, store=FakeStore())
    try:
        yield
    finally:
        dist.destroy_process_group()
        sys.excepthook = hook


def _fake_device() -> torch.device:
    # FSDP2's default mesh is built on the machine's accelerator (else the CPU), and it moves
    # the parameters there: the fake tensors must live on that device.
    accelerator = (
        torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    )
    if accelerator is None:
        return torch.device("cpu")
    return torch.device(accelerator.type, torch.accelerator.current_device_index())


def _reference_model(config: Mapping[str, Any], dtype: torch.dtype, device: torch.device):
    """The frozen Rho-1 reference as the worker loads it (``runtime.dtype``, on the device,
    eval, no gradients), built from its ``config.json`` fields instead of its weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from weighted_mtp.model_io.reference import ReferenceModel

    fields_ = dict(config)
    hf_config = AutoConfig.for_model(fields_.pop("model_type"), **fields_)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    return ReferenceModel(model, source="estimate.reference")


def _state_bytes(tensors: Iterator[torch.Tensor]) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        for st in _storages(t):
            if id(st) not in seen:
                seen.add(id(st))
                total += st.nbytes()
    return total


@dataclass
class _Step:
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


def _equal_all_gather(world_size: int) -> Callable[[torch.Tensor], tuple[torch.Tensor, int]]:
    # Every rank of an estimate holds the same shapes: the gather is one all_gather_single
    # of world_size equal parts (the loop's all_gather_cat_at pads to the longest, the same
    # size), and this rank's part starts at rank * its length.
    def gather(t: torch.Tensor) -> tuple[torch.Tensor, int]:
        local = t.detach().reshape(-1).contiguous()
        out = local.new_empty(world_size * local.numel())
        dist.all_gather_single(out, local)
        return out, dist.get_rank() * local.numel()

    return gather


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    out = t.detach().clone()
    dist.all_reduce(out)
    return out


def _build_step(
    method_name: str,
    params: TrainingParams,
    runtime: RuntimeParams,
    args: ModelArgs,
    reference: Mapping[str, Any] | None,
    device: torch.device,
    world_size: int,
    parallel_mode: contextlib.AbstractContextManager,
) -> _Step:
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
        ref_module = _reference_model(reference, param_dtype, device)
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
        all_gather=_equal_all_gather(world_size),
        all_reduce_sum=_all_reduce_sum,
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

    return _Step(
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


def _check_strategy(runtime: RuntimeParams) -> None:
    if runtime.strategy != "fsdp":
        raise EstimateError(
            f"runtime.strategy={runtime.strategy!r}: the estimate covers FSDP2 (the multi-GPU "
            "configuration, conf/a100); under ddp every rank holds the whole model, its "
            "gradients and AdamW states (16 bytes a parameter) before any activation"
        )


def estimate_memory(
    method: str,
    params: TrainingParams,
    runtime: RuntimeParams,
    args: ModelArgs,
    *,
    reference: Mapping[str, Any] | None = None,
    world_size: int | None = None,
) -> MemoryEstimate:
    """Rank 0's peak memory during a training step of ``method`` as configured, on fake
    tensors (no memory, no GPU, no model files).

    Args:
        method: ``baseline`` | ``critic`` | ``verifiable`` | ``verifiable_uniform`` | ``rho1``.
        params: the method's parameters (``<method>.*``).
        runtime: ``runtime.*`` (strategy, dtype, activation checkpointing, world size).
        args: the policy model's shape (``params.json``).
        reference: rho1's reference shape (Hugging Face ``config.json`` fields with
            ``model_type``).
        world_size: ranks (default ``nproc_per_node x nnodes``).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    _check_strategy(runtime)
    world = world_size or runtime.nproc_per_node * runtime.nnodes
    device = _fake_device()
    started = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    gc.collect()
    with fake_process_group(world):
        fake_mode = FakeTensorMode()
        with fake_mode, _FullMasks():
            # parallelize leaves the fake mode for FSDP2's device mesh (real rank ids); the
            # module's fake parameters keep dispatching to their own fake mode meanwhile.
            step = _build_step(
                method,
                params,
                runtime,
                args,
                reference,
                device,
                world,
                _outside_modes(),
            )
            step.prime_optimizer()
            tracker = _tracker_class()(step.wrapped, step.optimizer)
            tracker.track_inputs(step.batch)
            reference_bytes = (
                _state_bytes(t for t in _module_tensors(step.reference)) if step.reference else 0
            )
            # gc off: a reference cycle must not keep a fake buffer "alive" past its real
            # lifetime (the tracker frees a tensor's bytes when its storage dies).
            gc.disable()
            try:
                with tracker:
                    step.run(before_micro_batch=tracker.reset_mod_stats)
            finally:
                if gc_was_enabled:
                    gc.enable()
        peak = tracker.get_tracker_snapshot("peak")
    seconds = time.perf_counter() - started
    if not peak:
        raise EstimateError(f"{method}: the memory tracker recorded nothing")
    # The device the model lives on (a few scalars may sit on the CPU beside a GPU).
    device_peak = max(peak.values(), key=lambda snap: snap["Total"])
    snapshot = {str(getattr(k, "value", k)): v for k, v in device_peak.items()}
    loss = tracker.loss_at_peak
    gathered = snapshot["Unsharded Param"] + snapshot["All Gather"]
    return MemoryEstimate(
        method=method,
        world_size=world,
        batch_size=params.batch_size,
        grad_accum_steps=params.grad_accum_steps,
        max_seq_len=params.max_seq_len,
        activation_checkpointing=runtime.activation_checkpointing,
        dtype=runtime.dtype,
        device=device.type,
        parameters=snapshot["Sharded Param"] + snapshot["Buffer"] + gathered + reference_bytes,
        gathered=gathered,
        reference=reference_bytes,
        gradients=snapshot["Sharded Grad"] + snapshot["Unsharded Grad"],
        optimizer=snapshot["OptState"],
        activations=snapshot["Activation"] - loss + snapshot["Temp"],
        loss=loss,
        other=snapshot["Inputs"] + snapshot["Reduce Scatter"],
        seconds=seconds,
    )


@contextlib.contextmanager
def _outside_modes() -> Iterator[None]:
    """Leave the fake mode (and :class:`_FullMasks`) for the duration of the block."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from torch.utils._python_dispatch import _get_current_dispatch_mode, _pop_mode_temporarily

    with contextlib.ExitStack() as stack:
        if isinstance(_get_current_dispatch_mode(), _FullMasks):
            stack.enter_context(_pop_mode_temporarily())
        stack.enter_context(unset_fake_temporarily())
        yield


def _allocated_peak(prof: Any) -> int:
    """The CPU allocator's highest running total of bytes allocated (and not yet freed) while
    ``prof`` recorded: its ``[memory]`` events carry that total (``Total Allocated``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        trace = json.loads(path.read_text(encoding="utf-8"))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals = [
        int(e["args"]["Total Allocated"])
        for e in events
        if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0
    ]
    if not totals:
        raise EstimateError("the profiler recorded no CPU allocation")
    return max(totals)


def _module_tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


# --------------------------------------------------------------------------- validation
def measure_memory(
    method: str,
    params: TrainingParams,
    runtime: RuntimeParams,
    args: ModelArgs,
    *,
    reference: Mapping[str, Any] | None = None,
    world_size: int | None = None,
) -> int:
    """The same step on *real* tensors in this process (fake process group: every rank's
    collectives are no-ops, buffers allocated as on rank 0), its peak measured independently
    of the tracker. On the CPU: the bytes alive when the step starts (parameters, AdamW
    states, batch, reference) plus the CPU allocator's highest running total of what the step
    allocated and has not yet freed, as the profiler records it; on a GPU (FSDP2 puts the
    parameters there when there is one): the caching allocator's peak. For small shapes
    only: this allocates everything. Returns bytes."""
    _check_strategy(runtime)
    world = world_size or runtime.nproc_per_node * runtime.nnodes
    device = _fake_device()
    with fake_process_group(world):
        step = _build_step(
            method, params, runtime, args, reference, device, world, contextlib.nullcontext()
        )
        step.prime_optimizer()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            step.run()
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device)
        if device.type != "cpu":
            raise EstimateError(f"measure_memory: no peak measurement on {device.type}")
        alive = _state_bytes(
            t
            for t in (
                *_module_tensors(step.wrapped),
                *(v for s in step.optimizer.state.values() for v in s.values()),
                *step.batch,
                step.ctx.denominators,
                *(_module_tensors(step.reference) if step.reference else ()),
            )
            if isinstance(t, torch.Tensor)
        )
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step.run()
        peak = _allocated_peak(prof)
    return alive + peak


__all__ = [
    "GIB",
    "EstimateError",
    "EstimateParams",
    "MemoryEstimate",
    "check_model_args",
    "check_reference_config",
    "estimate_memory",
    "fake_process_group",
    "measure_memory",
    "model_args",
    "shape_differences",
]
