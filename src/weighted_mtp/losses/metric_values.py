"""Metric values that a loss reports for one micro-batch, with how they combine.

A step's metrics are reduced over its micro-batches and its ranks; how depends on the metric:
a loss contribution is summed (each micro-batch's value is already divided by the step's
global token count), a mean is a ``(sum, count)`` pair, extremes take min/max, a mean with its
standard deviation keeps ``(sum, sum of squares, count)``, a correlation keeps Pearson's
sufficient statistics. Keeping the rule beside the value makes every reduction exact, whatever
the split into micro-batches and ranks.

Values stay where the loss computed them (the training device) and are combined there:
reporting and merging never wait for the device. They reach the host in one transfer per
device, when :meth:`MetricValues.to_plain` or :meth:`MetricValues.finalize` is called (the
loop does so once per logged step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

Kind = Literal["sum", "mean", "min", "max", "moments", "pearson"]
Count = torch.Tensor | float


def _stats(value: torch.Tensor | float | list[float]) -> torch.Tensor:
    # No .cpu(): a device value stays on its device (a Python number becomes a host tensor,
    # which creating on a device would cost a synchronising copy).
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64).reshape(-1)
    return torch.as_tensor(value, dtype=torch.float64).reshape(-1)


def _count(count: torch.Tensor | float) -> Count:
    if isinstance(count, torch.Tensor):
        return count.detach().to(torch.float64).reshape(())
    return float(count)


def _aligned(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    # The same name reported once from Python numbers and once from device tensors: combine
    # on the device (rare; the loop's own merges never mix).
    return new if new.device == old.device else new.to(old.device)


def _to_host(tensors: list[torch.Tensor]) -> list[list[float]]:
    """Each tensor's values as floats, with one device-to-host transfer per device."""
    out: list[list[float] | None] = [None] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for indices in by_device.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in indices]).tolist()
        start = 0
        for i in indices:
            n = tensors[i].numel()
            out[i] = flat[start : start + n]
            start += n
    return out  # type: ignore[return-value]


@dataclass
class MetricValues:
    """``name -> (kind, stats, count)``: ``stats`` a float64 vector (length 1, or 2 for
    ``moments``, 5 for ``pearson``) on the device it was reported from, ``count`` a float64
    scalar tensor beside it or a Python float."""

    items: dict[str, tuple[Kind, torch.Tensor, Count]] = field(default_factory=dict)

    def _put(self, name: str, kind: Kind, value, count: torch.Tensor | float) -> None:
        stats, n = _stats(value), _count(count)
        if name in self.items:
            old_kind, old, old_count = self.items[name]
            if old_kind != kind:
                raise ValueError(f"metric {name!r} reported as {old_kind} and as {kind}")
            stats = _aligned(old, stats)
            if kind == "min":
                stats = torch.minimum(old, stats)
            elif kind == "max":
                stats = torch.maximum(old, stats)
            else:
                stats = old + stats
                if isinstance(old_count, torch.Tensor) and isinstance(n, torch.Tensor):
                    n = old_count + _aligned(old_count, n)
                else:
                    n = old_count + n
        self.items[name] = (kind, stats, n)

    def add_sum(self, name: str, value: torch.Tensor | float) -> None:
        self._put(name, "sum", value, 1.0)

    def add_mean(self, name: str, total: torch.Tensor | float, count: torch.Tensor | float) -> None:
        """A mean over ``count`` items whose values sum to ``total``."""
        self._put(name, "mean", total, count)

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
        """Picklable host form (for ``all_gather_object``): the one place the values leave
        the device, one transfer per device."""
        names = sorted(self.items)
        tensors: list[torch.Tensor] = []
        for name in names:
            _, stats, count = self.items[name]
            tensors.append(stats)
            if isinstance(count, torch.Tensor):
                tensors.append(count)
        host = iter(_to_host(tensors))
        out: dict[str, tuple[str, list[float], float]] = {}
        for name in names:
            kind, _, count = self.items[name]
            stats = next(host)
            n = next(host)[0] if isinstance(count, torch.Tensor) else float(count)
            out[name] = (kind, stats, n)
        return out

    @classmethod
    def from_plain(cls, plain: dict[str, tuple[str, list[float], float]]) -> MetricValues:
        out = cls()
        for name, (kind, stats, count) in plain.items():
            out._put(name, kind, stats, count)  # type: ignore[arg-type]
        return out

    def finalize(self) -> dict[str, float]:
        """Plain numbers; a mean, std or correlation over nothing is left out, not 0, and so
        is a min (max) over nothing, reported as +inf (-inf) so that the loss need not look
        at the device to know it is empty."""
        out: dict[str, float] = {}
        for name, (kind, s, count) in sorted(self.to_plain().items()):
            if kind == "mean":
                if count > 0:
                    out[name] = s[0] / count
            elif kind == "moments":
                if count > 0:
                    mean = s[0] / count
                    out[f"{name}/mean"] = mean
                    out[f"{name}/std"] = math.sqrt(max(s[1] / count - mean * mean, 0.0))
            elif kind == "pearson":
                n = count
                if n >= 2:
                    sx, sy, sxx, syy, sxy = s
                    cov = sxy - sx * sy / n
                    var = (sxx - sx * sx / n) * (syy - sy * sy / n)
                    if var > 0:
                        out[name] = cov / math.sqrt(var)
            elif kind == "min":
                if s[0] != math.inf:  # the min over nothing (identity of min)
                    out[name] = s[0]
            elif kind == "max":
                if s[0] != -math.inf:
                    out[name] = s[0]
            else:
                out[name] = s[0]
        return out
