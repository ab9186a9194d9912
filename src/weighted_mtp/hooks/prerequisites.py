"""Checks that stop a run before any node starts, with a message saying what to do: outputs
that are protected source data in this environment, ``s3://`` without credentials, and inputs
that another pipeline produces but that do not exist yet (:class:`PrerequisitesHook`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import CatalogProtocol
from kedro.pipeline import Pipeline

from weighted_mtp.hooks.catalog_entries import catalog_location, is_protected
from weighted_mtp.hooks.s3_credentials import (
    MissingS3CredentialsError,
    missing_s3_credentials,
    s3_locations,
)


class MissingPrerequisiteError(RuntimeError):
    """Inputs of the pipeline about to run do not exist; the message says what to run first."""


def _base_name(dataset: str) -> str:
    # Transcoded entries (``x@location``) are the same data as ``x`` for lineage.
    return dataset.split("@", 1)[0]


def _can_tell_existence(catalog: CatalogProtocol, name: str) -> bool:
    from kedro.io import AbstractDataset, MemoryDataset

    dataset = catalog.get(name)
    if dataset is None or isinstance(dataset, MemoryDataset):
        return False
    # Datasets without ``_exists`` report False with a warning (e.g. one that reads a file
    # shipped inside a package): never a reason to stop a run.
    return type(dataset)._exists is not AbstractDataset._exists


def registered_pipelines(requested: list[str] | None) -> dict[str, Pipeline]:
    """Every registered pipeline, although the session loaded only ``requested`` ones.

    Kedro 1.7 imports only the pipelines named on the command line; the producers of a
    missing input are usually others, so the registry is read again unfiltered, and the
    session's filter is put back afterwards.
    """
    from kedro.framework.project import pipelines

    pipelines.set_requested(None)
    try:
        return dict(pipelines.items())
    finally:
        pipelines.set_requested(requested)


def missing_prerequisites(
    pipeline: Pipeline,
    catalog: CatalogProtocol,
    registered: Mapping[str, Pipeline] | Callable[[], Mapping[str, Pipeline]],
    *,
    project_path: str | None = None,
) -> list[str]:
    """One line per free input of ``pipeline`` that another pipeline produces but that does
    not exist yet: ``"<name> does not exist yet (<location>): run `kedro run --pipeline P`
    first"``.

    Inputs that no registered pipeline produces (raw files), parameters, memory datasets and
    datasets that cannot tell whether they exist are left to Kedro's own load errors.
    ``registered`` may be a callable, called only when something is missing.
    """
    missing = [
        name
        for name in sorted(pipeline.inputs())
        if not name.startswith("params:")
        and name != "parameters"
        and name in catalog
        and _can_tell_existence(catalog, name)
        and not catalog.exists(name)
    ]
    if not missing:
        return []
    pipelines = registered() if callable(registered) else registered
    producers: dict[str, list[str]] = {}
    for pipeline_name, candidate in pipelines.items():
        if pipeline_name == "__default__":
            continue
        for output in candidate.all_outputs():
            producers.setdefault(_base_name(output), []).append(pipeline_name)
    lines = []
    for name in missing:
        where = catalog_location(catalog, name, project_path)
        if is_protected(catalog.get(name)):
            # Source data here (conf/a100's raw files, released models): no pipeline of this
            # environment may produce it, whatever the registry says.
            lines.append(
                f"{name} does not exist ({where}): it is source data in this environment, "
                "upload it there (docs/vessl.md)"
            )
            continue
        producing = sorted(set(producers.get(_base_name(name), [])))
        if not producing:
            continue
        commands = " or ".join(f"`kedro run --pipeline {p}`" for p in producing)
        lines.append(f"{name} does not exist yet ({where}): run {commands} first")
    return lines


class ProtectedOutputError(RuntimeError):
    """The pipeline about to run would write a catalog entry marked ``protected: true``."""


def protected_outputs(pipeline: Pipeline, catalog: CatalogProtocol) -> list[str]:
    """Outputs of ``pipeline`` whose catalog entry carries ``metadata: {protected: true}``
    (source data such as conf/a100's raw CodeContests shards, which a pipeline of this project
    can also generate)."""
    return sorted(
        name
        for name in pipeline.all_outputs()
        if name in catalog and is_protected(catalog.get(name))
    )


def _nodes_after(pipeline: Pipeline, inputs: list[str]) -> Pipeline:
    """What ``--from-inputs`` keeps of ``pipeline`` (nothing when Kedro refuses the names)."""
    try:
        return pipeline.from_inputs(*inputs)
    except ValueError:
        return Pipeline([])


class PrerequisitesHook:
    """Stops a run before any node starts, with a message saying what to do, instead of failing
    deep into the run (or in a torchrun worker):

    - an output is a ``protected: true`` catalog entry (:class:`ProtectedOutputError`);
    - the pipeline uses ``s3://`` and no credentials are resolvable
      (:class:`MissingS3CredentialsError`), checked before anything contacts S3, so that a
      machine without credentials stops at once instead of retrying AWS;
    - an input that another pipeline produces does not exist yet (``kedro run --pipeline
      verifiable`` before ``--pipeline critic``): :class:`MissingPrerequisiteError` names the
      pipeline to run first.

    Args:
        registered: the pipelines that may produce inputs; default: the project's registry
            (:func:`registered_pipelines`).
    """

    def __init__(self, registered: Mapping[str, Pipeline] | None = None) -> None:
        self._registered = registered

    # tryfirst: before kedro-mlflow opens a run that would then stay empty.
    @hook_impl(tryfirst=True)
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol
    ) -> None:
        names = run_params.get("pipeline_names")
        shown = ", ".join(names or ["__default__"])
        env = run_params.get("env")
        # Checks that need no network first: the existence checks below would wait on S3.
        protected = protected_outputs(pipeline, catalog)
        if protected:
            entries = ", ".join(
                f"{name} ({catalog_location(catalog, name, run_params.get('project_path'))})"
                for name in protected
            )
            env_flag = f" --env {env}" if env else ""
            free = sorted(
                {*protected, *(n for n in pipeline.inputs() if not n.startswith("params:"))}
                - {"parameters"}
            )
            after = _nodes_after(pipeline, free) if names else Pipeline([])
            if after.nodes and not protected_outputs(after, catalog):
                advice = (
                    f"run the nodes after it: `kedro run{env_flag} --pipeline {shown} "
                    f"--from-inputs {','.join(free)}`"
                )
            elif names:
                advice = "that is what this pipeline does, so it is not run in this environment"
            else:
                # The default pipeline chains generators and consumers: only by name.
                advice = f"run the pipelines by name: `kedro run{env_flag} --pipeline <name>`"
            raise ProtectedOutputError(
                f"Cannot run pipeline {shown}: it would overwrite {entries}, marked "
                f"`protected: true` in the catalog of this environment; {advice}"
            )
        problem = missing_s3_credentials(s3_locations(pipeline, catalog), env=env)
        if problem is not None:
            raise MissingS3CredentialsError(f"Cannot run pipeline {shown}: {problem}")
        registered = (
            self._registered
            if self._registered is not None
            else functools.partial(registered_pipelines, names)
        )
        lines = missing_prerequisites(
            pipeline, catalog, registered, project_path=run_params.get("project_path")
        )
        if not lines:
            return
        raise MissingPrerequisiteError(
            f"Cannot run pipeline {shown}: "
            + ("; ".join(lines) if len(lines) == 1 else "\n  - " + "\n  - ".join(lines))
        )
