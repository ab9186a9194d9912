"""The model/IO split: public names stay where callers import them, and neither package needs
the other to be imported first."""

from __future__ import annotations

import importlib.util
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
    check = "from weighted_mtp.model_io import load_model; print(load_model.__module__)"
    proc = subprocess.run(
        [sys.executable, "-c", f"{code}; {check}"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "weighted_mtp.model_io.loading"


def test_public_model_names() -> None:
    from weighted_mtp import model_io, models
    from weighted_mtp.model_io import from_pretrained, load_model, loading
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
        rope_tables,
    )

    assert load_model is from_pretrained is loading.load_model is loading.from_pretrained
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = models.no_such_name
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = model_io.no_such_name


def test_no_shims_left() -> None:
    # The entry points live in model_io only (docs/contracts.md): no second path to keep alive.
    from weighted_mtp import models

    assert not hasattr(models, "load_model")
    assert importlib.util.find_spec("weighted_mtp.models.convert_meta") is None
