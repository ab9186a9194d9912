"""Metric values that a loss reports for one micro-batch, with how they combine.

A step's metrics are reduced over its micro-batches and its ranks; how depends on the metric:
a loss contribution is summed (each micro-batch's value is already divided by the step's
global token count), a mean is a ``(sum, count)`` pair, extremes take min/max, a mean with its
standard deviation keeps ``(sum, sum of squares, count)``, a correlation keeps Pearson's
sufficient statistics. Keeping the rule beside the value makes every reduction exact, whatever
the split into micro-batches and ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

Kind = Literal["sum", "mean", "min", "max", "moments", "pearson"]


def _stats(value: torch.Tensor | float | list[float]) -> torch.Tensor:
    return torch.as_tensor(value).detach().to(torch.float64).cpu().reshape(-1)


@dataclass
class MetricValues:
    """``name -> (kind, stats, count)``: ``stats`` a float64 vector (length 1, or 2 for
    ``moments``, 5 for ``pearson``)."""

    items: dict[str, tuple[Kind, torch.Tensor, float]] = field(default_factory=dict)

    def _put(self, name: str, kind: Kind, value, count: float) -> None:
        stats = _stats(value)
        if name in self.items:
            old_kind, old, old_count = self.items[name]
            if old_kind != kind:
                raise ValueError(f"metric {name!r} reported as {old_kind} and as {kind}")
            if kind == "min":
                stats = torch.minimum(old, stats)
            elif kind == "max":
                stats = torch.maximum(old, stats)
            else:
                stats, count = old + stats, old_count + count
        self.items[name] = (kind, stats, float(count))

    def add_sum(self, name: str, value: torch.Tensor | float) -> None:
        self._put(name, "sum", value, 1.0)

    def add_mean(self, name: str, total: torch.Tensor | float, count: torch.Tensor | float) -> None:
        """A mean over ``count`` items whose values sum to ``total``."""
        self._put(name, "mean", total, float(count))

    def add_min(self, name: str, value: torch.Tensor | float) -> None:
        self._put(name, "min", value, 1.0)

    def add_max(self, name: str, value: torch.Tensor | float) -> None:
        self._put(name, "max", value, 1.0)

    def add_moments(self, name: str, values: torch.Tensor) -> None:
        """``values [N]`` -> ``<name>/mean`` and ``<name>/std`` over everything reported."""
        v = values.detach().double().reshape(-1)
        self._put(name, "moments", torch.stack([v.sum(), (v * v).sum()]), float(v.numel()))

    def add_pearson(self, name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        """Pairs ``(x_i, y_i)`` -> their Pearson correlation over everything reported."""
        x, y = x.detach().double().reshape(-1), y.detach().double().reshape(-1)
        stats = torch.stack([x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()])
        self._put(name, "pearson", stats, float(x.numel()))

    def merge(self, other: MetricValues) -> None:
        for name, (kind, stats, count) in other.items.items():
            self._put(name, kind, stats, count)

    def to_plain(self) -> dict[str, tuple[str, list[float], float]]:
        """Picklable form (for ``all_gather_object``)."""
        return {k: (kind, s.tolist(), c) for k, (kind, s, c) in self.items.items()}

    @classmethod
    def from_plain(cls, plain: dict[str, tuple[str, list[float], float]]) -> MetricValues:
        out = cls()
        for name, (kind, stats, count) in plain.items():
            out._put(name, kind, stats, count)  # type: ignore[arg-type]
        return out

    def finalize(self) -> dict[str, float]:
        """Plain numbers; a mean, std or correlation over nothing is left out, not 0."""
        out: dict[str, float] = {}
        for name, (kind, s, count) in sorted(self.items.items()):
            if kind == "mean":
                if count > 0:
                    out[name] = float(s[0] / count)
            elif kind == "moments":
                if count > 0:
                    mean = float(s[0] / count)
                    out[f"{name}/mean"] = mean
                    out[f"{name}/std"] = math.sqrt(max(float(s[1] / count) - mean * mean, 0.0))
            elif kind == "pearson":
                n = count
                if n >= 2:
                    sx, sy, sxx, syy, sxy = (float(v) for v in s)
                    cov = sxy - sx * sy / n
                    var = (sxx - sx * sx / n) * (syy - sy * sy / n)
                    if var > 0:
                        out[name] = cov / math.sqrt(var)
            else:
                out[name] = float(s[0])
        return out
