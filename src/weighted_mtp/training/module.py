"""Training modules: the model, its value head and the method's loss behind one ``forward``.

DDP and FSDP2 hook a module's ``forward``/``backward``; a loss that calls submodules outside
it, or runs several backward passes, escapes them (gradients never averaged, or DTensor
errors). Here one call of the (wrapped) module computes the whole micro-batch loss and one
``backward`` follows. ``blocks()`` names the transformer blocks that FSDP2 shards one by one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from weighted_mtp.losses.methods import (
    BaselineMethod,
    Batch,
    CriticMethod,
    LossContext,
    Method,
    Rho1Method,
    VerifiableMethod,
    VerifiableUniformMethod,
)
from weighted_mtp.losses.metric_values import MetricValues
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.models.value_head import ValueHead
from weighted_mtp.training.config import Rho1Params, TrainingParams, VerifiableParams


class _TrainingModule(nn.Module):
    """Shared ``forward``: ``mode="train"`` -> ``(loss, metrics)``; ``"validate"`` (the
    loss panel) and ``"validate_value"`` (the value panel) -> ``(metrics, extras)``."""

    method: Method

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor,
        is_correct: torch.Tensor | None = None,
        ref_ce: torch.Tensor | None = None,
        *,
        ctx: LossContext,
        mode: str = "train",
    ) -> tuple[torch.Tensor, MetricValues] | tuple[MetricValues, dict[str, torch.Tensor]]:
        batch = Batch(input_ids=input_ids, targets=targets, is_correct=is_correct, ref_ce=ref_ce)
        if mode == "validate":
            return self.method.validate(self, batch, ctx)
        if mode == "validate_value":
            return self.method.validate_value(self, batch, ctx)
        return self.method.loss(self, batch, ctx)


class MTPTrainingModule(_TrainingModule):
    """An :class:`MTPTransformer` (trunk, heads, shared norm + unembedding), optionally a
    :class:`ValueHead`, and the method whose loss ``forward`` computes.

    State-dict keys are ``model.<Meta key>`` and ``value_head.<key>``
    (:attr:`ValueHead.STATE_KEYS`). The critic trains the value head alone (its trunk is frozen
    and runs without autograd), so the model it hands to verifiable is base_model's; in
    verifiable (and its control) the value loss reaches the trunk through the head."""

    def __init__(self, model: MTPTransformer, value_head: ValueHead | None, method: Method) -> None:
        super().__init__()
        self.model = model
        self.value_head = value_head
        self.method = method
        method.configure(self)

    @property
    def n_heads(self) -> int:
        return self.model.n_future_tokens

    def blocks(self) -> list[nn.Module]:
        return [*self.model.layers, *self.model.extra_heads]

    def output_weight(self) -> torch.Tensor:
        return self.model.output.weight

    def head_hiddens(self, tokens: torch.Tensor, n_heads: int | None = None) -> list[torch.Tensor]:
        """Normed hidden states ``[B, T, dim]`` of heads ``0 .. n_heads-1`` (default all).

        Right padding needs no attention mask: with causal attention a real token never sees
        the padding after it, and padded positions carry no loss."""
        n = self.n_heads if n_heads is None else n_heads
        bsz, seqlen = tokens.shape
        ctx = self.model.attention_context(bsz, seqlen)
        trunk = self.model.trunk_forward(tokens, ctx=ctx)
        return [self.model.head_forward(k, trunk, ctx=ctx) for k in range(n)]


class CausalLMTrainingModule(_TrainingModule):
    """A Hugging Face causal LM (the Rho-1 reference being tuned) seen as a 1-head policy, so
    the baseline method and the same fused loss train it."""

    value_head = None

    def __init__(self, model: nn.Module, method: Method) -> None:
        super().__init__()
        self.model = model
        self.method = method
        method.configure(self)

    @property
    def n_heads(self) -> int:
        return 1

    def blocks(self) -> list[nn.Module]:
        return list(self.model.model.layers)

    def output_weight(self) -> torch.Tensor:
        return self.model.lm_head.weight

    def head_hiddens(self, tokens: torch.Tensor, n_heads: int | None = None) -> list[torch.Tensor]:
        out = self.model.model(input_ids=tokens, use_cache=False)
        return [out.last_hidden_state]


def build_method(
    name: str,
    params: TrainingParams,
    reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Method:
    """The loss of job ``name`` (``baseline`` | ``reference`` | ``pretrain`` | ``critic`` |
    ``verifiable`` | ``verifiable_uniform`` | ``rho1``) from its typed parameters;
    ``reference`` is Rho-1's per-token reference CE. The one place both the worker and the
    memory estimate build methods."""
    if name in ("baseline", "reference", "pretrain"):
        return BaselineMethod()
    if name == "critic":
        return CriticMethod()
    if name in ("verifiable", "verifiable_uniform"):
        assert isinstance(params, VerifiableParams)
        # The control takes verifiable's every knob; only its loss leaves the weights out.
        verifiable = VerifiableMethod if name == "verifiable" else VerifiableUniformMethod
        return verifiable(
            value_coef=params.value_coef,
            beta=params.beta,
            w_min=params.w_min,
            w_max=params.w_max,
            gamma=params.gamma,
        )
    if name == "rho1":
        assert isinstance(params, Rho1Params)
        if reference is None:
            raise ValueError("rho1 needs its reference model's per-token CE")
        return Rho1Method(reference=reference, top_k=params.top_k, head0_always=params.head0_always)
    raise ValueError(f"unknown method {name!r}")
