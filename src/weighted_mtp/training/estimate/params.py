"""``estimate.*`` (what ``kedro estimate`` builds when it need not read the model directories)
and the checks that a configured shape is the model's own, so that an estimate is never made
for another model than the one trained."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from weighted_mtp.models.args import ModelArgs, ModelArgsError


class EstimateError(ValueError):
    """The estimate cannot be made as configured (missing shape, shape mismatch...)."""


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
