"""Model hyper-parameters: the fields of Meta's ``params.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


class ModelArgsError(ValueError):
    """A ``params.json`` / ``config.json`` that does not describe a valid model."""


@dataclass(frozen=True)
class ModelArgs:
    """Architecture of a Meta multi-token-prediction LLaMA.

    Defaults are those of ``7B_1T_4``. ``n_kv_heads=None`` means ``n_heads``
    (no grouped-query attention), as in Meta's release.
    """

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    vocab_size: int = 32000
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    n_future_tokens: int = 4
    max_seq_len: int = 4096

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ModelArgsError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ModelArgsError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.kv_heads}"
            )
        if not 1 <= self.n_future_tokens <= self.n_layers:
            raise ModelArgsError(
                f"n_future_tokens={self.n_future_tokens} must be in [1, n_layers={self.n_layers}]"
            )
        if self.head_dim % 2:
            raise ModelArgsError(f"head_dim={self.head_dim} must be even for RoPE")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """LLaMA's SwiGLU width: 2/3 * 4 * dim, scaled, rounded up to ``multiple_of``."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "<dict>") -> ModelArgs:
        """Build from a ``params.json`` mapping; unknown keys are ignored, bad types rejected."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in known:
                continue
            if value is not None and key in {"ffn_dim_multiplier", "norm_eps", "rope_theta"}:
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise ModelArgsError(f"{source}: '{key}' must be a number, got {value!r}")
                value = float(value)
            elif value is not None and not (isinstance(value, int) and not isinstance(value, bool)):
                raise ModelArgsError(f"{source}: '{key}' must be an integer, got {value!r}")
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except ModelArgsError as exc:
            raise ModelArgsError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> ModelArgs:
        """Read Meta's ``params.json``."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelArgsError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ModelArgsError(f"{path}: expected a JSON object, got {type(raw).__name__}")
        return cls.from_dict(raw, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
