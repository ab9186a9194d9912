"""Where a catalog entry keeps its data, as the run-stopping checks report it: its URL, its
fsspec options (with credentials), its project-relative location, and whether the environment
marks it as protected source data (``metadata: {protected: true}``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from kedro.io import CatalogProtocol


def dataset_url(dataset: Any) -> str | None:
    """The dataset's ``filepath`` or ``path`` from its ``_describe()``, prefixed with its
    protocol when the path has none (``s3://bucket/key``); None when it names neither."""
    try:
        described = dataset._describe()
    except Exception:  # a dataset that cannot describe itself is none of ours
        return None
    where = described.get("filepath") or described.get("path")
    if where is None:
        return None
    where = str(where)
    protocol = described.get("protocol")
    if "://" not in where and protocol and protocol != "file":
        where = f"{protocol}://{where}"
    return where


def dataset_options(dataset: Any) -> Mapping[str, Any]:
    """The dataset's fsspec options (merged credentials and ``fs_args``); ``{}`` if none."""
    # Our datasets and kedro-datasets keep the merged credentials + fs_args there; no public
    # accessor exists, and the catalog's raw credentials are not handed to the hooks.
    for attribute in ("_storage_options", "_options"):
        value = getattr(dataset, attribute, None)
        if isinstance(value, Mapping):
            return value
    return {}


def catalog_location(catalog: CatalogProtocol, name: str, project_path: str | None) -> str:
    """Where catalog entry ``name`` lives, project-relative when it is inside the project."""
    dataset = catalog.get(name)
    where = dataset_url(dataset) if dataset is not None else None
    if where is None:
        return str(dataset)
    if project_path and os.path.isabs(where):
        # Project-relative, as the user wrote it in catalog.yml.
        relative = os.path.relpath(where, project_path)
        if not relative.startswith(".."):
            return relative
    return where


def is_protected(dataset: Any) -> bool:
    """Whether the dataset's catalog entry carries ``metadata: {protected: true}``."""
    metadata = getattr(dataset, "metadata", None)
    return isinstance(metadata, Mapping) and metadata.get("protected") is True
