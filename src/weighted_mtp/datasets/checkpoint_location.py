"""``CheckpointLocationDataset``: where a training method keeps its resume checkpoints.

The catalog decides: ``data/06_models/checkpoints/<method>`` in base, ``s3://...`` in a100.
Loading gives a :class:`CheckpointLocation` (nothing is read or created); the training node
hands it to the workers, which write checkpoints locally and mirror them to a remote location
in the background (:mod:`weighted_mtp.training.checkpoint_storage`).
"""

from __future__ import annotations

import os
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from kedro.io import AbstractDataset
from kedro.io.core import DatasetError, get_protocol_and_path


@dataclass(frozen=True)
class CheckpointLocation:
    """``url``: an absolute local path or an fsspec URL; ``storage_options`` may hold
    credentials (left out of ``repr``; pass only their non-secret part to other processes)."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_local(self) -> bool:
        return get_protocol_and_path(self.url)[0] == "file"


class CheckpointLocationDataset(AbstractDataset[None, CheckpointLocation]):
    """A checkpoint directory (local path or URL), loaded as a :class:`CheckpointLocation`.

    Args:
        path: ``data/06_models/checkpoints/baseline`` or ``s3://bucket/checkpoints/baseline``.
        credentials, fs_args: fsspec options for a remote path.
        metadata: free-form, ignored by Kedro (kedro-viz shows it).
    """

    def __init__(
        self,
        *,
        path: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = str(path)
        self._protocol, _ = get_protocol_and_path(self._path)
        self._options = {**deepcopy(credentials or {}), **deepcopy(fs_args or {})}
        self.metadata = metadata

    def load(self) -> CheckpointLocation:
        url = os.path.abspath(self._path) if self._protocol == "file" else self._path
        return CheckpointLocation(url, dict(self._options))

    def save(self, data: None) -> None:
        raise DatasetError(
            f"{self._path} is where the training workers write checkpoints, not a node output"
        )

    def _exists(self) -> bool:
        # A place to write to: it is there as soon as the first checkpoint is.
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "protocol": self._protocol}
