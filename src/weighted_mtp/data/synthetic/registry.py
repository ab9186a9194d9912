"""The registry of task families: every family of every ``families_*`` module, by name."""

from __future__ import annotations

from weighted_mtp.data.synthetic import (
    families_arithmetic,
    families_counting,
    families_greedy,
    families_grids,
    families_lists,
    families_strings,
)
from weighted_mtp.data.synthetic.family import Family

FAMILIES: tuple[Family, ...] = (
    *families_strings.FAMILIES,
    *families_arithmetic.FAMILIES,
    *families_lists.FAMILIES,
    *families_greedy.FAMILIES,
    *families_counting.FAMILIES,
    *families_grids.FAMILIES,
)
FAMILIES_BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}

if len(FAMILIES_BY_NAME) != len(FAMILIES):  # pragma: no cover - caught at import in tests
    raise RuntimeError("two synthetic task families share a name")
