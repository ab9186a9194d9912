"""S3 credentials, checked before a run contacts S3: the ``s3://`` locations a pipeline reads
or writes (catalog entries and URLs in its parameters), and whether each has credentials, its
catalog entry's or boto's default chain (:func:`missing_s3_credentials`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kedro.io import CatalogProtocol
from kedro.pipeline import Pipeline
from pydantic import BaseModel

from weighted_mtp.hooks.catalog_entries import dataset_options, dataset_url


class MissingS3CredentialsError(RuntimeError):
    """The pipeline about to run reads or writes ``s3://`` and no credentials are resolvable."""


_S3_PROTOCOLS = ("s3", "s3a", "s3n")


@dataclass(frozen=True)
class S3Location:
    """An ``s3://`` URL a pipeline uses: a catalog entry (``options`` its fsspec options, with
    credentials) or a parameter (no options: the environment and boto's chain)."""

    name: str
    url: str
    options: Mapping[str, Any]


def _is_s3(url: str) -> bool:
    return url.split("://", 1)[0].lower() in _S3_PROTOCOLS if "://" in url else False


def _param_urls(value: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        if _is_s3(value):
            yield prefix, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _param_urls(getattr(value, f.name), f"{prefix}.{f.name}")
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _param_urls(getattr(value, name), f"{prefix}.{name}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _param_urls(item, f"{prefix}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _param_urls(item, f"{prefix}[{index}]")


def s3_locations(pipeline: Pipeline, catalog: CatalogProtocol) -> list[S3Location]:
    """Every ``s3://`` location ``pipeline`` reads or writes: catalog entries (inputs and
    outputs) and URLs in its ``params:`` inputs (e.g. the pretrained tokenizer's path)."""
    found: list[S3Location] = []
    for name in sorted(pipeline.datasets()):
        if name == "parameters" or name not in catalog:
            continue
        if name.startswith("params:"):
            try:
                value = catalog.load(name)
            except Exception:  # Kedro reports bad parameters itself
                continue
            found.extend(
                S3Location(key, url, {}) for key, url in _param_urls(value, name[len("params:") :])
            )
            continue
        dataset = catalog.get(name)
        url = dataset_url(dataset) if dataset is not None else None
        if url is not None and _is_s3(url):
            found.append(S3Location(name, url, dataset_options(dataset)))
    return found


def _static_credentials(options: Mapping[str, Any]) -> bool:
    """Options that authenticate without boto's chain: keys, a named profile or anonymous."""
    return (
        bool(options.get("key") and options.get("secret"))
        or bool(options.get("profile"))
        or options.get("anon") is True
    )


def boto_credentials_problem() -> str | None:
    """None when boto's default chain finds credentials (environment, AWS_PROFILE, shared
    files, SSO, web identity, container or instance role), else why not.

    The instance-metadata lookup, the one step that may wait on the network, is bounded to one
    attempt of one second, and skipped when ``AWS_EC2_METADATA_DISABLED=true``.
    """
    import botocore.session
    from botocore.exceptions import BotoCoreError

    session = botocore.session.get_session()
    session.set_config_variable("metadata_service_timeout", 1)
    session.set_config_variable("metadata_service_num_attempts", 1)
    try:
        credentials = session.get_credentials()
    except BotoCoreError as exc:
        return f"boto's credential chain fails: {exc}"
    if credentials is not None:
        return None
    metadata = (
        "instance metadata disabled by AWS_EC2_METADATA_DISABLED"
        if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true"
        else "no instance role"
    )
    return (
        "boto's credential chain finds none (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY unset, no "
        f"AWS_PROFILE or ~/.aws/credentials, {metadata})"
    )


def missing_s3_credentials(locations: list[S3Location], *, env: str | None) -> str | None:
    """The message for :class:`MissingS3CredentialsError`, or None when every location has
    credentials (its catalog entry's, or boto's chain).

    Args:
        locations: from :func:`s3_locations`.
        env: the Kedro environment, named in the advice (``conf/<env>/credentials.yml``).
    """
    bare = [loc for loc in locations if not _static_credentials(loc.options)]
    if not bare:
        return None
    problem = boto_credentials_problem()
    if problem is None:
        return None
    shown = ", ".join(loc.name for loc in bare)
    buckets = sorted({loc.url.split("://", 1)[1].split("/", 1)[0] for loc in bare})
    endpoint = next(
        (
            str(loc.options["client_kwargs"]["endpoint_url"])
            for loc in bare
            if isinstance(loc.options.get("client_kwargs"), Mapping)
            and loc.options["client_kwargs"].get("endpoint_url")
        ),
        os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS",
    )
    conf = f"conf/{env}/credentials.yml" if env else "conf/local/credentials.yml"
    env_flag = f" --env {env}" if env else ""
    return (
        f"it uses S3 (bucket {', '.join(buckets)}: {shown}) and no S3 credentials are "
        f"resolvable: the catalog's s3_credentials are empty and {problem}. "
        "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary "
        f"keys) or AWS_PROFILE, or put s3_credentials (key, secret) in {conf} (git-ignored"
        f"{'; conf/local is not read when --env is given' if env else ''}); for an "
        f"S3-compatible store set AWS_ENDPOINT_URL_S3 (endpoint now: {endpoint}); choose the "
        f"bucket with `kedro run{env_flag} --params s3_bucket=<bucket>`."
    )
