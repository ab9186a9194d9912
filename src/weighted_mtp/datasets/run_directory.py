"""``RunDirectoryDataset``: the local root under which training nodes create their runs.

A training node makes ``<root>/<method>/<UTC timestamp>/`` and hands it to the torchrun
workers, which write the job spec, data plan, per-rank logs, step history, checkpoints and the
final model there. The catalog owns where that root is; loading it gives its path and creates
nothing (the node makes the run directory it needs).
"""

from __future__ import annotations

import os
from typing import Any

from kedro.io import AbstractDataset
from kedro.io.core import DatasetError, get_protocol_and_path


class RunDirectoryDataset(AbstractDataset[None, str]):
    """The root of the training run directories, loaded as an absolute local path (``str``).

    Runs are local: the workers append logs and write checkpoints continuously, which an object
    store cannot do; the finished model is published to its own catalog entry (which may be on
    S3) by the node's output.

    Args:
        path: a local directory (need not exist yet).
        metadata: free-form, ignored by Kedro (kedro-viz shows it).

    Example (catalog.yml)::

        training_runs:
          type: weighted_mtp.datasets.RunDirectoryDataset
          path: data/06_models/training
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        protocol, _ = get_protocol_and_path(str(path))
        if protocol != "file":
            raise ValueError(
                f"path must be a local directory (the training workers write their logs and "
                f"checkpoints there), got {path!r}; publish models to S3 through the model "
                f"entries instead"
            )
        self._path = str(path)
        self.metadata = metadata

    def load(self) -> str:
        return os.path.abspath(self._path)

    def save(self, data: None) -> None:
        raise DatasetError(
            f"{self._path} is a root of run directories, not an output: a training node "
            f"creates its run directory under the loaded path"
        )

    def _exists(self) -> bool:
        # Loading never fails: the root is created with the first run under it.
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}
