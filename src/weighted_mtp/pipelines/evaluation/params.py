"""Typed parameters of the evaluation pipeline (``params:evaluation``).

Kedro builds :class:`EvaluationParams` from ``conf/base/parameters_evaluation.yml`` (and
``--params evaluation.*``) for the nodes annotated with it and validates it when the run
starts, before any node runs, so a bad evaluation knob stops ``kedro run`` at once instead of
after the training pipelines. The generation and sandbox settings are the library's own
dataclasses (:class:`~weighted_mtp.evaluation.prompts.SamplingSettings`,
:class:`~weighted_mtp.evaluation.execution.SandboxLimits`): pydantic checks their field types
and unknown keys, and their own ``__post_init__`` checks run as well.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from weighted_mtp.evaluation.execution import SandboxLimits
from weighted_mtp.evaluation.prompts import DEFAULT_FORMATS, PromptFormat, SamplingSettings
from weighted_mtp.evaluation.report import REFERENCE_MODEL

#: Dataset names ``evaluation.datasets`` may hold: the problem sets the pipeline reads
#: (``pipeline.PROBLEM_SETS``; a test keeps the two equal).
EVALUATION_DATASETS = ("humaneval", "mbpp", "codecontests")


class _Strict(BaseModel):
    # Unknown keys are typos (``evaluation.generation.temprature``): refuse them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetParams(_Strict):
    """One evaluation dataset: how many problems (None: all) and its prompt format."""

    max_problems: int | None = Field(None, ge=1, description="first N problems; null: all")
    prompt: PromptFormat | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_format(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return PromptFormat.from_params(value)
        return value


class ExecutionParams(_Strict):
    """Sandbox: programs run ``workers`` at a time under ``limits`` (SandboxLimits fields)."""

    workers: int = Field(2, ge=1)
    limits: SandboxLimits = Field(default_factory=SandboxLimits)

    @field_validator("limits")
    @classmethod
    def _positive_limits(cls, limits: SandboxLimits) -> SandboxLimits:
        bad = {
            f.name: getattr(limits, f.name)
            for f in dataclasses.fields(limits)
            if not getattr(limits, f.name) > 0
        }
        if bad:
            raise ValueError(f"every limit must be > 0, got {bad}")
        return limits


class ComparisonParams(_Strict):
    """The pre-registered comparison (``evaluation.comparison``; statistics:
    :mod:`weighted_mtp.evaluation.comparison`).

    Attributes:
        contrasts: ``[a, b]`` pairs of evaluated models, each tested as ``pass@k(a) -
            pass@k(b)`` on every dataset and k; Holm's family is the contrasts of one dataset
            and k. Fixed here, before the run: the verdict tests these and nothing else.
        alpha: the family-wise error rate of Holm's correction.
        power: the power at which the minimum detectable difference is computed.
        n_permutations: random sign flips of the paired permutation test (used with several
            samples per problem; exact enumeration when there are fewer flips than this).
        seed: the permutation test's random generator.
    """

    contrasts: list[tuple[str, str]] = Field(default_factory=list)
    alpha: float = Field(0.05, gt=0, lt=1)
    power: float = Field(0.8, gt=0, lt=1)
    n_permutations: int = Field(9999, ge=99)
    seed: int = 0

    @field_validator("contrasts")
    @classmethod
    def _distinct_pairs(cls, contrasts: list[tuple[str, str]]) -> list[tuple[str, str]]:
        seen: set[frozenset[str]] = set()
        for a, b in contrasts:
            if a == b:
                raise ValueError(f"[{a}, {b}] compares a model with itself")
            if frozenset((a, b)) in seen:
                raise ValueError(f"[{a}, {b}] is listed twice (in either order)")
            seen.add(frozenset((a, b)))
        return contrasts


class EvaluationParams(_Strict):
    """``params:evaluation`` (conf/base/parameters_evaluation.yml).

    Attributes:
        models: catalog names of the model directories to evaluate (it shapes the pipeline:
            see ``weighted_mtp.pipeline_registry.configured_models``).
        datasets: dataset name (one of :data:`EVALUATION_DATASETS`) -> its settings; a
            missing prompt format is the dataset's default.
        generation: sampling (``temperature`` >= 0; 0 is greedy with one sample per problem).
        ks: the k of the reported pass@k (each >= 1).
        execution: the sandbox's workers and limits.
        comparison: the pre-registered contrasts and their statistics. The tested family
            (and so Holm's correction) is :attr:`tested_contrasts`: the contrasts whose two
            models are both in ``models``. It is fixed by the configuration before any result
            exists, so evaluating a subset of the models (``conf/a100`` without rho1, a test
            project with two models) narrows the family without choosing it after the fact;
            the contrasts set aside are logged and named in the verdict.
    """

    models: list[str] = Field(min_length=1)
    datasets: dict[str, DatasetParams] = Field(min_length=1)
    generation: SamplingSettings = Field(default_factory=SamplingSettings)
    ks: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    execution: ExecutionParams = Field(default_factory=ExecutionParams)
    comparison: ComparisonParams = Field(default_factory=ComparisonParams)

    @field_validator("datasets", mode="before")
    @classmethod
    def _known_datasets_with_formats(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        unknown = sorted(set(value) - set(EVALUATION_DATASETS))
        if unknown:
            raise ValueError(f"unknown datasets {unknown}: allowed are {list(EVALUATION_DATASETS)}")
        filled = {}
        for name, raw in value.items():
            raw = {} if raw is None else raw
            if isinstance(raw, Mapping) and raw.get("prompt") is None:
                raw = {**raw, "prompt": DEFAULT_FORMATS.get(name, PromptFormat("instruction"))}
            filled[name] = raw
        return filled

    @field_validator("generation")
    @classmethod
    def _temperature(cls, generation: SamplingSettings) -> SamplingSettings:
        # A negative temperature would otherwise be taken for greedy decoding silently.
        if not (math.isfinite(generation.temperature) and generation.temperature >= 0):
            raise ValueError(
                f"temperature must be >= 0 (0: greedy, one sample per problem), "
                f"got {generation.temperature}"
            )
        return generation

    @model_validator(mode="after")
    def _models(self) -> EvaluationParams:
        if REFERENCE_MODEL in self.models:
            raise ValueError(f"models: {REFERENCE_MODEL!r} is reserved for the reference")
        repeated = sorted({m for m in self.models if self.models.count(m) > 1})
        if repeated:
            raise ValueError(f"models: {repeated} listed more than once")
        return self

    @property
    def tested_contrasts(self) -> list[tuple[str, str]]:
        """The contrasts whose models are both evaluated (the family Holm corrects over)."""
        return [p for p in self.comparison.contrasts if all(m in self.models for m in p)]

    @property
    def untested_contrasts(self) -> list[tuple[str, str]]:
        """Contrasts naming a model that this run does not evaluate."""
        return [p for p in self.comparison.contrasts if p not in self.tested_contrasts]

    @property
    def formats(self) -> dict[str, PromptFormat]:
        return {name: d.prompt or PromptFormat() for name, d in self.datasets.items()}
