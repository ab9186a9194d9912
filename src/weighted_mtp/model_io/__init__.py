"""Model directory IO: everything that reads or writes a model's files, kept apart from the
model code in :mod:`weighted_mtp.models`.

- :mod:`.model_dir`: the model directory format (``params.json``, safetensors, ``metadata.json``),
  its export (``save_model_dir``) and header/weight reads; a finished model, not a training
  checkpoint.
- :mod:`.files`: fsspec access, SHA256, atomic directory writes, local copies of remote dirs.
- :mod:`.dtypes`: dtype spellings (``"bf16"`` -> ``torch.bfloat16``, safetensors codes).
- :mod:`.hf_config`: Hugging Face ``config.json`` -> ``ModelArgs``, HF weight names -> Meta's.
- :mod:`.loading`: ``load_model`` / ``from_pretrained`` and the ``ModelDirectory`` handle.
- :mod:`.meta_model`: ``build_meta_model``, the workers' sharded loading (``MetaModel.fill``).
- :mod:`.convert_meta`: Meta release (``consolidated*.pth``) -> model directory (CLI).
- :mod:`.reference`: the frozen Hugging Face reference model of Rho-1.
- :mod:`.micro`: seeded micro models for laptops and tests.

The public entry point ``weighted_mtp.model_io.load_model`` (and its alias ``from_pretrained``)
resolves on first access (PEP 562): the submodules pull in fsspec, safetensors or transformers,
which a caller of one of them should not pay for the others, so nothing is imported eagerly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from weighted_mtp.model_io.loading import from_pretrained, load_model

__all__ = ["from_pretrained", "load_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from weighted_mtp.model_io import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
