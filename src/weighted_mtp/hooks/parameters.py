"""Validation, when a run starts, of the parameter groups that nodes receive untyped
(``runtime``), and the one-line description of a pydantic validation error that the hooks and
``kedro run``/``kedro estimate`` report (``<group>.<field>=<value>: <what is allowed>``)."""

from __future__ import annotations

from collections.abc import Mapping

from kedro.framework.hooks import hook_impl
from kedro.io import CatalogProtocol
from kedro.pipeline import Pipeline
from pydantic import BaseModel, ValidationError


class ParameterError(ValueError):
    """A parameter group the nodes receive untyped does not fit its model."""


def _untyped_groups() -> dict[str, type[BaseModel]]:
    # Imported here: settings imports this package, and the training package is not needed
    # by every command.
    from weighted_mtp.training.config import RuntimeParams

    return {"runtime": RuntimeParams}


def describe_validation_error(group: str, exc: ValidationError) -> str:
    """``"<group>.<field>=<value>: <what is allowed>"`` per problem, joined by ``"; "``."""
    problems = []
    for error in exc.errors():
        where = ".".join([group, *(str(part) for part in error["loc"])])
        value = error.get("input")
        shown = f"={value!r}" if error["loc"] and not isinstance(value, Mapping) else ""
        problems.append(f"{where}{shown}: {error['msg']}")
    return "; ".join(problems)


class UntypedParamsHook:
    """Validates, when the run starts, the parameter groups that nodes receive as plain
    mappings (so that notebooks and ``params:runtime.device`` keep indexing them).

    Kedro builds and validates a ``params:`` input itself only when a node's argument is
    annotated with a model (every other group of this project is: ``training/config.py`` and
    ``pipelines/*/params.py``). ``runtime`` is read untyped by several nodes; without this, a
    bad ``runtime.*`` value would surface when the first training node starts, possibly after
    data engineering. ``tryfirst``: before the other checks and before kedro-mlflow opens a run.

    Raises:
        ParameterError: naming ``<group>.<field>``, the value and what is allowed.
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, pipeline: Pipeline, catalog: CatalogProtocol) -> None:
        used = {
            name.removeprefix("params:") for name in pipeline.inputs() if name.startswith("params:")
        }
        for group, model in _untyped_groups().items():
            if not any(name == group or name.startswith(f"{group}.") for name in used):
                continue
            value = catalog.load(f"params:{group}")
            if isinstance(value, model):
                continue
            try:
                model.model_validate(dict(value))
            except ValidationError as exc:
                raise ParameterError(
                    f"Invalid parameters (conf/*/parameters*.yml or --params): "
                    f"{describe_validation_error(group, exc)}"
                ) from None
