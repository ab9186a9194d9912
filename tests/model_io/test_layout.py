"""The model/IO split: public names stay where callers import them, and neither package needs
the other to be imported first."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "code",
    [
        "import weighted_mtp.model_io.loading",
        "import weighted_mtp.model_io.hf_config",
        "import weighted_mtp.model_io.model_dir",
        "import weighted_mtp.models",
        "from weighted_mtp.datasets import ModelDirectoryDataset",
    ],
)
def test_import_order_has_no_cycle(code: str) -> None:
    # A fresh interpreter: in this process every module is already imported.
    check = "from weighted_mtp.models import load_model; print(load_model.__module__)"
    proc = subprocess.run(
        [sys.executable, "-c", f"{code}; {check}"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "weighted_mtp.model_io.loading"


def test_public_model_names() -> None:
    from weighted_mtp import models
    from weighted_mtp.model_io import loading
    from weighted_mtp.models import (  # noqa: F401 - the import is the test
        KVCache,
        ModelArgs,
        ModelArgsError,
        MTPTransformer,
        RMSNorm,
        TransformerBlock,
        ValueHead,
        apply_rope,
        debug_args,
        load_model,
        rope_tables,
    )

    assert load_model is loading.load_model is loading.from_pretrained
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = models.no_such_name
