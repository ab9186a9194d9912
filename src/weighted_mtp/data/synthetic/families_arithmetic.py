"""Arithmetic families: multiples, gcd/lcm, digit sums, modular powers, ceilings, FizzBuzz."""

from __future__ import annotations

import math
from functools import reduce

from weighted_mtp.data.synthetic.family import HEROES, Family, pick, rand_list, randint
from weighted_mtp.data.synthetic.schema import DIFFICULTY_A, DIFFICULTY_F

# Upper bounds on a single number n, by difficulty: bigger constraints at harder levels.
_N = {DIFFICULTY_A: 200, 9: 10**6, DIFFICULTY_F: 10**12}


def _multiples_params(rng, lv):
    k, mode = randint(rng, 2, 50), pick(rng, ("count", "sum"))
    if mode == "count":
        acc, closed, bug = "1", "m", f"ans = round(n / {k})"
    else:
        acc, closed = "x", f"{k} * m * (m + 1) // 2"
        bug = f"m = n // {k}\nans = {k} * m * (m + 1) / 2"
    return {"K": k, "mode": mode, "_acc": acc, "_closed": closed, "_bug": bug}


def _multiples_solve(p, c):
    m = c["n"] // p["K"]
    return m if p["mode"] == "count" else p["K"] * m * (m + 1) // 2


multiples = Family(
    name="multiples",
    topic="arithmetic",
    tags=("math",),
    fields=(("int", "n"),),
    output="int",
    draw_params=_multiples_params,
    title=lambda p: f"{'Counting' if p['mode'] == 'count' else 'Summing'} Multiples of {p['K']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Find the {'number' if p['mode'] == 'count' else 'sum'} of all integers x with "
            f"1 ≤ x ≤ n that are divisible by {p['K']}.",
            f"{pick(rng, HEROES)} writes down every multiple of {p['K']} between 1 and n "
            f"inclusive. What is the {'count' if p['mode'] == 'count' else 'sum'} of the "
            f"numbers written?",
        ),
    ),
    input_spec=lambda p, lv: f"The only line contains one integer n (1 ≤ n ≤ {_N[lv.difficulty]}).",
    output_spec=lambda p: "Print one integer — the answer.",
    draw_case=lambda rng, p, lv: {"n": randint(rng, 1, _N[lv.difficulty])},
    edge_cases=lambda p, lv: [{"n": 3 * p["K"]}, {"n": 4 * p["K"] - 1}, {"n": 1}],
    solve=_multiples_solve,
    cores=(
        "m = n // $K\nans = $_closed",
        "ans = 0\nfor x in range($K, n + 1, $K):\n    ans += $_acc",
        "ans = sum($_acc for x in range(1, n + 1) if x % $K == 0)",
    ),
    bugs=("m = (n - 1) // $K\nans = $_closed", "$_bug"),
    slow_cores=frozenset({1, 2}),
)

_GCD_CORES = (
    "from functools import reduce\nfrom math import gcd\nans = reduce(gcd, a)",
    "from math import gcd\nans = 0\nfor x in a:\n    ans = gcd(ans, x)",
    "ans = 0\nfor x in a:\n    u, v = ans, x\n    while v:\n        u, v = v, u % v\n    ans = u",
)
_LCM_CORES = (
    "from math import gcd\nans = 1\nfor x in a:\n    ans = ans * x // gcd(ans, x)",
    "import math\nans = math.lcm(*a)",
    "from functools import reduce\nfrom math import gcd\nans = reduce(lambda x, y: x * y // gcd(x, y), a, 1)",
)
_GCD_BUGS = ("ans = min(a)", "from math import gcd\nans = gcd(a[0], a[-1])")
_LCM_BUGS = ("ans = 1\nfor x in a:\n    ans *= x", "ans = max(a)")


def _gcd_params(rng, lv):
    op = pick(rng, ("gcd", "lcm"))
    cores, bugs = (_GCD_CORES, _GCD_BUGS) if op == "gcd" else (_LCM_CORES, _LCM_BUGS)
    return {
        "op": op,
        "_c0": cores[0],
        "_c1": cores[1],
        "_c2": cores[2],
        "_b0": bugs[0],
        "_b1": bugs[1],
    }


def _gcd_bounds(p, lv):
    # lcm grows fast: keep its answers printable.
    return (min(lv.n, 10), min(lv.v, 10**4)) if p["op"] == "lcm" else (lv.n, lv.v)


def _gcd_case(rng, p, lv):
    n, v = _gcd_bounds(p, lv)
    g = randint(rng, 1, 6)
    return {
        "n": (k := randint(rng, 1, n)),
        "a": [g * x for x in rand_list(rng, k, 1, max(1, v // 6))],
    }


gcd_lcm = Family(
    name="gcd_lcm",
    topic="arithmetic",
    tags=("math", "number theory"),
    fields=(("int", "n"), ("arr", "a", "n")),
    output="int",
    draw_params=_gcd_params,
    title=lambda p: "Greatest Common Divisor" if p["op"] == "gcd" else "Least Common Multiple",
    legend=lambda p, rng: pick(
        rng,
        (
            f"You are given n positive integers. Compute their "
            f"{'greatest common divisor' if p['op'] == 'gcd' else 'least common multiple'}.",
            f"{pick(rng, HEROES)} has an array a of n positive integers and asks for "
            f"{'the largest integer dividing every element' if p['op'] == 'gcd' else 'the smallest positive integer divisible by every element'}.",
        ),
    ),
    input_spec=lambda p, lv: (
        "The first line contains an integer n (1 ≤ n ≤ {}). The second "
        "line contains n integers a_1, ..., a_n (1 ≤ a_i ≤ {}).".format(*_gcd_bounds(p, lv))
    ),
    output_spec=lambda p: "Print one integer — the answer.",
    draw_case=_gcd_case,
    edge_cases=lambda p, lv: [{"n": 2, "a": [4, 6]}, {"n": 3, "a": [6, 4, 6]}, {"n": 1, "a": [7]}],
    solve=lambda p, c: reduce(math.gcd if p["op"] == "gcd" else math.lcm, c["a"]),
    cores=("$_c0", "$_c1", "$_c2"),
    bugs=("$_b0", "$_b1"),
)

_DIGITS_N = {DIFFICULTY_A: 1000, 9: 10**9, DIFFICULTY_F: 10**18}


def _digit_sum(n: int, b: int) -> int:
    s = 0
    while n:
        n, r = divmod(n, b)
        s += r
    return s


digit_sum_base = Family(
    name="digit_sum_base",
    topic="arithmetic",
    tags=("math", "implementation"),
    fields=(("int", "n"),),
    output="int",
    draw_params=lambda rng, lv: {"B": pick(rng, [b for b in range(2, 17) if b != 10])},
    title=lambda p: f"Digits in Base {p['B']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Write the number n in base {p['B']} and output the sum of its digits (as "
            f"ordinary integers).",
            f"{pick(rng, HEROES)} converts n to the base-{p['B']} numeral system. What is the "
            f"sum of the digit values of the result? The number 0 has the single digit 0.",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The only line contains an integer n (0 ≤ n ≤ {_DIGITS_N[lv.difficulty]})."
    ),
    output_spec=lambda p: "Print one integer — the sum of the digits.",
    draw_case=lambda rng, p, lv: {"n": randint(rng, 0, _DIGITS_N[lv.difficulty])},
    edge_cases=lambda p, lv: [{"n": 0}, {"n": 1}, {"n": p["B"]}, {"n": _DIGITS_N[lv.difficulty]}],
    solve=lambda p, c: _digit_sum(c["n"], p["B"]),
    cores=(
        "ans = 0\nwhile n > 0:\n    ans += n % $B\n    n //= $B",
        "def digit_sum(x):\n    return 0 if x == 0 else x % $B + digit_sum(x // $B)\n\n\nans = digit_sum(n)",
        "ans = 0\nwhile n:\n    n, r = divmod(n, $B)\n    ans += r",
    ),
    bugs=(
        "ans = 0\nwhile n > 1:\n    ans += n % $B\n    n //= $B",
        "ans = sum(int(d) for d in str(n))",
    ),
)

_MODULI = (7, 13, 97, 1000, 1024, 10007, 65536, 10**9 + 7, 998244353, 10**9 + 9, 123456789, 999983)
_EXP = {DIFFICULTY_A: 30, 9: 10**9, DIFFICULTY_F: 10**18}

modular_power = Family(
    name="modular_power",
    topic="arithmetic",
    tags=("math", "number theory"),
    fields=(("ints", "a b"),),
    output="int",
    draw_params=lambda rng, lv: {"M": pick(rng, _MODULI)},
    title=lambda p: f"Power Modulo {p['M']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Compute a to the power b modulo {p['M']}. By convention 0^0 = 1.",
            f"{pick(rng, HEROES)} needs the remainder of a^b divided by {p['M']} (where "
            f"x^0 = 1 for every x, including 0).",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The only line contains two integers a and b (0 ≤ a ≤ {lv.v}, "
        f"0 ≤ b ≤ {_EXP[lv.difficulty]})."
    ),
    output_spec=lambda p: f"Print one integer — a^b mod {p['M']}.",
    draw_case=lambda rng, p, lv: {
        "a": randint(rng, 0, lv.v),
        "b": randint(rng, 0, _EXP[lv.difficulty]),
    },
    edge_cases=lambda p, lv: [
        {"a": 2, "b": 0},
        {"a": 0, "b": 0},
        {"a": 2, "b": 1},
        {"a": lv.v, "b": 7},
    ],
    solve=lambda p, c: pow(c["a"], c["b"], p["M"]),
    cores=(
        "ans = pow(a, b, $M)",
        "ans = 1 % $M\nbase = a % $M\nwhile b > 0:\n    if b & 1:\n        ans = ans * base % $M\n"
        "    base = base * base % $M\n    b >>= 1",
        "def power(x, e):\n    if e == 0:\n        return 1 % $M\n    half = power(x, e // 2)\n"
        "    half = half * half % $M\n    return half * x % $M if e % 2 else half\n\n\nans = power(a % $M, b)",
    ),
    bugs=(
        "ans = a % $M\nbase = a % $M\nwhile b > 1:\n    if b & 1:\n        ans = ans * base % $M\n"
        "    base = base * base % $M\n    b >>= 1",
        "ans = pow(a, b, $M) if b else 0",
    ),
)

_CEIL_N = {DIFFICULTY_A: 1000, 9: 10**9, DIFFICULTY_F: 10**19}


def _ceil_params(rng, lv):
    k = randint(rng, 2, 100)
    # Float division only goes wrong on numbers beyond 2^53: a bug for the hardest level only.
    bug = (
        f"import math\nans = math.ceil(n / {k})"
        if lv.difficulty == DIFFICULTY_F
        else f"ans = n // {k}"
    )
    return {"K": k, "_bug": bug}


def _ceil_edges(p, lv):
    k = p["K"]
    edges = [{"n": 5 * k}, {"n": 0}, {"n": k + 1}]
    if lv.difficulty == DIFFICULTY_F:
        edges.append({"n": k * 10**17 + 1})
    return edges


boxes = Family(
    name="boxes",
    topic="arithmetic",
    tags=("math",),
    fields=(("int", "n"),),
    output="int",
    draw_params=_ceil_params,
    title=lambda p: f"Boxes of {p['K']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"A box holds at most {p['K']} items. What is the minimum number of boxes needed "
            f"to pack n items?",
            f"{pick(rng, HEROES)} moves n books; one trip carries at most {p['K']} books. "
            f"Find the minimum number of trips (zero books need zero trips).",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The only line contains an integer n (0 ≤ n ≤ {_CEIL_N[lv.difficulty]})."
    ),
    output_spec=lambda p: "Print one integer — the minimum number.",
    draw_case=lambda rng, p, lv: {"n": randint(rng, 0, _CEIL_N[lv.difficulty])},
    edge_cases=_ceil_edges,
    solve=lambda p, c: -(-c["n"] // p["K"]),
    cores=(
        "ans = (n + $K - 1) // $K",
        "ans = -(-n // $K)",
        "q, r = divmod(n, $K)\nans = q + (1 if r else 0)",
    ),
    bugs=("ans = n // $K + 1", "$_bug"),
)

_FIZZ_WORDS = ("Fizz", "Buzz", "Foo", "Bar", "Ping", "Pong", "Tic", "Tac")


def _fizz_params(rng, lv):
    p = randint(rng, 2, 9)
    q = pick(rng, [x for x in range(2, 10) if x != p])
    w1 = pick(rng, _FIZZ_WORDS)
    w2 = pick(rng, [w for w in _FIZZ_WORDS if w != w1])
    return {"P": p, "Q": q, "W1": w1, "W2": w2}


def _fizz(p, c):
    out = []
    for i in range(1, c["n"] + 1):
        s = (p["W1"] if i % p["P"] == 0 else "") + (p["W2"] if i % p["Q"] == 0 else "")
        out.append(s or str(i))
    return out


fizzbuzz = Family(
    name="fizzbuzz",
    topic="arithmetic",
    tags=("implementation", "math"),
    fields=(("int", "n"),),
    output="lines",
    draw_params=_fizz_params,
    title=lambda p: f"{p['W1']}{p['W2']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f'For every i from 1 to n print one line: "{p["W1"]}{p["W2"]}" if i is divisible '
            f'by both {p["P"]} and {p["Q"]}, "{p["W1"]}" if only by {p["P"]}, "{p["W2"]}" if '
            f"only by {p['Q']}, and the number i itself otherwise.",
            f'{pick(rng, HEROES)} counts from 1 to n, but says "{p["W1"]}" instead of '
            f'multiples of {p["P"]}, "{p["W2"]}" instead of multiples of {p["Q"]} and '
            f'"{p["W1"]}{p["W2"]}" instead of numbers that are multiples of both. Print what '
            f"is said, one item a line.",
        ),
    ),
    input_spec=lambda p, lv: "The only line contains an integer n (1 ≤ n ≤ 100).",
    output_spec=lambda p: "Print n lines, as described.",
    draw_case=lambda rng, p, lv: {
        "n": randint(rng, 1, 100 if lv.difficulty == DIFFICULTY_A else 30)
    },
    edge_cases=lambda p, lv: [{"n": p["P"] * p["Q"]}, {"n": 1}],
    solve=_fizz,
    cores=(
        "ans = []\nfor i in range(1, n + 1):\n    if i % $P == 0 and i % $Q == 0:\n"
        "        ans.append('$W1$W2')\n    elif i % $P == 0:\n        ans.append('$W1')\n"
        "    elif i % $Q == 0:\n        ans.append('$W2')\n    else:\n        ans.append(i)",
        "ans = [('$W1' * (i % $P == 0) + '$W2' * (i % $Q == 0)) or str(i) for i in range(1, n + 1)]",
        "def say(i):\n    s = ''\n    if i % $P == 0:\n        s += '$W1'\n    if i % $Q == 0:\n"
        "        s += '$W2'\n    return s or str(i)\n\n\nans = list(map(say, range(1, n + 1)))",
    ),
    bugs=(
        "ans = []\nfor i in range(1, n + 1):\n    if i % $P == 0:\n        ans.append('$W1')\n"
        "    elif i % $Q == 0:\n        ans.append('$W2')\n    elif i % ($P * $Q) == 0:\n"
        "        ans.append('$W1$W2')\n    else:\n        ans.append(i)",
        "ans = [('$W1' * (i % $P == 0) + '$W2' * (i % $Q == 0)) or str(i) for i in range(1, n)]",
    ),
)

FAMILIES = (multiples, gcd_lcm, digit_sum_base, modular_power, boxes, fizzbuzz)
