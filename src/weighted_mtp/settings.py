"""Project settings (Kedro reads this module at start-up)."""

from omegaconf.resolvers import oc

from weighted_mtp.hooks import (
    ModelDirectoryMlflowHook,
    PrerequisitesHook,
    RunnerNameHook,
    SessionEnvironmentHook,
    TypedParamsMlflowHook,
    UntypedParamsHook,
)

# kedro-mlflow registers its own hooks through its entry point; TypedParamsMlflowHook
# complements it and RunnerNameHook gives it the runner's class name as the `runner` tag.
# SessionEnvironmentHook tells the evaluation pipeline which environment (--env) its model list
# comes from. PrerequisitesHook stops a run before anything runs when it would overwrite
# protected source data, when S3 is used without credentials, or when critic_model (or the
# data, or a model) is missing, naming what to do. UntypedParamsHook validates `runtime.*`
# before that (Kedro validates the typed groups itself when it builds the catalog): pluggy
# calls `tryfirst` hooks last-registered first, hence the order.
HOOKS = (
    SessionEnvironmentHook(),
    TypedParamsMlflowHook(),
    PrerequisitesHook(),
    RunnerNameHook(),
    UntypedParamsHook(),
    ModelDirectoryMlflowHook(),
)

# Kedro allows ${oc.env:...} only in credentials by default. mlflow.yml needs it too, so that
# MLFLOW_TRACKING_URI can point a run at a remote tracking server without editing conf/.
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"oc.env": oc.env},
    # An environment overrides single knobs (conf/a100: runtime.device) and keeps the rest
    # of base's groups; the default would replace a whole top-level group.
    "merge_strategy": {"parameters": "soft"},
}
