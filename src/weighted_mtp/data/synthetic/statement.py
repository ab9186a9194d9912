"""Problem statements in the layout of Codeforces descriptions in ``deepmind/code_contests``.

Legend, ``Input``, ``Output``, then the public tests as examples. The wording of the shared
sections varies with the task's random generator, as the families' legends do.
"""

from __future__ import annotations

import random

from weighted_mtp.data.synthetic.family import Family, Params, pick
from weighted_mtp.data.synthetic.schema import Level

_MULTI_INPUT = (
    "The first line contains a single integer t (1 ≤ t ≤ {t}) — the number of test cases. "
    "The descriptions of the test cases follow.",
    "The first line of the input contains the number of test cases t (1 ≤ t ≤ {t}). "
    "Each test case is given as follows.",
    "The input consists of several test cases. The first line holds their number t "
    "(1 ≤ t ≤ {t}), then the test cases follow.",
)
_MULTI_OUTPUT = (
    "For each test case, {spec}",
    "For every test case, {spec}",
    "For each test case {spec}",
)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def render_statement(
    family: Family,
    params: Params,
    level: Level,
    multi: bool,
    examples: list[tuple[str, str]],
    rng: random.Random,
) -> str:
    """The full description of one task; ``examples`` are its public tests."""
    input_spec = family.input_spec(params, level)
    output_spec = family.output_spec(params)
    if multi:
        input_spec = pick(rng, _MULTI_INPUT).format(t=level.t) + "\n\n" + input_spec
        output_spec = pick(rng, _MULTI_OUTPUT).format(spec=_lower_first(output_spec))
    parts = [
        family.legend(params, rng),
        "Input",
        input_spec,
        "Output",
        output_spec,
        "Examples" if len(examples) > 1 else "Example",
    ]
    for stdin, stdout in examples:
        parts += ["Input", stdin.rstrip("\n"), "Output", stdout.rstrip("\n")]
    return "\n\n".join(parts) + "\n"
