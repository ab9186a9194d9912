"""Typed parameters of the data_engineering pipeline (``params:data_engineering.*``).

Kedro builds these from ``conf/base/parameters_data_engineering.yml`` (and ``--params``) for
the nodes whose arguments are annotated with them, and validates them when the run starts,
before any node runs: a bad value stops the run with the parameter's name, the value and what
is allowed, e.g. ``data_engineering.synthetic.n_train_tasks=0``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from weighted_mtp.data.mbpp import SPLITS, STANDARD_SPLITS

# Byte fallback (256 pieces), 3 specials and the newline piece: what train_tokenizer needs
# before the first learned piece (weighted_mtp.data.tokenizer_training.train_tokenizer).
_TOKENIZER_FIXED_PIECES = 256 + 3 + 1


class _Strict(BaseModel):
    # Unknown keys are typos (``n_train_task``): refuse them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(_Strict):
    """Sizes of the synthetic CodeContests splits (the offline stand-in for the real dataset).

    Every split needs at least one task: an empty training split would still train a
    tokenizer and write empty files, and an empty test split evaluates nothing.
    """

    n_train_tasks: int = Field(200, ge=1)
    n_valid_tasks: int = Field(40, ge=1)
    n_test_tasks: int = Field(40, ge=1)
    seed: int = Field(1234, ge=0)


class ConversionParams(_Strict):
    """How raw rows are converted.

    Attributes:
        on_bad_record: ``raise`` stops at the first bad row; ``quarantine`` writes bad rows to
            the quarantine JSONL and goes on.
        enum_numbering: CodeContests ``source``/``difficulty`` numbering: ``auto``, ``hf`` or
            ``proto`` (see :mod:`weighted_mtp.data.codecontests_numbering`).
        max_solutions_per_task: cap on correct and on incorrect Python 3 solutions per
            CodeContests task; null keeps all.
        mbpp_splits: MBPP split name -> inclusive ``[first, last]`` task_id; every split of
            :data:`weighted_mtp.data.mbpp.SPLITS`, without overlaps.
    """

    on_bad_record: Literal["raise", "quarantine"] = "raise"
    enum_numbering: Literal["auto", "hf", "proto"] = "auto"
    max_solutions_per_task: int | None = Field(None, ge=1)
    mbpp_splits: dict[str, list[int]] = Field(
        default_factory=lambda: {k: list(v) for k, v in STANDARD_SPLITS.items()}
    )

    @field_validator("mbpp_splits")
    @classmethod
    def _splits_are_ranges(cls, splits: dict[str, list[int]]) -> dict[str, list[int]]:
        if set(splits) != set(SPLITS):
            raise ValueError(f"needs exactly the splits {list(SPLITS)}, got {sorted(splits)}")
        for name, bounds in splits.items():
            if len(bounds) != 2 or not 1 <= bounds[0] <= bounds[1]:
                raise ValueError(
                    f"{name}: expected [first, last] task ids with 1 <= first <= last, got {bounds}"
                )
        ordered = sorted(splits.items(), key=lambda item: item[1][0])
        for (before, a), (after, b) in zip(ordered, ordered[1:], strict=False):
            if b[0] <= a[1]:
                raise ValueError(f"{before} {a} and {after} {b} overlap")
        return splits


# Substrings of fsspec option names that hold secrets: parameters are logged to MLflow.
_SECRET_WORDS = ("key", "secret", "token", "password", "credential")


def _secret_options(options: dict[str, Any], prefix: str) -> list[str]:
    found = []
    for name, value in options.items():
        if any(word in name.lower() for word in _SECRET_WORDS):
            found.append(f"{prefix}.{name}")
        elif isinstance(value, dict):
            found.extend(_secret_options(value, f"{prefix}.{name}"))
    return found


class TokenizerParams(_Strict):
    """The tokenizer: trained on the training records, or a pretrained model's own file.

    Attributes:
        vocab_size: target size of a trained tokenizer; larger than the pieces byte fallback,
            the specials and ``space_runs`` take (ignored with ``pretrained_path``).
        pretrained_path: a ``tokenizer.model`` (path or fsspec URL, e.g. the base model
            directory's on ``s3://``) to use instead of training: the models are trained and
            evaluated with their own tokenizer, so the metadata's token counts must use it too.
        storage_options: fsspec options for ``pretrained_path`` without secrets (e.g.
            ``client_kwargs: {endpoint_url: ...}``; S3 credentials come from the environment
            or boto's chain, as for the training workers, and botocore reads
            ``AWS_ENDPOINT_URL_S3`` itself).
        model_type: ``bpe`` or ``unigram``.
        space_runs: runs of this many spaces (>= 2) become single pieces.
        num_threads: SentencePiece trainer threads (1: identical output run to run).

    Raises:
        ValueError: ``storage_options`` holds a secret (parameters are logged to MLflow).
    """

    vocab_size: int = Field(1024, ge=1)
    pretrained_path: str | None = None
    storage_options: dict[str, Any] | None = None
    model_type: Literal["bpe", "unigram"] = "bpe"
    space_runs: list[int] = Field(default_factory=lambda: [2, 4, 8, 16])
    num_threads: int = Field(1, ge=1)

    @field_validator("space_runs")
    @classmethod
    def _runs_of_spaces(cls, runs: list[int]) -> list[int]:
        short = [n for n in runs if n < 2]
        if short:
            raise ValueError(f"runs of spaces must be >= 2, got {short}")
        return runs

    @model_validator(mode="after")
    def _checks(self) -> TokenizerParams:
        secrets = _secret_options(
            dict(self.storage_options or {}), "data_engineering.tokenizer.storage_options"
        )
        if secrets:
            raise ValueError(
                f"{', '.join(secrets)}: parameters are logged to MLflow, so they must not hold "
                "credentials; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in "
                "the environment instead"
            )
        floor = _TOKENIZER_FIXED_PIECES + len(set(self.space_runs))
        if self.pretrained_path is None and self.vocab_size <= floor:
            raise ValueError(
                f"vocab_size={self.vocab_size} is too small: byte fallback, specials and the "
                f"space runs {sorted(set(self.space_runs))} already take {floor} pieces; "
                f"use more than {floor}"
            )
        return self
