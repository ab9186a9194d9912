"""The names README promises from ``weighted_mtp.data``."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_public_names_import() -> None:
    from weighted_mtp.data import (
        CurriculumConfig,
        PromptOutputCollator,
        Tokenizer,
        collator,
        format_prompt,
        offset_reader,
        prompt,
        read_lines_at,
        read_records,
        sample_balanced,
        sample_correct,
        sample_curriculum,
        sampling,
        tokenizer,
    )

    assert PromptOutputCollator is collator.PromptOutputCollator
    assert Tokenizer is tokenizer.Tokenizer
    assert format_prompt is prompt.format_prompt
    assert (read_records, read_lines_at) == (
        offset_reader.read_records,
        offset_reader.read_lines_at,
    )
    assert (sample_balanced, sample_correct, sample_curriculum, CurriculumConfig) == (
        sampling.sample_balanced,
        sampling.sample_correct,
        sampling.sample_curriculum,
        sampling.CurriculumConfig,
    )


def test_unknown_name_is_an_attribute_error() -> None:
    import weighted_mtp.data

    with pytest.raises(AttributeError, match="no_such_name"):
        _ = weighted_mtp.data.no_such_name


def test_importing_a_submodule_stays_light() -> None:
    # A fresh interpreter: the package must not import torch/pandas for a light submodule.
    code = (
        "import sys, weighted_mtp.data.prompt; "
        "print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
