"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: What a bare `kedro run` runs: the whole experiment on the embedded default. Kedro orders the
#: nodes by their datasets (critic before verifiable, the reference tuning before rho1, every
#: trained model before its evaluation), so the order here is only for reading.
DEFAULT_PIPELINES = (
    "data_engineering",
    "micro_models",
    "baseline",
    "critic",
    "verifiable",
    "rho1",
    "evaluation",
)


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
