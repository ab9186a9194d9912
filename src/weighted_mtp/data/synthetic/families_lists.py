"""Array families: filtered sums, extreme positions, rotations, prefix sums, pairs, runs, parity.

Kept whole because the generator deals families by a seeded shuffle of the registry's order:
a split must keep these eight contiguous and in this order, or the generated data changes, and
no seam by ``topic`` is contiguous (the ``lists`` families are the 1st-3rd and the 7th).
"""

from __future__ import annotations

from functools import reduce

from weighted_mtp.data.synthetic.family import HEROES, Family, pick, rand_list, randint
from weighted_mtp.data.synthetic.schema import DIFFICULTY_A

_ARRAY_INPUT = (
    "The first line contains an integer n (1 ≤ n ≤ {n}). The second line contains n integers "
    "a_1, a_2, ..., a_n ({lo} ≤ a_i ≤ {hi})."
)
_ARR_FIELDS = (("int", "n"), ("arr", "a", "n"))


def _array_input(lv, lo=None, hi=None):
    return _ARRAY_INPUT.format(
        n=lv.n, lo=-lv.v if lo is None else lo, hi=lv.v if hi is None else hi
    )


def _random_array(rng, lv, lo=None, hi=None):
    n = randint(rng, 1, lv.n)
    return {"n": n, "a": rand_list(rng, n, -lv.v if lo is None else lo, lv.v if hi is None else hi)}


def _arr(values):
    return {"n": len(values), "a": list(values)}


def _threshold_params(rng, lv):
    strict = rng.random() < 0.5
    return {"K": randint(rng, 1, lv.v // 2), "strict": strict, "_cmp": ">" if strict else ">=",
            "_bad": ">=" if strict else ">"}  # fmt: skip


sum_above = Family(
    name="sum_above",
    topic="lists",
    tags=("implementation",),
    fields=_ARR_FIELDS,
    output="int",
    draw_params=_threshold_params,
    title=lambda p: f"Sum Above {p['K']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Find the sum of all elements of the array that are "
            f"{'strictly greater than' if p['strict'] else 'at least'} {p['K']} (0 if there "
            f"are none).",
            f"{pick(rng, HEROES)} keeps only the numbers {p['_cmp']} {p['K']} from the array and "
            f"adds them up. What is the result? An empty sum is 0.",
        ),
    ),
    input_spec=lambda p, lv: _array_input(lv),
    output_spec=lambda p: "Print one integer — the sum.",
    draw_case=lambda rng, p, lv: _random_array(rng, lv),
    edge_cases=lambda p, lv: [_arr([p["K"], p["K"]]), _arr([-p["K"] - 5, 1]), _arr([-1])],
    solve=lambda p, c: sum(x for x in c["a"] if (x > p["K"] if p["strict"] else x >= p["K"])),
    cores=(
        "ans = sum(x for x in a if x $_cmp $K)",
        "ans = 0\nfor x in a:\n    if x $_cmp $K:\n        ans += x",
        "ans = sum(filter(lambda x: x $_cmp $K, a))",
    ),
    bugs=("ans = sum(x for x in a if x $_bad $K)", "ans = sum(x for x in a if abs(x) $_cmp $K)"),
)

_EXTREME = {
    ("max", "first"): (">", ">=", "(-a[i], i)", "a.index(max(a)) + 1"),
    ("max", "last"): (">=", ">", "(-a[i], -i)", "n - a[::-1].index(max(a))"),
    ("min", "first"): ("<", "<=", "(a[i], i)", "a.index(min(a)) + 1"),
    ("min", "last"): ("<=", "<", "(a[i], -i)", "n - a[::-1].index(min(a))"),
}


def _extreme_params(rng, lv):
    crit, tie = pick(rng, ("max", "min")), pick(rng, ("first", "last"))
    cmp, bad, key, index = _EXTREME[crit, tie]
    return {"crit": crit, "tie": tie, "_cmp": cmp, "_bad": bad, "_key": key, "_index": index}


def _extreme_solve(p, c):
    a = c["a"]
    target = max(a) if p["crit"] == "max" else min(a)
    idx = [i for i, x in enumerate(a) if x == target]
    return (idx[0] if p["tie"] == "first" else idx[-1]) + 1


extreme_position = Family(
    name="extreme_position",
    topic="lists",
    tags=("implementation",),
    fields=_ARR_FIELDS,
    output="int",
    draw_params=_extreme_params,
    title=lambda p: f"Where Is the {'Maximum' if p['crit'] == 'max' else 'Minimum'}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Print the position (1-based) of the {p['crit']}imum element of the array. If it "
            f"occurs several times, print the {p['tie']} position.",
            f"{pick(rng, HEROES)} looks for the {'largest' if p['crit'] == 'max' else 'smallest'} "
            f"number in a list and reports its index, counting from 1; among equal values the "
            f"{p['tie']} one is reported.",
        ),
    ),
    input_spec=lambda p, lv: _array_input(lv, lo=1, hi=min(lv.v, 10)),
    output_spec=lambda p: "Print one integer — the position.",
    draw_case=lambda rng, p, lv: _random_array(rng, lv, 1, min(lv.v, 10)),
    edge_cases=lambda p, lv: [_arr([5, 5]), _arr([1, 9, 1, 9]), _arr([3])],
    solve=_extreme_solve,
    cores=(
        "ans = $_index",
        "best = 0\nfor i in range(1, n):\n    if a[i] $_cmp a[best]:\n        best = i\nans = best + 1",
        "ans = min(range(n), key=lambda i: $_key) + 1",
    ),
    bugs=(
        "best = 0\nfor i in range(1, n):\n    if a[i] $_bad a[best]:\n        best = i\nans = best + 1",
        "best = 0\nfor i in range(1, n):\n    if a[i] $_cmp a[best]:\n        best = i\nans = best",
    ),
)


def _rotate_params(rng, lv):
    left, k = rng.random() < 0.5, randint(rng, 3, lv.n - 1)
    return {
        "K": k,
        "dir": "left" if left else "right",
        "_sign": "-" if left else "",
        "_idx": f"(i + {k}) % n" if left else f"(i - {k}) % n",
        "_slice": "a[k:] + a[:k]" if left else "a[n - k:] + a[:n - k]",
        "_nomod": f"a[{k}:] + a[:{k}]" if left else f"a[-{k}:] + a[:-{k}]",
        "_other": "a[n - k:] + a[:n - k]" if left else "a[k:] + a[:k]",
    }


def _rotate(p, c):
    a, k = c["a"], p["K"] % c["n"]
    return a[k:] + a[:k] if p["dir"] == "left" else a[len(a) - k :] + a[: len(a) - k]


rotate_array = Family(
    name="rotate_array",
    topic="lists",
    tags=("implementation",),
    fields=_ARR_FIELDS,
    output="seq",
    draw_params=_rotate_params,
    title=lambda p: f"Rotate {p['dir'].capitalize()} by {p['K']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Cyclically shift the array {p['K']} times to the {p['dir']}. One shift to the left "
            f"moves the first element to the end; one shift to the right moves the last element "
            f"to the front.",
            f"{pick(rng, HEROES)} rotates a circular list: {p['K']} steps to the {p['dir']}, "
            f"one element per step (a left step takes the first element to the back, a right "
            f"step the last element to the front). Print the list afterwards.",
        ),
    ),
    input_spec=lambda p, lv: _array_input(lv),
    output_spec=lambda p: (
        "Print the n elements of the array after the shifts, separated by spaces."
    ),
    draw_case=lambda rng, p, lv: _random_array(rng, lv),
    edge_cases=lambda p, lv: [
        _arr(range(1, p["K"])),
        _arr(range(1, p["K"] + 2)),
        _arr([7]),
    ],
    solve=_rotate,
    cores=(
        "k = $K % n\nans = $_slice",
        "from collections import deque\nd = deque(a)\nd.rotate($_sign$K)\nans = list(d)",
        "ans = [a[$_idx] for i in range(n)]",
    ),
    bugs=("ans = $_nomod", "k = $K % n\nans = $_other"),
)


def _query_params(rng, lv):
    op = pick(rng, ("sum", "xor"))
    if op == "sum":
        return {"op": op, "_op": "+", "_inv": "-", "_acc": "accumulate(a, initial=0)",
                "_naive": "ans = [sum(a[l - 1:r]) for l, r in qs]"}  # fmt: skip
    return {
        "op": op,
        "_op": "^",
        "_inv": "^",
        "_acc": "accumulate(a, lambda x, y: x ^ y, initial=0)",
        "_naive": "from functools import reduce\n"
        "ans = [reduce(lambda x, y: x ^ y, a[l - 1:r], 0) for l, r in qs]",
    }


def _query_case(rng, p, lv):
    n, q = randint(rng, 1, lv.n), randint(rng, 1, lv.n)
    a = rand_list(rng, n, -lv.v if p["op"] == "sum" else 0, lv.v)
    qs = []
    for _ in range(q):
        x, y = randint(rng, 1, n), randint(rng, 1, n)
        qs.append((min(x, y), max(x, y)))
    return {"n": n, "q": q, "a": a, "qs": qs}


def _query_solve(p, c):
    a = c["a"]
    if p["op"] == "sum":
        return [sum(a[lo - 1 : hi]) for lo, hi in c["qs"]]
    return [reduce(lambda x, y: x ^ y, a[lo - 1 : hi], 0) for lo, hi in c["qs"]]


range_queries = Family(
    name="range_queries",
    topic="prefix sums",
    tags=("data structures", "implementation"),
    fields=(("ints", "n q"), ("arr", "a", "n"), ("pairs", "qs", "q")),
    output="lines",
    draw_params=_query_params,
    title=lambda p: f"Range {p['op'].capitalize()} Queries",
    legend=lambda p, rng: pick(
        rng,
        (
            f"You are given an array a of n integers and q queries. Each query is a pair l, r "
            f"and asks for the {'sum' if p['op'] == 'sum' else 'bitwise XOR'} of "
            f"a_l, a_(l+1), ..., a_r.",
            f"{pick(rng, HEROES)} answers questions about an array: for a segment [l, r] "
            f"(1-based, inclusive) report the {'sum' if p['op'] == 'sum' else 'XOR'} of its "
            f"elements.",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The first line contains n and q (1 ≤ n, q ≤ {lv.n}). The second "
        f"line contains n integers a_i ({-lv.v if p['op'] == 'sum' else 0} ≤ a_i ≤ {lv.v}). Each of "
        f"the next q lines contains two integers l and r (1 ≤ l ≤ r ≤ n)."
    ),
    output_spec=lambda p: "Print q lines, the answers to the queries in order.",
    draw_case=_query_case,
    edge_cases=lambda p, lv: [
        {"n": 3, "q": 3, "a": [3, 5, 7], "qs": [(1, 1), (3, 3), (1, 3)]},
        {"n": 1, "q": 1, "a": [4], "qs": [(1, 1)]},
    ],
    solve=_query_solve,
    cores=(
        "pre = [0]\nfor x in a:\n    pre.append(pre[-1] $_op x)\nans = [pre[r] $_inv pre[l - 1] for l, r in qs]",
        "from itertools import accumulate\npre = list($_acc)\nans = []\nfor l, r in qs:\n"
        "    ans.append(pre[r] $_inv pre[l - 1])",
        "$_naive",
    ),
    bugs=(
        "pre = [0]\nfor x in a:\n    pre.append(pre[-1] $_op x)\nans = [pre[r] $_inv pre[l] for l, r in qs]",
        "pre = [0]\nfor x in a:\n    pre.append(pre[-1] $_op x)\nans = [pre[r - 1] $_inv pre[l - 1] for l, r in qs]",
    ),
)


def _pairs_solve(p, c):
    a = c["a"]
    return sum(1 for i in range(len(a)) for j in range(i + 1, len(a)) if a[i] + a[j] == p["S"])


pair_sum_count = Family(
    name="pair_sum_count",
    topic="two pointers",
    tags=("brute force", "data structures"),
    fields=_ARR_FIELDS,
    output="int",
    draw_params=lambda rng, lv: {"S": randint(rng, 1, lv.v)},
    title=lambda p: f"Pairs Summing to {p['S']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Count the pairs of indices i < j such that a_i + a_j = {p['S']}.",
            f"{pick(rng, HEROES)} picks two different cards from a row; in how many ways can the "
            f"numbers on them add up to exactly {p['S']}? Pairs are unordered and cards with "
            f"equal numbers are still different cards.",
        ),
    ),
    input_spec=lambda p, lv: _array_input(lv, lo=0),
    output_spec=lambda p: "Print one integer — the number of pairs.",
    draw_case=lambda rng, p, lv: _random_array(rng, lv, 0, p["S"]),
    edge_cases=lambda p, lv: [_arr([0, p["S"], p["S"]]), _arr([p["S"]])],
    solve=_pairs_solve,
    cores=(
        "ans = 0\nfor i in range(n):\n    for j in range(i + 1, n):\n        if a[i] + a[j] == $S:\n"
        "            ans += 1",
        "from collections import Counter\nseen = Counter()\nans = 0\nfor x in a:\n    ans += seen[$S - x]\n"
        "    seen[x] += 1",
        "from itertools import combinations\nans = sum(1 for x, y in combinations(a, 2) if x + y == $S)",
    ),
    bugs=(
        "ans = sum(1 for i in range(n) for j in range(n) if i != j and a[i] + a[j] == $S)",
        "s = set(a)\nans = sum(1 for x in s if $S - x in s and x < $S - x)",
    ),
)


def _kth_solve(p, c):
    d = sorted(set(c["a"]), reverse=True)
    return d[p["K"] - 1] if len(d) >= p["K"] else -1


kth_largest = Family(
    name="kth_largest_distinct",
    topic="sorting",
    tags=("sortings",),
    fields=_ARR_FIELDS,
    output="int",
    draw_params=lambda rng, lv: {"K": randint(rng, 2, 4)},
    title=lambda p: f"Distinct Place {p['K']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Among the distinct values of the array, find the {p['K']}-th largest. If there "
            f"are fewer than {p['K']} distinct values, print -1.",
            f"{pick(rng, HEROES)} ranks the different scores of a contest from the highest. "
            f"Which score takes place {p['K']}? Equal scores share a place; print -1 if "
            f"place {p['K']} does not exist.",
        ),
    ),
    input_spec=lambda p, lv: _array_input(lv, lo=1),
    output_spec=lambda p: "Print one integer — the answer.",
    draw_case=lambda rng, p, lv: _random_array(rng, lv, 1, min(lv.v, 12)),
    edge_cases=lambda p, lv: [_arr([10] * p["K"] + list(range(1, p["K"] + 1))), _arr([4, 4, 4])],
    solve=_kth_solve,
    cores=(
        "d = sorted(set(a), reverse=True)\nans = d[$K - 1] if len(d) >= $K else -1",
        "import heapq\nd = heapq.nlargest($K, set(a))\nans = d[-1] if len(d) == $K else -1",
        "s = set(a)\nans = -1\nfor _ in range($K - 1):\n    if s:\n        s.remove(max(s))\nif s:\n"
        "    ans = max(s)",
    ),
    bugs=(
        "b = sorted(a, reverse=True)\nans = b[$K - 1] if n >= $K else -1",
        "d = sorted(set(a), reverse=True)\nans = d[$K - 1]",
    ),
)

_RUNS = {
    "increasing": ("<", "<=", [3, 1, 2, 3, 4]),
    "non-decreasing": ("<=", "<", [3, 1, 1, 2, 2]),
    "decreasing": (">", ">=", [1, 4, 3, 2, 1]),
}


def _run_solve(p, c):
    a, op = c["a"], _RUNS[p["mode"]][0]
    ok = {"<": lambda x, y: x < y, "<=": lambda x, y: x <= y, ">": lambda x, y: x > y}[op]
    best = cur = 1
    for i in range(1, len(a)):
        cur = cur + 1 if ok(a[i - 1], a[i]) else 1
        best = max(best, cur)
    return best


def _run_params(rng, lv):
    mode = pick(rng, tuple(_RUNS))
    return {"mode": mode, "_op": _RUNS[mode][0], "_bad": _RUNS[mode][1]}


longest_run = Family(
    name="longest_run",
    topic="lists",
    tags=("dp", "implementation"),
    fields=_ARR_FIELDS,
    output="int",
    draw_params=_run_params,
    title=lambda p: f"Longest {p['mode'].capitalize()} Segment",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Find the length of the longest contiguous segment of the array whose elements "
            f"are {'strictly increasing' if p['mode'] == 'increasing' else p['mode'] if p['mode'] == 'non-decreasing' else 'strictly decreasing'} "
            f"from left to right.",
            f"{pick(rng, HEROES)} watches daily temperatures and wants the longest streak of "
            f"consecutive days where every day is {'warmer than' if p['mode'] == 'increasing' else 'at least as warm as' if p['mode'] == 'non-decreasing' else 'colder than'} "
            f"the day before. A single day is a streak of length 1.",
        ),
    ),
    input_spec=lambda p, lv: _array_input(lv, lo=1, hi=min(lv.v, 50)),
    output_spec=lambda p: "Print one integer — the maximum length.",
    draw_case=lambda rng, p, lv: _random_array(rng, lv, 1, min(lv.v, 50)),
    edge_cases=lambda p, lv: [_arr(_RUNS[p["mode"]][2]), _arr([1, 1, 1]), _arr([2])],
    solve=_run_solve,
    cores=(
        "ans = cur = 1\nfor i in range(1, n):\n    cur = cur + 1 if a[i - 1] $_op a[i] else 1\n"
        "    ans = max(ans, cur)",
        "ans, start = 1, 0\nfor i in range(1, n):\n    if not a[i - 1] $_op a[i]:\n        start = i\n"
        "    ans = max(ans, i - start + 1)",
        "runs = [1]\nfor i in range(1, n):\n    runs.append(runs[-1] + 1 if a[i - 1] $_op a[i] else 1)\n"
        "ans = max(runs)",
    ),
    bugs=(
        "ans, cur = 1, 1\nfor i in range(1, n):\n    if a[i - 1] $_op a[i]:\n        cur += 1\n    else:\n"
        "        ans = max(ans, cur)\n        cur = 1",
        "ans = cur = 1\nfor i in range(1, n):\n    cur = cur + 1 if a[i - 1] $_bad a[i] else 1\n"
        "    ans = max(ans, cur)",
    ),
)


def _parity_params(rng, lv):
    evens = rng.random() < 0.5
    return {
        "first": "even" if evens else "odd",
        "_key": "x % 2" if evens else "1 - x % 2",
        "_a": "x % 2 == 0" if evens else "x % 2 == 1",
        "_badkey": "1 - x % 2" if evens else "x % 2",
    }


def _parity_solve(p, c):
    first = [x for x in c["a"] if (x % 2 == 0) == (p["first"] == "even")]
    return first + [x for x in c["a"] if (x % 2 == 0) != (p["first"] == "even")]


parity_partition = Family(
    name="parity_partition",
    topic="parity",
    tags=("implementation", "sortings"),
    fields=_ARR_FIELDS,
    output="seq",
    draw_params=_parity_params,
    title=lambda p: f"{p['first'].capitalize()} Numbers First",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Reorder the array so that all {p['first']} numbers come first, keeping their "
            f"relative order, followed by the remaining numbers, also in their original order.",
            f"{pick(rng, HEROES)} lines up the students: those with an {p['first']} number step "
            f"forward first (in the order they stood), then everyone else in the order they "
            f"stood. Print the new line.",
        ),
    ),
    input_spec=lambda p, lv: _array_input(lv, lo=0 if lv.difficulty == DIFFICULTY_A else None),
    output_spec=lambda p: "Print the reordered array, its elements separated by spaces.",
    draw_case=lambda rng, p, lv: _random_array(
        rng, lv, 0 if lv.difficulty == DIFFICULTY_A else None
    ),
    edge_cases=lambda p, lv: [_arr([4, 2, 3, 1]), _arr([1, 2]), _arr([5, 3, 6, 8])],
    solve=_parity_solve,
    cores=(
        "ans = [x for x in a if $_a] + [x for x in a if not ($_a)]",
        "ans = sorted(a, key=lambda x: $_key)",
        "first, rest = [], []\nfor x in a:\n    if $_a:\n        first.append(x)\n    else:\n"
        "        rest.append(x)\nans = first + rest",
    ),
    bugs=("ans = sorted(a, key=lambda x: ($_key, x))", "ans = sorted(a, key=lambda x: $_badkey)"),
)

FAMILIES = (
    sum_above,
    extreme_position,
    rotate_array,
    range_queries,
    pair_sum_count,
    kth_largest,
    longest_run,
    parity_partition,
)
