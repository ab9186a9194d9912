"""Model directory IO: everything that reads or writes a model's files, kept apart from the
model code in :mod:`weighted_mtp.models`.

- :mod:`.model_dir`: the model directory format (``params.json``, safetensors, ``metadata.json``),
  its export (``save_model_dir``) and header/weight reads; a finished model, not a training
  checkpoint.
- :mod:`.files`: fsspec access, SHA256, atomic directory writes, local copies of remote dirs.
- :mod:`.dtypes`: dtype spellings (``"bf16"`` -> ``torch.bfloat16``, safetensors codes).
- :mod:`.hf_config`: Hugging Face ``config.json`` -> ``ModelArgs``, HF weight names -> Meta's.
- :mod:`.loading`: ``load_model`` / ``from_pretrained`` and the ``ModelDirectory`` handle.
- :mod:`.convert_meta`: Meta release (``consolidated*.pth``) -> model directory (CLI).
- :mod:`.reference`: the frozen Hugging Face reference model of Rho-1.
- :mod:`.micro`: seeded micro models for laptops and tests.

Nothing is imported here: the submodules pull in fsspec, safetensors or transformers, which a
caller of one of them should not pay for the others.
"""
