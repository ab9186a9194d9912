"""The Kedro session's configuration, recorded for the code that shapes pipelines from it:
where the session reads its configuration, its environment and its ``--params``
(:class:`SessionEnvironmentHook`), and the parameters as that session sees them
(:func:`configured_parameters`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl


@dataclass(frozen=True)
class SessionConfig:
    """Where the latest Kedro session of this process reads its configuration, and the
    ``--params`` it was given (``runtime_params``), which overlay the files."""

    project_path: Path
    conf_source: str
    env: str | None
    runtime_params: Mapping[str, Any] | None = None


_SESSION: SessionConfig | None = None


def record_session(config: SessionConfig | None) -> SessionConfig | None:
    """Set (None: forget) the session configuration; returns the previous one."""
    global _SESSION
    previous, _SESSION = _SESSION, config
    return previous


def session_config() -> SessionConfig | None:
    """The configuration of the latest session created in this process, if any."""
    return _SESSION


class SessionEnvironmentHook:
    """Records the environment (``--env``, or ``KEDRO_ENV``), configuration folder and runtime
    parameters (``--params``) of the session, for code that shapes pipelines from
    configuration (:func:`configured_parameters`).

    Kedro creates pipelines after the context (``session.run`` loads the context, fires
    ``after_context_created``, then reads ``pipelines[...]``, which calls
    ``register_pipelines``), but ``register_pipelines`` is given no context. The evaluation
    pipeline is shaped by ``evaluation.models`` and every method pipeline by
    ``experiment.seeds``; without this, they could only guess the environment from
    ``KEDRO_ENV`` (``kedro run --env a100`` would build base's list) and would never see
    ``kedro run --params experiment.seeds=3``. The runtime parameters are the config loader's
    public ``runtime_params`` (Kedro hands the session's ``--params`` to the loader it builds
    the context with). ``tryfirst``: before plugin hooks that may read parameters, which loads
    the pipelines.
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        loader = getattr(context, "config_loader", None)
        conf_source = getattr(loader, "conf_source", None)
        project = Path(context.project_path)
        if conf_source is None:
            from kedro.framework.project import settings

            conf_source = str(project / settings.CONF_SOURCE)
        runtime = getattr(loader, "runtime_params", None)
        record_session(
            SessionConfig(
                project.resolve(),
                str(conf_source),
                context.env,
                dict(runtime) if isinstance(runtime, Mapping) else None,
            )
        )


def configured_parameters(project_path: Path | None = None) -> dict[str, Any]:
    """The project's parameters as the session that is building the pipelines sees them:
    conf/base overlaid by its environment and its ``--params`` (recorded by
    :class:`SessionEnvironmentHook`, whose ``after_context_created`` runs before
    ``register_pipelines``). Without a session of ``project_path`` (the package imported
    alone, ``create_pipeline()`` in a test), the environment is ``KEDRO_ENV`` and there are
    no runtime parameters; ``{}`` when no configuration is found (the package used outside
    its project).

    Raw values, not validated: callers that shape pipelines check the few keys they read.
    """
    import warnings

    from kedro.framework.project import settings

    session = session_config()
    env = os.environ.get("KEDRO_ENV")
    runtime: Mapping[str, Any] | None = None
    conf: Path | None = None
    if session is not None and (
        project_path is None or Path(project_path).resolve() == session.project_path
    ):
        conf, env, runtime = Path(session.conf_source), session.env, session.runtime_params
    else:
        start = (project_path or Path.cwd()).resolve()
        for root in (start, *start.parents):
            if (root / "pyproject.toml").is_file() and (root / settings.CONF_SOURCE).is_dir():
                conf = root / settings.CONF_SOURCE
                break
    if conf is None or not conf.is_dir():
        return {}
    with warnings.catch_warnings():
        # A second loader re-registers Kedro's resolvers; OmegaConf's deprecation notice about
        # that was already shown by the session's own loader.
        warnings.filterwarnings("ignore", message="register_new_resolver", category=UserWarning)
        loader = settings.CONFIG_LOADER_CLASS(
            conf_source=str(conf),
            env=env,
            runtime_params=dict(runtime or {}),
            **settings.CONFIG_LOADER_ARGS,
        )
        return dict(loader["parameters"])
