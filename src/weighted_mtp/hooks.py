"""Project hooks."""

from __future__ import annotations

import dataclasses
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node

_MLFLOW_PARAM_MAX = 6000  # MLflow's limit on a parameter value's length


def flatten_params(value: Any, prefix: str) -> dict[str, str]:
    """Nested dataclasses / mappings -> ``{"a.b.c": "value"}`` (lists are kept whole)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(flatten_params(item, f"{prefix}.{key}"))
        return flat
    return {prefix: str(value)[:_MLFLOW_PARAM_MAX]}


class TypedParamsMlflowHook:
    """Logs typed (dataclass) node parameters to MLflow one field at a time.

    Kedro builds a dataclass from a ``params:`` input whose node argument is annotated with
    one; kedro-mlflow flattens only dicts, so it would log such an input as a single
    truncated ``repr``. Flattening here keeps every knob searchable in MLflow
    (``data_engineering.synthetic.n_train_tasks``), like the untyped parameters.
    """

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        if mlflow.active_run() is None:
            return
        flat: dict[str, str] = {}
        for name, value in inputs.items():
            if name.startswith("params:") and dataclasses.is_dataclass(value):
                flat.update(flatten_params(value, name.removeprefix("params:")))
        if flat:
            mlflow.log_params(flat)
