"""The real training worker, run under two checks: ``python -m tests.training.collective_check_worker SPEC``.

Only a CPU is available here, so the worker cannot meet a real NCCL group; it checks the two
things a CUDA run needs instead, on the real loop (``weighted_mtp.training.worker.main``):

1. **Collectives receive tensors on the training device.** A device-bound backend (NCCL) has
   no path for a tensor the loop copied to the host. On the CPU a host copy lands on the same
   device, so the worker tracks it instead: a ``TorchFunctionMode`` marks the result of every
   ``Tensor.cpu()`` (made a distinct copy, as it is on a GPU) and, transitively, everything
   computed from it (``.to(...)``, ``.clone()``, arithmetic). The tensor collectives of
   ``torch.distributed`` (``all_reduce``, ``all_gather``, ``broadcast``, the reduce-scatters,
   ...; FSDP2's own included) are wrapped to raise :class:`CollectiveDeviceError` when a
   tensor is marked or is not on the training device's type. Object collectives, which pickle
   on the host by design, are not wrapped.
2. **Host reads of device values**, counted per optimizer step: ``.item()``, ``.tolist()``,
   ``.cpu()``, ``.numpy()``, ``bool()``/``float()``/``int()`` of a tensor that lives on the
   training device on a real run (a parameter, anything uploaded with ``.to(device)``, the
   batches the loop moves to the device, a factory's result given ``device=`` a
   ``torch.device``, and every new tensor computed from those). On a GPU each is a host-device synchronisation. Windows are cut by
   ``torch.optim`` step pre-hooks: window ``k`` runs from optimizer step ``k`` (0-based) up
   to step ``k + 1``, so it holds step ``k``'s logging/saving and step ``k + 1``'s forward
   and backward; window ``-1`` is the set-up and step 0's forward.

Every rank writes ``run_dir/collective_report_rank{N}.json``: the collectives it checked by
name, the violations, and per window the host reads by source location (first frame in
``weighted_mtp``). A violation raises, unless ``WMTP_COLLECTIVE_CHECK=count`` (measurement of
code that would fail: ``benchmarks/host_syncs.py``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from weighted_mtp.training import worker
from weighted_mtp.training.distributed import resolve_device
from weighted_mtp.training.spec import JobSpec

HOST_COPY = "_wmtp_host_copy"
ON_DEVICE = "_wmtp_on_device"
READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"}
FACTORIES = ("zeros", "ones", "full", "empty", "tensor", "as_tensor", "arange")
COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_single",
    "all_gather_into_tensor",
    "broadcast",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_single",
    "reduce_scatter_tensor",
    "all_to_all_single",
    "gather",
    "scatter",
)


class CollectiveDeviceError(AssertionError):
    """A collective received a tensor a device-bound backend could not take."""


def _location() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if "/weighted_mtp/" in name:
            return f"{name.split('/weighted_mtp/')[-1]}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back
    return "outside weighted_mtp"


def _mark(tensors: list[torch.Tensor], attr: str) -> None:
    for t in tensors:
        # A tensor type without instance attributes stays unmarked.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(t, attr, True)


def _on_device(t: torch.Tensor) -> bool:
    return isinstance(t, nn.Parameter) or getattr(t, ON_DEVICE, False)


def _uploads(device: torch.device, args: tuple, kwargs: dict) -> bool:
    # ``.to(world.device)`` or a factory's ``device=``: the project passes torch.device
    # objects; torch's own host-side tensors (AdamW's step counters, ...) say "cpu" as a
    # string, which on this CPU-only machine would otherwise read as the training device.
    for arg in (kwargs.get("device"), *args[1:]):
        if isinstance(arg, torch.device) and arg.type == device.type:
            return True
    return False


class Tracker(TorchFunctionMode):
    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device
        self.window = -1
        self.reads: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
        self.collectives: collections.Counter = collections.Counter()
        self.violations: collections.Counter = collections.Counter()
        # WMTP_COLLECTIVE_CHECK=count: record violations and go on (to measure old code).
        self.count_only = os.environ.get("WMTP_COLLECTIVE_CHECK") == "count"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "__get__":
            return func(*args, **kwargs)
        inputs = [x for x in tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        from_device = any(_on_device(x) for x in inputs)
        if name in READS and args and isinstance(args[0], torch.Tensor) and _on_device(args[0]):
            self.reads[self.window][f"{name} at {_location()}"] += 1
        out = func(*args, **kwargs)
        outputs = [x for x in tree_leaves(out) if isinstance(x, torch.Tensor)]
        if name == "cpu":
            # On a GPU .cpu() is a new host tensor; on the CPU it returns its input, which
            # must keep its own marks.
            if out is args[0]:
                out = out.clone()
            _mark([out], HOST_COPY)
            return out
        if name in ("to", *FACTORIES) and _uploads(self.device, args, kwargs):
            _mark(outputs, ON_DEVICE)  # an upload (on the CPU possibly its own input)
        # Marks flow to new tensors only: an input handed back (an in-place op, or the
        # regrouping AdamW does of its host-side step counters together with the parameters)
        # keeps its own.
        fresh = [x for x in outputs if all(x is not y for y in inputs)]
        if any(getattr(x, HOST_COPY, False) for x in inputs):
            _mark(fresh, HOST_COPY)
        if from_device:
            _mark(fresh, ON_DEVICE)
        return out

    def wrap_collective(self, name: str, original):
        def checked(*args: Any, **kwargs: Any):
            for t in tree_leaves((args, kwargs)):
                if not isinstance(t, torch.Tensor):
                    continue
                problem = None
                if getattr(t, HOST_COPY, False):
                    problem = (
                        f"dist.{name} got a host copy (made by Tensor.cpu()) of a training-"
                        f"device tensor, at {_location()}: NCCL has no CPU path"
                    )
                elif t.device.type != self.device.type:
                    problem = (
                        f"dist.{name} got a tensor on {t.device}, not on the training device "
                        f"{self.device}, at {_location()}"
                    )
                if problem is not None:
                    self.violations[problem] += 1
                    if not self.count_only:
                        raise CollectiveDeviceError(problem)
            self.collectives[name] += 1
            return original(*args, **kwargs)

        return checked

    def next_window(self, *_: Any) -> None:
        self.window += 1


def _mark_uploads() -> None:
    """Mark the batches the loop moves to the device (on the CPU that move is the identity;
    on a GPU they are device tensors). Code without ``training/batches.py`` uploads with
    ``.to(device)``, which the tracker marks by itself."""
    try:
        from weighted_mtp.training import batches
    except ImportError:
        return
    to_device = batches.BatchReader.to_device

    def marked_to_device(self, batch):
        out = to_device(self, batch)
        tensors = [out.input_ids, out.targets, out.is_correct, out.ref_ce, *out.extras.values()]
        _mark([t for t in tensors if t is not None], ON_DEVICE)
        return out

    batches.BatchReader.to_device = marked_to_device


def main() -> int:
    spec = JobSpec.read(sys.argv[1])
    rank = int(os.environ.get("RANK", "0"))
    tracker = Tracker(resolve_device(spec.runtime.device, int(os.environ.get("LOCAL_RANK", "0"))))
    for name in COLLECTIVES:
        if hasattr(dist, name):
            setattr(dist, name, tracker.wrap_collective(name, getattr(dist, name)))
    _mark_uploads()
    register_optimizer_step_pre_hook(tracker.next_window)
    try:
        with tracker:
            return worker.main([sys.argv[1]])
    finally:
        report = {
            "collectives": dict(tracker.collectives),
            "reads": {str(k): dict(v) for k, v in sorted(tracker.reads.items())},
            "windows": tracker.window + 1,
            "violations": dict(tracker.violations),
        }
        path = spec.run_path / f"collective_report_rank{rank}.json"
        path.write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
