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
  tensor cannot answer are answered that way, :class:`~.fake.FullMasks`);
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

The parts: :mod:`.params` (``estimate.*`` and the checks of a configured shape against the
model's own files), :mod:`.report` (:class:`MemoryEstimate`, the breakdown ``kedro estimate``
prints), :mod:`.fake` (fake process group, fake device, the all-true masks), :mod:`.tracker`
(``FSDPMemTracker`` adjusted to this module, storage accounting), :mod:`.step` (the training
step built at the configured shape) and :mod:`.memory` (:func:`estimate_memory` and
:func:`measure_memory`, which run it).
"""

from weighted_mtp.training.estimate.fake import fake_process_group
from weighted_mtp.training.estimate.memory import estimate_memory, measure_memory
from weighted_mtp.training.estimate.params import (
    EstimateError,
    EstimateParams,
    check_model_args,
    check_reference_config,
    model_args,
    shape_differences,
)
from weighted_mtp.training.estimate.report import GIB, MemoryEstimate

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
