"""What every torchrun job's spec shares: a run directory holding the spec as JSON and the logs.

:class:`RunDirectorySpec` is mixed into the pydantic specs (the training
:class:`~weighted_mtp.training.spec.JobSpec`, the evaluation's
:class:`~weighted_mtp.evaluation.parallel_generation.GenerationSpec`), which declare the
``run_dir`` field themselves: the mixin adds the paths the launcher reads
(:class:`~weighted_mtp.training.launcher.LaunchSpec`), the atomic write and the checked read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

SPEC_FILE = "spec.json"
LOG_DIR = "logs"

_Spec = TypeVar("_Spec", bound="RunDirectorySpec")


class RunDirectorySpec:
    """Run-directory paths and JSON (de)serialisation for a pydantic spec with ``run_dir``.

    Class attributes:
        spec_kind: how a read error names the file ("job spec", "generation spec").
        spec_json_indent: indentation of the written JSON (None: one line, for specs that
            carry data such as prompts).
    """

    spec_kind: ClassVar[str] = "spec"
    spec_json_indent: ClassVar[int | None] = 2

    if TYPE_CHECKING:  # provided by the pydantic model; not annotated at run time, where
        # pydantic would take the annotations for fields
        run_dir: str

        def model_dump_json(self, *, indent: int | None = None) -> str: ...

        @classmethod
        def model_validate(cls: type[_Spec], obj: Any) -> _Spec: ...

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir)

    @property
    def spec_path(self) -> Path:
        return self.run_path / SPEC_FILE

    @property
    def log_dir(self) -> Path:
        return self.run_path / LOG_DIR

    def write(self) -> Path:
        """Write ``run_dir/spec.json`` (creating ``run_dir``; atomic: a worker never reads a
        half-written spec); returns its path."""
        self.run_path.mkdir(parents=True, exist_ok=True)
        tmp = self.spec_path.with_suffix(".json.tmp")
        tmp.write_text(self.model_dump_json(indent=self.spec_json_indent) + "\n", encoding="utf-8")
        os.replace(tmp, self.spec_path)
        return self.spec_path

    @classmethod
    def read(cls: type[_Spec], path: str | os.PathLike) -> _Spec:
        """The spec at ``path``, validated.

        Raises:
            ValueError: the file cannot be read or is not JSON (naming the file).
            pydantic.ValidationError: it does not fit the spec's fields.
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the {cls.spec_kind} ({exc})") from None
        return cls.model_validate(raw)
