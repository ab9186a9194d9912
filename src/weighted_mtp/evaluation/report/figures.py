"""What every chart of the report shares: one colour per method, and a figure rendered as PNG
bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.figure import Figure

from weighted_mtp.seeds import split_seed

#: One colour per method in every chart (``<method>_model`` in the pass@k chart).
METHOD_COLOURS = {
    "base": "C0",
    "baseline": "C1",
    "verifiable": "C2",
    "rho1": "C3",
    "critic": "C4",
    "verifiable_uniform": "C5",
}


def colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per name: :data:`METHOD_COLOURS` for known methods (``x``, ``x_model`` or a
    seed's ``seed_<s>.x``), the next unused colour of the cycle for the others."""
    fixed = {n: METHOD_COLOURS.get(split_seed(n)[0].removesuffix("_model")) for n in names}
    free = (f"C{i}" for i in range(10) if f"C{i}" not in set(fixed.values()))
    return {n: c if c is not None else next(free, "0.5") for n, c in fixed.items()}


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure rendered as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
