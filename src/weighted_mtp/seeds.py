"""Catalog names of the fine-tuning seeds (``experiment.seeds``): seed 1 keeps a model's plain
name (``baseline_model``), seed ``s >= 2`` is ``seed_<s>.<name>``, the Kedro namespace of that
seed's copy of the method pipelines (:mod:`weighted_mtp.pipelines.training_pipeline` says why).
Plain string functions: the pipelines and the statistics both read them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: The namespace of seed ``s >= 2``'s copy of the method pipelines.
SEED_NAMESPACE = "seed_{seed}"
_SEEDED_NAME = re.compile(r"^seed_(\d+)\.(.+)$")


def seed_namespace(seed: int) -> str:
    """``seed_<seed>``: the namespace of a seed's copy of the method pipelines."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 1:
        raise ValueError(f"a seed is an integer >= 1, got {seed!r}")
    return SEED_NAMESPACE.format(seed=seed)


def seeded_name(name: str, seed: int) -> str:
    """The catalog name of ``name`` in seed ``seed``'s copy: ``name`` itself for seed 1 (so a
    one-seed run and every existing reference keep their names), ``seed_<s>.<name>`` else."""
    namespace = seed_namespace(seed)
    return name if seed == 1 else f"{namespace}.{name}"


def split_seed(name: str) -> tuple[str, int]:
    """``(name, seed)`` of a seeded catalog name: ``seed_3.baseline_model`` ->
    ``("baseline_model", 3)``; a plain name is seed 1.

    Raises:
        ValueError: ``seed_1.<name>`` or ``seed_0.<name>`` (seed 1 is the plain name).
    """
    match = _SEEDED_NAME.match(name)
    if match is None:
        return name, 1
    seed = int(match.group(1))
    if seed < 2:
        raise ValueError(
            f"{name}: seed 1 has the plain name {match.group(2)!r}, seeds >= 2 a prefix"
        )
    return match.group(2), seed


def group_seeds(names: Iterable[str]) -> dict[str, dict[int, str]]:
    """``{model: {seed: catalog name}}`` in first-seen order of the models.

    Raises:
        ValueError: a name twice, or a model whose seeds are not ``1..n`` (a seed's model
            missing: the spread and the pooled means would silently cover fewer runs).
    """
    groups: dict[str, dict[int, str]] = {}
    for name in names:
        model, seed = split_seed(name)
        if seed in groups.setdefault(model, {}):
            raise ValueError(f"{name}: {model} seed {seed} given twice")
        groups[model][seed] = name
    for model, seeds in groups.items():
        if sorted(seeds) != list(range(1, len(seeds) + 1)):
            raise ValueError(
                f"{model}: seeds {sorted(seeds)} evaluated; expected 1..{max(seeds)} "
                "(seed 1 is the plain name, seed s >= 2 is seed_<s>.<name>)"
            )
    return {model: dict(sorted(seeds.items())) for model, seeds in groups.items()}
