"""The shape every training pipeline shares: a model, the run root, the CodeContests training
data (with the tokenizer that counted its tokens) and the method's parameters in;
``<method>_model`` and ``<method>_training_history`` out.

The JSONL corpora are read as their ``@location`` (transcoded catalog entries of the files
data_engineering writes): the workers read the planned rows by byte offset themselves.
``tokenizer`` is the data's tokenizer: the node refuses a model directory that ships another
one, since the data plan's token counts come from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kedro.pipeline import Node, Pipeline

RUNTIME = "params:runtime"
#: Node argument -> catalog entry, for the inputs every training job reads.
TRAINING_DATA = {
    "training_runs": "training_runs",
    "train_jsonl": "codecontests_train_jsonl@location",
    "train_metadata": "codecontests_train_metadata",
    "valid_jsonl": "codecontests_valid_jsonl@location",
    "valid_metadata": "codecontests_valid_metadata",
    "tokenizer": "tokenizer",
}


def training_inputs(init_model: str, params: str, job: str, **extra: str) -> dict[str, str]:
    """Node argument -> catalog entry: ``init_model`` (the model a job starts from), the
    training data, ``<job>_checkpoints`` (where its resume checkpoints live), ``params``
    (``params:<group>``), ``runtime`` and ``extra`` ones."""
    return {
        "init_model": init_model,
        **TRAINING_DATA,
        "checkpoints": f"{job}_checkpoints",
        **extra,
        "params": params,
        "runtime": RUNTIME,
    }


def training_node(
    func: Callable[..., Any],
    method: str,
    *,
    init_model: str,
    extra_inputs: Mapping[str, str] | None = None,
) -> Node:
    """``train_<method>``: ``init_model`` + data + ``params:<method>`` ->
    ``<method>_model``, ``<method>_training_history``."""
    return Node(
        func,
        inputs=training_inputs(init_model, f"params:{method}", method, **(extra_inputs or {})),
        outputs=[f"{method}_model", f"{method}_training_history"],
        name=f"train_{method}",
    )


def training_pipeline(func: Callable[..., Any], method: str, *, init_model: str) -> Pipeline:
    """The pipeline of a method that is one training job."""
    return Pipeline([training_node(func, method, init_model=init_model)])
