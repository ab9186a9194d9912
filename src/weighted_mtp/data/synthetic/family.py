"""What a task family is: an input layout, a reference answer, and solution cores.

A family describes ONE test case; :mod:`.programs` turns it into whole programs (single or
multi-test-case input, several reading and printing styles) and :mod:`.tasks` into tests and a
statement. Because the test inputs and the programs' reading code are both derived from the
same ``fields``, a correct core is correct by construction; incorrect cores are bugs that an
edge case of the family always exposes (the test suite checks both by execution).

Field kinds (one case of input, in order):

* ``("int", "n")``: a line with one integer;
* ``("ints", "n k")``: a line with several integers, one variable each;
* ``("arr", "a", "n")``: a line with ``n`` integers, read into a list;
* ``("word", "s")``: a non-empty token without spaces;
* ``("line", "s")``: a raw line (may hold spaces or be empty); not readable token by token;
* ``("pairs", "qs", "q")``: ``q`` lines of two integers, read into a list of tuples;
* ``("grid", "g", "n")``: ``n`` lines, each a token;
* ``("matrix", "m", "n k")``: ``n`` lines of ``k`` integers.

Output kinds: ``int`` and ``str`` (one line), ``yesno`` (``YES``/``NO``), ``seq`` (a list, one
line, space-separated), ``lines`` (a list, one item a line).

Cores are Python 3 statements using the field names and ``$NAME`` placeholders for the
instance parameters; they leave the answer in ``ans``. ``import``/``from`` lines are hoisted
to the top of the program.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from weighted_mtp.data.synthetic.schema import Level

Case = dict[str, Any]
Params = dict[str, Any]


@dataclass(frozen=True)
class Family:
    """A parameterised problem family.

    Attributes:
        name: identifier (``snake_case``), unique in the registry.
        topic: the module's topic (strings, arithmetic, ...).
        tags: Codeforces-style tags (``cf_tags``).
        fields: the input layout of one case (see the module docstring).
        output: the output kind of one case.
        draw_params: ``(rng, level) -> params``: one instance of the family.
        title: ``params -> str``: the problem's title.
        legend: ``(params, rng) -> str``: the story; ``rng`` picks among wordings.
        input_spec: ``(params, level) -> str``: the input of one case, with constraints.
        output_spec: ``params -> str``: what to print for one case.
        draw_case: ``(rng, params, level) -> case``: a random case within the constraints.
        edge_cases: ``(params, level) -> [case, ...]``: cases that expose every bug core.
        solve: ``(params, case) -> answer``: the reference implementation.
        cores: correct cores, in different styles.
        bugs: incorrect cores, each failing on at least one edge case.
        slow_cores: indices of ``cores`` too slow beyond the easiest level's constraints.
    """

    name: str
    topic: str
    tags: tuple[str, ...]
    fields: tuple[tuple[str, ...], ...]
    output: str
    draw_params: Callable[[random.Random, Level], Params]
    title: Callable[[Params], str]
    legend: Callable[[Params, random.Random], str]
    input_spec: Callable[[Params, Level], str]
    output_spec: Callable[[Params], str]
    draw_case: Callable[[random.Random, Params, Level], Case]
    edge_cases: Callable[[Params, Level], list[Case]]
    solve: Callable[[Params, Case], Any]
    cores: tuple[str, ...]
    bugs: tuple[str, ...]
    slow_cores: frozenset[int] = field(default_factory=frozenset)

    @property
    def line_based(self) -> bool:
        """True when some field cannot be read token by token (raw lines)."""
        return any(f[0] == "line" for f in self.fields)


def randint(rng: random.Random, lo: int, hi: int) -> int:
    """``rng.randint`` without its argument checks: the generator draws millions of these."""
    return lo + int(rng.random() * (hi - lo + 1))


def rand_list(rng: random.Random, n: int, lo: int, hi: int) -> list[int]:
    """``n`` integers uniform in ``[lo, hi]``."""
    r = rng.random
    span = hi - lo + 1
    return [lo + int(r() * span) for _ in range(n)]


def rand_word(rng: random.Random, n: int, alphabet: str) -> str:
    """A word of ``n`` letters of ``alphabet``."""
    r = rng.random
    k = len(alphabet)
    return "".join([alphabet[int(r() * k)] for _ in range(n)])


def pick(rng: random.Random, options: tuple[Any, ...] | list[Any]) -> Any:
    """One of ``options`` (faster than ``rng.choice`` for the generator's hot path)."""
    return options[int(rng.random() * len(options))]


HEROES = ("Vasya", "Petya", "Alice", "Bob", "Monocarp", "Polycarp", "Nastya", "Timur", "Masha")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def other_letters(c: str, k: int) -> str:
    """``k`` distinct lowercase letters different from ``c`` (the ones after it, cyclically)."""
    i = LETTERS.index(c)
    return "".join(LETTERS[(i + 1 + j) % 26] for j in range(k))
