"""What lets the real step run without memory, GPU or peers: the fake process group, the device
FSDP2 expects the fake tensors on, and the answers to value-dependent operations under the
all-true-masks assumption (:class:`FullMasks`)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from weighted_mtp.training.estimate.params import EstimateError

_aten = torch.ops.aten


class FullMasks(TorchDispatchMode):
    """Answers, for fake tensors, the operations whose result depends on tensor *values*,
    under the estimate's assumption that every boolean mask is all true (every target token
    real): ``x[mask]`` keeps every element, ``mask.nonzero()`` lists every position, and a
    scalar read (``bool(mask.any())``, ``float(norm)``) is true / 1. Shapes of everything
    downstream then follow from the batch shape alone."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is _aten.nonzero.default:
            x = args[0]
            return torch.empty((x.numel(), x.dim()), dtype=torch.long, device=x.device)
        if func in (_aten._local_scalar_dense.default, _aten.item.default):
            x = args[0]
            if x.dtype == torch.bool:
                return True
            return 1.0 if x.dtype.is_floating_point or x.dtype.is_complex else 1
        if func in (
            _aten.index.Tensor,
            _aten.index_put.default,
            _aten.index_put_.default,
            _aten._index_put_impl_.default,
        ):
            indices: list[torch.Tensor | None] = []
            for index in args[1]:
                if index is not None and index.dtype in (torch.bool, torch.uint8):
                    # An all-true mask over k dims selects every element: k index vectors.
                    indices.extend(
                        torch.empty(index.numel(), dtype=torch.long, device=index.device)
                        for _ in range(index.dim())
                    )
                else:
                    indices.append(index)
            args = (args[0], indices, *args[2:])
        return func(*args, **kwargs)


@contextlib.contextmanager
def fake_process_group(world_size: int) -> Iterator[None]:
    """A ``world_size``-rank process group of which this process is rank 0 and whose
    collectives move nothing (``torch.testing``'s fake backend)."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise EstimateError(
            "a process group already exists in this process; run the estimate on its own "
            "(kedro estimate)"
        )
    # init_process_group wraps sys.excepthook (a "[rank0]" prefix) and destroy_process_group
    # leaves it wrapped: this runs in the user's process (kedro estimate, a notebook), whose
    # own hook must come back with the group gone.
    hook = sys.excepthook
    dist.init_process_group("fake", rank=0, world_size=world_size, store=FakeStore())
    try:
        yield
    finally:
        dist.destroy_process_group()
        sys.excepthook = hook


def fake_device() -> torch.device:
    # FSDP2's default mesh is built on the machine's accelerator (else the CPU), and it moves
    # the parameters there: the fake tensors must live on that device.
    accelerator = (
        torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    )
    if accelerator is None:
        return torch.device("cpu")
    return torch.device(accelerator.type, torch.accelerator.current_device_index())


@contextlib.contextmanager
def outside_modes() -> Iterator[None]:
    """Leave the fake mode (and :class:`FullMasks`) for the duration of the block."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from torch.utils._python_dispatch import _get_current_dispatch_mode, _pop_mode_temporarily

    with contextlib.ExitStack() as stack:
        if isinstance(_get_current_dispatch_mode(), FullMasks):
            stack.enter_context(_pop_mode_temporarily())
        stack.enter_context(unset_fake_temporarily())
        yield
