"""pass@k against the exact binomial formula."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from weighted_mtp.evaluation import pass_at_k


def exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@pytest.mark.parametrize("n", range(1, 13))
def test_matches_exact_fraction_on_small_grid(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(exact(n, c, k)), abs=1e-12)


def test_known_values() -> None:
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 1, 5) == 1.0  # every draw of all five contains the correct one
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)


def test_stable_for_large_n() -> None:
    # C(1000, 100) overflows floats; the product form must not.
    value = pass_at_k(1000, 7, 100)
    assert value == pytest.approx(float(exact(1000, 7, 100)), rel=1e-12)
    assert 0.0 < value < 1.0


@pytest.mark.parametrize(
    ("n", "c", "k"),
    [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6), (0, 0, 1), (5.0, 2, 1), (5, 2, True)],
)
def test_rejects_invalid_inputs(n: object, c: object, k: object) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)  # type: ignore[arg-type]
