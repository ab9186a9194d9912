"""Project hooks, one concern per module, registered in ``settings.py``:

- :mod:`~weighted_mtp.hooks.session`: the session's environment and ``--params`` for pipeline
  creation (:class:`SessionEnvironmentHook`, :func:`configured_parameters`);
- :mod:`~weighted_mtp.hooks.parameters`: parameters Kedro does not type-check
  (:class:`UntypedParamsHook`);
- :mod:`~weighted_mtp.hooks.prerequisites`: checks that stop a run before any node starts
  (protected outputs, S3 credentials, missing inputs: :class:`PrerequisitesHook`), with
  :mod:`~weighted_mtp.hooks.s3_credentials` and :mod:`~weighted_mtp.hooks.catalog_entries`;
- :mod:`~weighted_mtp.hooks.mlflow_logging`: typed parameters, the runner's name and model
  directories in MLflow (:class:`TypedParamsMlflowHook`, :class:`RunnerNameHook`,
  :class:`ModelDirectoryMlflowHook`).
"""

from weighted_mtp.hooks.mlflow_logging import (
    ModelDirectoryMlflowHook,
    RunnerNameHook,
    TypedParamsMlflowHook,
    flatten_params,
    runner_name,
)
from weighted_mtp.hooks.parameters import (
    ParameterError,
    UntypedParamsHook,
    describe_validation_error,
)
from weighted_mtp.hooks.prerequisites import (
    MissingPrerequisiteError,
    PrerequisitesHook,
    ProtectedOutputError,
    missing_prerequisites,
    protected_outputs,
    registered_pipelines,
)
from weighted_mtp.hooks.s3_credentials import (
    MissingS3CredentialsError,
    S3Location,
    boto_credentials_problem,
    missing_s3_credentials,
    s3_locations,
)
from weighted_mtp.hooks.session import (
    SessionConfig,
    SessionEnvironmentHook,
    configured_parameters,
    record_session,
    session_config,
)

__all__ = [
    "MissingPrerequisiteError",
    "MissingS3CredentialsError",
    "ModelDirectoryMlflowHook",
    "ParameterError",
    "PrerequisitesHook",
    "ProtectedOutputError",
    "RunnerNameHook",
    "S3Location",
    "SessionConfig",
    "SessionEnvironmentHook",
    "TypedParamsMlflowHook",
    "UntypedParamsHook",
    "boto_credentials_problem",
    "configured_parameters",
    "describe_validation_error",
    "flatten_params",
    "missing_prerequisites",
    "missing_s3_credentials",
    "protected_outputs",
    "record_session",
    "registered_pipelines",
    "runner_name",
    "s3_locations",
    "session_config",
]
