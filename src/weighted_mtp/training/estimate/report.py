"""The estimate's result: rank 0's memory at the step's peak, split by what holds it, and the
lines ``kedro estimate`` prints from it."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30


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
