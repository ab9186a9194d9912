"""The torchrun worker: ``python -m weighted_mtp.training.worker RUN_DIR/spec.json``.

Started only by :func:`weighted_mtp.training.launcher.launch`. Imports no Kedro. Builds the
method's training module on its device from the spec's model directories, runs the one loop,
and rank 0 writes the final model directory (the full state dict gathered from the DDP replica
or the FSDP2 shards, in safetensors) into ``run_dir/final_model``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.elastic.multiprocessing.errors import record

from weighted_mtp.data.collator import PromptOutputCollator
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.losses.methods import (
    BaselineMethod,
    Method,
    reference_token_ce,
)
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.meta_model import build_meta_model
from weighted_mtp.model_io.model_dir import save_model_dir
from weighted_mtp.model_io.reference import (
    load_reference_model,
    save_reference_model,
)
from weighted_mtp.model_io.tokenizer_check import TokenizerMismatchError
from weighted_mtp.training.checkpoint import wait_for_rank0
from weighted_mtp.training.checkpoint_storage import CheckpointStorage
from weighted_mtp.training.config import Rho1Params
from weighted_mtp.training.distributed import WorldInfo, init_distributed, shutdown
from weighted_mtp.training.loop import TrainSummary, train
from weighted_mtp.training.module import CausalLMTrainingModule, MTPTrainingModule, build_method
from weighted_mtp.training.parallelize import enable_tf32
from weighted_mtp.training.spec import JobSpec

logger = logging.getLogger("weighted_mtp.training.worker")


def _setup_logging(rank: int) -> None:
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
        force=True,
    )


def _checked_tokenizer(proto: bytes, source: str, vocab_size: int) -> Tokenizer:
    """The tokenizer of a model directory, refused when it does not fit the model."""
    tokenizer = Tokenizer(proto, source=source)
    if tokenizer.vocab_size != vocab_size:
        raise TokenizerMismatchError(
            f"{source} has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{vocab_size}: training would index embeddings with the wrong ids"
        )
    return tokenizer


def _build_method(spec: JobSpec, world: WorldInfo, vocab_size: int) -> Method:
    params = spec.training_params()
    if spec.method != "rho1":
        return build_method(spec.method, params)
    assert isinstance(params, Rho1Params)
    if spec.reference_model is None:
        raise ValueError("rho1: the job spec names no reference model")
    from weighted_mtp.model_io.reference import HFModelDirectory

    local = HFModelDirectory(spec.reference_model, dict(spec.storage_options)).local_path()
    # The policy's forward precision (FSDP2's parameter policy / DDP's autocast): the
    # excess loss compares the two models' CEs, which should carry the same rounding; a
    # frozen bf16 reference also holds half the memory. Its CE comes out in fp32.
    reference = load_reference_model(
        local,
        device=world.device,
        dtype=getattr(torch, spec.runtime.dtype),
        expected_vocab_size=vocab_size,
    )
    chunk = params.chunk_size

    @torch.no_grad()
    def reference_ce(input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hidden = reference.model.model(input_ids=input_ids, use_cache=False).last_hidden_state
        return reference_token_ce(hidden, reference.model.lm_head.weight, targets, chunk)

    return build_method("rho1", params, reference_ce)


def _storage(spec: JobSpec) -> CheckpointStorage:
    # Retry knobs come from the environment: operational, not part of the experiment.
    return CheckpointStorage(
        spec.checkpoint_path,
        spec.checkpoint_url,
        spec.storage_options,
        retries=int(os.environ.get("WMTP_CHECKPOINT_UPLOAD_RETRIES", "4")),
        backoff_s=float(os.environ.get("WMTP_CHECKPOINT_UPLOAD_BACKOFF_S", "1.0")),
    )


def _full_state_dict(wrapped: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Collective: every rank takes part; with cpu_offload only rank 0 ends up with tensors.
    return get_model_state_dict(
        wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def _train_and_gather(
    spec: JobSpec,
    world: WorldInfo,
    module: torch.nn.Module,
    tokenizer: Tokenizer,
    fill: Callable[[], None] | None = None,
) -> tuple[dict[str, torch.Tensor], TrainSummary, CheckpointStorage]:
    """The part every job shares: the loop, then the full state dict (on rank 0). ``fill``:
    see :func:`~weighted_mtp.training.loop.train`."""
    torch.manual_seed(spec.runtime.seed + world.rank)
    collator = PromptOutputCollator(tokenizer, spec.training_params().max_seq_len)
    storage = _storage(spec)
    wrapped, summary = train(spec, world, module, collator, storage, fill=fill)
    return _full_state_dict(wrapped), summary, storage


def _train_policy(spec: JobSpec, world: WorldInfo) -> None:
    handle = ModelDirectory(spec.init_model, dict(spec.storage_options))
    args = handle.read_args()
    proto = handle.tokenizer_bytes()
    tokenizer = _checked_tokenizer(proto, f"{handle.path}/tokenizer.model", args.vocab_size)
    method = _build_method(spec, world, args.vocab_size)
    stored_dtype = (handle.read_metadata() or {}).get("dtype")
    # Built on the meta device: nothing is allocated until the loop has wrapped it, then each
    # rank reads its own FSDP2 shard (DDP: its replica, straight onto its device). Float32
    # master weights; FSDP2 casts to runtime.dtype for compute on CUDA. A fresh value head
    # is drawn from the run's seed, so it starts identical on every rank.
    pending = build_meta_model(
        spec.init_model,
        method.uses_value_head,
        seed=spec.runtime.seed,
        storage_options=spec.storage_options,
    )
    pending.model.train()
    module = MTPTrainingModule(pending.model, pending.value_head, method)
    state, summary, storage = _train_and_gather(spec, world, module, tokenizer, pending.fill)
    if world.is_main:
        model_state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        head_state = {
            k[len("value_head.") :]: v for k, v in state.items() if k.startswith("value_head.")
        }
        save_model_dir(
            model_state,
            args,
            proto,
            str(spec.final_model_dir),
            dtype=stored_dtype,
            value_head=head_state or None,
            origin=f"{spec.method}:{spec.init_model}",
            extra_metadata=_metadata(spec, summary),
        )
        logger.info("model directory written to %s", spec.final_model_dir)
        # After the model is safe: a run whose last checkpoint never reached storage fails.
        storage.finish()


def _train_reference(spec: JobSpec, world: WorldInfo) -> None:
    from transformers import AutoModelForCausalLM

    from weighted_mtp.model_io.reference import HFModelDirectory

    local = HFModelDirectory(spec.init_model, dict(spec.storage_options)).local_path()
    proto_path = Path(local) / "tokenizer.model"
    if not proto_path.is_file():
        raise FileNotFoundError(f"{spec.init_model}: no tokenizer.model beside the reference")
    torch.manual_seed(spec.runtime.seed)
    model = AutoModelForCausalLM.from_pretrained(local, local_files_only=True, dtype=torch.float32)
    proto = proto_path.read_bytes()
    tokenizer = _checked_tokenizer(proto, str(proto_path), int(model.config.vocab_size))
    model.train()
    module = CausalLMTrainingModule(model, BaselineMethod())
    state, _summary, storage = _train_and_gather(spec, world, module, tokenizer)
    if world.is_main:
        fresh = AutoModelForCausalLM.from_config(model.config)
        fresh.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        save_reference_model(fresh, str(spec.final_model_dir), tokenizer=proto)
        logger.info("tuned reference written to %s", spec.final_model_dir)
        storage.finish()


def _metadata(spec: JobSpec, summary: TrainSummary) -> dict:
    return {
        **spec.extra_metadata,
        "method": spec.method,
        "steps": summary.steps,
        "tokens_seen": summary.tokens_seen,
        "mlflow_run_id": spec.mlflow_run_id,
        "world_size": spec.runtime.nproc_per_node * spec.runtime.nnodes,
        "strategy": spec.runtime.strategy,
        "final_metrics": {k: v for k, v in summary.final_metrics.items() if v == v},
    }


@record
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m weighted_mtp.training.worker RUN_DIR/spec.json", file=sys.stderr)
        return 2
    spec = JobSpec.read(argv[0])
    world = init_distributed(spec.runtime.device, spec.runtime.collective_timeout_s)
    enable_tf32(world.device)
    _setup_logging(world.rank)
    started = time.perf_counter()
    try:
        if spec.method == "reference":
            _train_reference(spec, world)
        else:
            _train_policy(spec, world)
        # Rank 0 writes the model and waits for the last checkpoint's commit and upload:
        # the others wait outside the training collectives, with an explicit timeout.
        wait_for_rank0(spec.runtime.collective_timeout_s)
    finally:
        shutdown()
    logger.info("%s finished in %.1f s", spec.method, time.perf_counter() - started)
    return 0


def _exit_after_success(code: int) -> None:
    """Leave without the interpreter's teardown once the job's work is done and flushed.

    After FSDP2 has run, torch 2.13 keeps gloo's loop threads (and rank 0's TCPStore server
    thread) alive past ``destroy_process_group``; the interpreter's teardown can then destroy
    them while they run, and C++ aborts ("terminate called without an active exception",
    exit -6), seen once in a spawned test child under load. torchrun would report a finished
    job as failed. Everything this process owes is written by now (model directory,
    checkpoints committed by ``storage.finish``, history and MLflow closed by the loop), so
    logs are flushed and the process ends here. Failures still go through ``@record``."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_after_success(main())
