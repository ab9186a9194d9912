"""Which tokens a weighting method up- or down-weights: the training loss's own weights,
computed for a batch outside training, and an HTML view of them (the notebook's token view).

It lives on the evaluation side, above training: it runs the model, the losses and
:class:`~weighted_mtp.training.module.MTPTrainingModule` so that what it shows is what the loss
computes, while :mod:`weighted_mtp.weighting` stays maths on tensors.

- :func:`td_token_weights`: the verifiable method's TD weights (critic values -> TD errors ->
  ``td_weights``), exactly as :class:`~weighted_mtp.losses.methods.VerifiableMethod` computes
  them in its loss for the same batch and model.
- :func:`rho1_kept_tokens`: the tokens each head of the rho1 method keeps (excess loss over
  the reference, top ``top_k`` of the batch), as
  :class:`~weighted_mtp.losses.methods.Rho1Method` selects them. The selection has one
  threshold per micro-batch, so a token's fate depends on the batch it is in: this is the
  selection training would make for the batch passed.
- :func:`tokens_html`: one sequence's output tokens coloured by a per-token value.

Everything is in target alignment (:mod:`weighted_mtp.alignment`): index ``j`` of a
``[B, T]`` result belongs to the target token ``targets[:, j]``, i.e. ``input_ids[:, j+1]``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from weighted_mtp.alignment import IGNORE_INDEX, shift_labels
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.losses.methods import Rho1Method, VerifiableMethod, reference_token_ce
from weighted_mtp.losses.mtp import mtp_cross_entropy
from weighted_mtp.models.transformer import MTPTransformer
from weighted_mtp.models.value_head import ValueHead
from weighted_mtp.training.module import MTPTrainingModule
from weighted_mtp.weighting.rho1 import rho1_mask, selection_threshold
from weighted_mtp.weighting.td import td_errors, td_weights


@dataclass
class TDTokenWeights:
    """The verifiable method's view of a batch, all ``[B, T]`` in target alignment.

    Attributes:
        targets: the target view of the batch's labels (``IGNORE_INDEX`` off the output).
        mask: True on output targets (where the loss is).
        values: the critic's ``V(s_t)``.
        td: TD errors; 0 off ``mask``.
        weights: ``clamp(exp(td / beta), w_min, w_max)``, 0 off ``mask``: the loss weights.
        rewards: ``[B]`` the sequences' rewards (``is_correct``).
    """

    targets: torch.Tensor
    mask: torch.Tensor
    values: torch.Tensor
    td: torch.Tensor
    weights: torch.Tensor
    rewards: torch.Tensor


def _targets(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    missing = {"input_ids", "labels"} - set(batch)
    if missing:
        raise KeyError(
            f"batch lacks {sorted(missing)}: pass what PromptOutputCollator returns "
            "(input_ids, labels and, for TD weights, is_correct)"
        )
    return batch["input_ids"], shift_labels(batch["labels"])


@torch.no_grad()
def td_token_weights(
    model: MTPTransformer,
    value_head: ValueHead,
    batch: dict[str, torch.Tensor],
    method: VerifiableMethod,
) -> TDTokenWeights:
    """The TD weights the verifiable loss gives every output token of ``batch``.

    Args:
        model: the policy (e.g. ``verifiable_model`` loaded with its value head).
        value_head: the critic's value head.
        batch: a :class:`~weighted_mtp.data.collator.PromptOutputCollator` batch with
            ``is_correct`` (the reward).
        method: its ``beta``, ``w_min``, ``w_max`` and ``gamma`` are the run's
            (``params:verifiable``).
    """
    input_ids, targets = _targets(batch)
    if "is_correct" not in batch:
        raise KeyError("batch lacks is_correct: TD weights need each sequence's reward")
    # The training module, so the hidden state the value head reads is the loss's own.
    module = MTPTrainingModule(model, value_head, method)
    hidden = module.head_hiddens(input_ids, 1)[0]
    mask = targets != IGNORE_INDEX
    values = value_head(hidden, mask).detach().double()
    rewards = batch["is_correct"].to(torch.float64)
    td = td_errors(values, rewards, mask, method.gamma)
    weights = td_weights(td, mask, method.beta, method.w_min, method.w_max)
    return TDTokenWeights(targets, mask, values, td, weights, rewards)


@torch.no_grad()
def reference_ce(
    reference: torch.nn.Module,
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """The reference model's CE of every target token ``[B, T]`` (0 off the output), as the
    rho1 training worker computes it. ``reference``: a
    :class:`~weighted_mtp.model_io.reference.ReferenceModel` (``tuned_reference_model``)."""
    inner = reference.model
    hidden = inner.model(input_ids=input_ids, use_cache=False).last_hidden_state
    return reference_token_ce(hidden, inner.lm_head.weight, targets, chunk_size)


@dataclass
class Rho1Selection:
    """Rho-1's choice for a batch, ``[n_heads, B, T]`` in target alignment.

    Attributes:
        targets: ``[B, T]`` target view.
        excess: head ``k``'s CE of target ``j`` minus the reference's (0 where not valid).
        valid: head ``k`` can predict target ``j`` (an output token, ``j >= k``).
        kept: the tokens head ``k`` trains on (all valid ones for head 0 under
            ``head0_always``).
    """

    targets: torch.Tensor
    excess: torch.Tensor
    valid: torch.Tensor
    kept: torch.Tensor

    def kept_ratio(self) -> list[float]:
        """Per head, kept / valid tokens."""
        return [
            float(k.sum()) / max(1, int(v.sum()))
            for k, v in zip(self.kept, self.valid, strict=True)
        ]


@torch.no_grad()
def rho1_kept_tokens(
    model: MTPTransformer,
    batch: dict[str, torch.Tensor],
    method: Rho1Method,
    ref_ce: torch.Tensor,
) -> Rho1Selection:
    """The tokens every head of the rho1 loss keeps for ``batch``.

    Args:
        model: the policy (``rho1_model``, or the model at any step of its training).
        batch: a :class:`~weighted_mtp.data.collator.PromptOutputCollator` batch.
        method: ``top_k`` and ``head0_always`` of the run (``params:rho1``).
        ref_ce: ``[B, T]`` the reference's CE per target (:func:`reference_ce`).
    """
    input_ids, targets = _targets(batch)
    if ref_ce.shape != targets.shape:
        raise ValueError(f"ref_ce is {tuple(ref_ce.shape)}, the batch {tuple(targets.shape)}")
    module = MTPTrainingModule(model, None, method)
    hiddens = module.head_hiddens(input_ids)
    n = len(hiddens)
    shape = (n, *targets.shape)
    excess_all = torch.zeros(shape, dtype=torch.float64)
    valid_all = torch.zeros(shape, dtype=torch.bool)
    kept_all = torch.zeros(shape, dtype=torch.bool)
    ref = ref_ce.detach().double()

    # The loss's own selection rule, fed the per-token CE by the same fused loss code.
    def select(k: int, ce: torch.Tensor, valid: torch.Tensor):
        excess = ce.double() - ref
        threshold = selection_threshold(excess[valid].contiguous(), method.top_k)
        keep = rho1_mask(excess, valid, method.top_k, threshold=threshold)
        excess_all[k] = torch.where(valid, excess, 0.0)
        valid_all[k] = valid
        kept_all[k] = keep
        return keep.to(torch.float64), keep.sum().to(torch.float64)

    selected = range(1 if method.head0_always else 0, n)
    out = mtp_cross_entropy(
        hiddens, module.output_weight(), targets, select_fn=select, heads=selected
    )
    if method.head0_always:
        valid0 = targets != IGNORE_INDEX
        excess_all[0] = torch.where(valid0, out.ce[0].double() - ref, 0.0)
        valid_all[0] = valid0
        kept_all[0] = valid0
    return Rho1Selection(targets, excess_all, valid_all, kept_all)


def _weight_colour(value: float, low: float, high: float) -> str:
    # Log scale around 1 (a TD weight's neutral value): green up, red down.
    if value <= 0:
        return "rgba(200,200,200,0.5)"
    position = math.log(value)
    if position >= 0:
        strength = min(1.0, position / max(1e-9, math.log(high))) if high > 1 else 0.0
        return f"rgba(0,160,60,{0.15 + 0.75 * strength:.2f})"
    strength = min(1.0, position / min(-1e-9, math.log(low))) if 0 < low < 1 else 0.0
    return f"rgba(220,40,40,{0.15 + 0.75 * strength:.2f})"


def tokens_html(
    tokenizer: Tokenizer,
    input_ids: Sequence[int],
    values: Sequence[float],
    mask: Sequence[bool],
    *,
    kind: str = "weight",
    low: float = 0.1,
    high: float = 5.0,
) -> str:
    """One sequence's output tokens as coloured ``<span>`` elements (a tooltip gives the value).

    ``input_ids``: the row ``[T]``; ``values``/``mask``: the row ``[T]`` in target alignment
    (value ``j`` colours token ``input_ids[j+1]``). ``kind="weight"``: green above 1, red
    below, on a log scale between ``low`` and ``high`` (``w_min``, ``w_max``);
    ``kind="kept"``: values are 1 (kept: green) or 0 (dropped: grey, struck through).
    """
    if kind not in ("weight", "kept"):
        raise ValueError(f"kind must be 'weight' or 'kept', got {kind!r}")
    ids, vals, keep = list(input_ids), list(values), list(mask)
    if not len(vals) == len(keep) == len(ids):
        raise ValueError(f"lengths differ: {len(ids)} ids, {len(vals)} values, {len(keep)} mask")
    positions = [j for j in range(len(ids) - 1) if keep[j]]
    # Piece by piece decoding drops SentencePiece's word-leading spaces; the growing prefix's
    # new text keeps them.
    pieces, previous = [], ""
    for count, j in enumerate(positions, start=1):
        token = int(ids[j + 1])
        if token == tokenizer.eos_id:
            pieces.append("\u27e8eos\u27e9")
            continue
        text = tokenizer.decode([int(ids[p + 1]) for p in positions[:count]])
        pieces.append(text[len(previous) :] if text.startswith(previous) else text)
        previous = text
    spans = []
    for j, piece in zip(positions, pieces, strict=True):
        text = html.escape(piece or "\u2205").replace("\n", "\u21b5\n")
        value = float(vals[j])
        if kind == "weight":
            style = f"background:{_weight_colour(value, low, high)}"
            title = f"weight {value:.3f}"
        else:
            kept = value > 0.5
            style = (
                "background:rgba(0,160,60,0.5)"
                if kept
                else "color:#999;text-decoration:line-through"
            )
            title = "kept" if kept else "dropped"
        spans.append(f"<span title='{title}' style='{style}'>{text}</span>")
    return (
        "<div style='font-family:monospace;line-height:1.6;white-space:pre-wrap'>"
        + "".join(spans)
        + "</div>"
    )
