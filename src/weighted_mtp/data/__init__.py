"""Training and evaluation data: converters, metadata tables, sampling, reading, tokenizing and
collating.

The public names below are importable from here (``from weighted_mtp.data import
read_records, PromptOutputCollator``). They are resolved on first access: importing one
submodule (e.g. ``weighted_mtp.data.prompt`` from a Kedro node) must not pull in torch (the
collator) or pandas (sampling) through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from weighted_mtp.data.collator import PromptOutputCollator
    from weighted_mtp.data.offset_reader import read_lines_at, read_records
    from weighted_mtp.data.prompt import format_prompt
    from weighted_mtp.data.sampling import (
        CurriculumConfig,
        sample_balanced,
        sample_correct,
        sample_curriculum,
    )
    from weighted_mtp.data.tokenizer import Tokenizer

_SOURCES = {
    "CurriculumConfig": "sampling",
    "PromptOutputCollator": "collator",
    "Tokenizer": "tokenizer",
    "format_prompt": "prompt",
    "read_lines_at": "offset_reader",
    "read_records": "offset_reader",
    "sample_balanced": "sampling",
    "sample_correct": "sampling",
    "sample_curriculum": "sampling",
}

__all__ = [
    "CurriculumConfig",
    "PromptOutputCollator",
    "Tokenizer",
    "format_prompt",
    "read_lines_at",
    "read_records",
    "sample_balanced",
    "sample_correct",
    "sample_curriculum",
]


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})
