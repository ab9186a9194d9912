"""What a run records in MLflow beyond kedro-mlflow's defaults: typed (dataclass or pydantic)
node parameters one field at a time, the runner's class name as the ``runner`` tag, and the
location of each model directory the run writes (``model_dir.<catalog entry>`` tags)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.io import CatalogProtocol
from kedro.pipeline import Node
from pydantic import BaseModel

_MLFLOW_PARAM_MAX = 6000  # MLflow's limit on a parameter value's length


def flatten_params(value: Any, prefix: str) -> dict[str, str]:
    """Nested dataclasses, pydantic models and mappings -> ``{"a.b.c": "value"}`` (lists are
    kept whole)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif isinstance(value, BaseModel):
        value = {name: getattr(value, name) for name in type(value).model_fields}
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(flatten_params(item, f"{prefix}.{key}"))
        return flat
    return {prefix: str(value)[:_MLFLOW_PARAM_MAX]}


def _is_typed(value: Any) -> bool:
    return isinstance(value, BaseModel) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    )


class TypedParamsMlflowHook:
    """Logs typed (dataclass or pydantic) node parameters to MLflow one field at a time.

    Kedro builds a dataclass or pydantic model from a ``params:`` input whose node argument is
    annotated with one; kedro-mlflow flattens only dicts, so it would log such an input as a
    single truncated ``repr``. Flattening here keeps every knob searchable in MLflow
    (``data_engineering.synthetic.n_train_tasks``, ``rho1.reference_tuning.enabled``), like
    the untyped parameters.
    """

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        if mlflow.active_run() is None:
            return
        flat: dict[str, str] = {}
        for name, value in inputs.items():
            if name.startswith("params:") and _is_typed(value):
                flat.update(flatten_params(value, name.removeprefix("params:")))
        if flat:
            mlflow.log_params(flat)


_OBJECT_REPR = re.compile(r"^<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-fA-F]+>$")


def runner_name(runner: Any) -> Any:
    """``"SequentialRunner"`` for ``"<kedro.runner.sequential_runner.SequentialRunner object
    at 0x7f...>"`` and for ``"None"`` (``session.run()`` without a runner records
    ``str(None)``, then uses its default, a ``SequentialRunner``); any other value unchanged."""
    if runner is None or runner == "None":
        return "SequentialRunner"
    if isinstance(runner, str):
        match = _OBJECT_REPR.match(runner)
        if match:
            return match.group(1)
    return runner


class RunnerNameHook:
    """Sets the MLflow ``runner`` tag to the runner's class name.

    Kedro records ``str(runner)`` in the run parameters when it is handed a runner instance
    (which ``kedro run`` always does), and kedro-mlflow turns every run parameter into a tag:
    the ``runner`` tag read ``<kedro.runner.sequential_runner.SequentialRunner object at
    0x7f...>``, a value that differs from run to run and cannot be filtered on. The run
    parameters themselves are left alone (kedro-viz recognises the sequential runner by that
    very text). ``trylast``: after kedro-mlflow has opened the run and set its tags.
    """

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        if mlflow.active_run() is not None:
            mlflow.set_tag("runner", runner_name(run_params.get("runner")))


class ModelDirectoryMlflowHook:
    """Tags the MLflow run with the location of each model directory the run writes
    (``model_dir.<catalog entry>``: an absolute local path or an ``s3://`` URL), so that a run
    leads to its models as each model's ``metadata.json`` (``mlflow_run_id``) leads to its run."""

    def __init__(self) -> None:
        self._catalog: CatalogProtocol | None = None

    @hook_impl
    def after_catalog_created(self, catalog: CatalogProtocol) -> None:
        self._catalog = catalog

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Node) -> None:
        from weighted_mtp.datasets.model_directory import _DirectoryDataset

        if mlflow.active_run() is None or self._catalog is None:
            return
        dataset = self._catalog.get(dataset_name)
        if isinstance(dataset, _DirectoryDataset):
            location = str(dataset._describe()["path"])
            if "://" not in location:
                location = str(Path(location).resolve())
            mlflow.set_tag(f"model_dir.{dataset_name}", location)
