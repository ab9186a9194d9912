"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: What a bare `kedro run` runs: data, micro models, evaluation. The training pipelines
#: (baseline, critic, verifiable, rho1) run by name for now, e.g. `kedro run --pipeline critic`.
DEFAULT_PIPELINES = ("data_engineering", "micro_models", "evaluation")


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects: one per folder of
        ``pipelines/`` and ``__default__``.
    """
    pipelines = find_pipelines(raise_errors=True)
    # Kedro imports only the pipelines named on the command line, so some may be absent.
    pipelines["__default__"] = sum(
        (pipelines[name] for name in DEFAULT_PIPELINES if name in pipelines), Pipeline([])
    )
    return pipelines
