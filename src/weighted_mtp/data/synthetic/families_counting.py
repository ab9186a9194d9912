"""Counting families: inversions, modes, divisors, subarrays with a sum, constrained strings."""

from __future__ import annotations

from collections import Counter

from weighted_mtp.data.synthetic.family import HEROES, Family, pick, rand_list, randint
from weighted_mtp.data.synthetic.schema import DIFFICULTY_A, DIFFICULTY_F

_ARR_FIELDS = (("int", "n"), ("arr", "a", "n"))


def _arr(values):
    return {"n": len(values), "a": list(values)}


def _array_case(rng, lv, lo, hi):
    n = randint(rng, 1, lv.n)
    return {"n": n, "a": rand_list(rng, n, lo, hi)}


def _inversion_params(rng, lv):
    strict = rng.random() < 0.5
    return {"strict": strict, "_op": ">" if strict else ">=", "_bad": ">=" if strict else ">",
            "_bis": "bisect_right" if strict else "bisect_left"}  # fmt: skip


def _inversions(p, c):
    a = c["a"]
    pairs = ((a[i], a[j]) for i in range(len(a)) for j in range(i + 1, len(a)))
    return sum(1 for x, y in pairs if (x > y if p["strict"] else x >= y))


inversions = Family(
    name="inversions",
    topic="counting",
    tags=("brute force", "data structures"),
    fields=_ARR_FIELDS,
    output="int",
    draw_params=_inversion_params,
    title=lambda p: "Inversions" if p["strict"] else "Weak Inversions",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Count the pairs of indices i < j with a_i {p['_op']} a_j.",
            f"{pick(rng, HEROES)} measures how unsorted a sequence is: the number of pairs of "
            f"positions i < j such that a_i {'>' if p['strict'] else '≥'} a_j.",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The first line contains n (1 ≤ n ≤ {lv.n}). The second line "
        f"contains n integers a_i (1 ≤ a_i ≤ {min(lv.v, 30)})."
    ),
    output_spec=lambda p: "Print one integer — the number of pairs.",
    draw_case=lambda rng, p, lv: _array_case(rng, lv, 1, min(lv.v, 30)),
    edge_cases=lambda p, lv: [_arr([2, 2]), _arr([3, 1, 2]), _arr([5])],
    solve=_inversions,
    cores=(
        "ans = 0\nfor i in range(n):\n    for j in range(i + 1, n):\n        if a[i] $_op a[j]:\n"
        "            ans += 1",
        "ans = sum(1 for i in range(n) for j in range(i + 1, n) if a[i] $_op a[j])",
        "import bisect\nseen = []\nans = 0\nfor x in a:\n    ans += len(seen) - bisect.$_bis(seen, x)\n"
        "    bisect.insort(seen, x)",
    ),
    bugs=(
        "ans = sum(1 for i in range(n) for j in range(i + 1, n) if a[i] $_bad a[j])",
        "ans = sum(1 for i in range(n - 1) if a[i] $_op a[i + 1])",
    ),
)


def _mode_params(rng, lv):
    small = rng.random() < 0.5
    return {"tie": "smallest" if small else "largest", "_ext": "min" if small else "max",
            "_bad": "max" if small else "min", "_sign": "" if small else "-"}  # fmt: skip


def _mode_solve(p, c):
    cnt = Counter(c["a"])
    best = max(cnt.values())
    values = [x for x in cnt if cnt[x] == best]
    return min(values) if p["tie"] == "smallest" else max(values)


most_frequent = Family(
    name="most_frequent",
    topic="counting",
    tags=("implementation", "data structures"),
    fields=_ARR_FIELDS,
    output="int",
    draw_params=_mode_params,
    title=lambda p: "The Most Frequent Value",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Find the value that occurs most often in the array. If several values occur "
            f"equally often, print the {p['tie']} of them.",
            f"{pick(rng, HEROES)} counts votes: each number is a candidate. Who wins? Ties are "
            f"resolved in favour of the {p['tie']} candidate number.",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The first line contains n (1 ≤ n ≤ {lv.n}). The second line "
        f"contains n integers a_i (1 ≤ a_i ≤ {min(lv.v, 9)})."
    ),
    output_spec=lambda p: "Print one integer — the answer.",
    draw_case=lambda rng, p, lv: _array_case(rng, lv, 1, min(lv.v, 9)),
    edge_cases=lambda p, lv: [_arr([3, 1, 1, 3]), _arr([1, 3, 3, 1]), _arr([2])],
    solve=_mode_solve,
    cores=(
        "from collections import Counter\ncnt = Counter(a)\nbest = max(cnt.values())\n"
        "ans = $_ext(x for x in cnt if cnt[x] == best)",
        "cnt = {}\nfor x in a:\n    cnt[x] = cnt.get(x, 0) + 1\nans = None\nfor x in sorted(cnt):\n"
        "    if ans is None or cnt[x] > cnt[ans] or (cnt[x] == cnt[ans] and $_ext(x, ans) == x):\n"
        "        ans = x",
        "from collections import Counter\ncnt = Counter(a)\nans = min(cnt, key=lambda x: (-cnt[x], ${_sign}x))",
    ),
    bugs=(
        "from collections import Counter\nans = Counter(a).most_common(1)[0][0]",
        "from collections import Counter\ncnt = Counter(a)\nbest = max(cnt.values())\n"
        "ans = $_bad(x for x in cnt if cnt[x] == best)",
    ),
)

_DIV_N = {DIFFICULTY_A: 1000, 9: 10**6, DIFFICULTY_F: 10**9}


def _divisor_params(rng, lv):
    count = rng.random() < 0.5
    return {"mode": "count" if count else "sum", "_a": "1" if count else "i",
            "_b": "1" if count else "n // i", "_agg": "len" if count else "sum"}  # fmt: skip


_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 97, 101, 997, 7919, 104729)


def _factor_case(rng, p, lv):
    # n is built from its factorisation, which the case carries (not rendered) so that the
    # reference answer costs no trial division: the generator must not spend sqrt(n) per case.
    bound, n, factors = _DIV_N[lv.difficulty], 1, {}
    for _ in range(randint(rng, 1, 8)):
        q = pick(rng, _PRIMES)
        if n * q > bound:
            break
        n *= q
        factors[q] = factors.get(q, 0) + 1
    return {"n": n, "_factors": factors}


def _divisors(p, c):
    factors = c.get("_factors")
    if factors is None:  # edge cases: small numbers
        n, factors, q = c["n"], {}, 2
        while q * q <= n:
            while n % q == 0:
                factors[q] = factors.get(q, 0) + 1
                n //= q
            q += 1
        if n > 1:
            factors[n] = factors.get(n, 0) + 1
    count = total = 1
    for q, e in factors.items():
        count *= e + 1
        total *= (q ** (e + 1) - 1) // (q - 1)
    return count if p["mode"] == "count" else total


divisors = Family(
    name="divisors",
    topic="counting",
    tags=("math", "number theory"),
    fields=(("int", "n"),),
    output="int",
    draw_params=_divisor_params,
    title=lambda p: "Number of Divisors" if p["mode"] == "count" else "Sum of Divisors",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Find the {'number' if p['mode'] == 'count' else 'sum'} of the positive divisors "
            f"of n (including 1 and n itself).",
            f"{pick(rng, HEROES)} lists every positive integer d that divides n evenly. What "
            f"is the {'length of the list' if p['mode'] == 'count' else 'sum of the listed numbers'}?",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The only line contains an integer n (1 ≤ n ≤ {_DIV_N[lv.difficulty]})."
    ),
    output_spec=lambda p: "Print one integer — the answer.",
    draw_case=_factor_case,
    edge_cases=lambda p, lv: [{"n": 36}, {"n": 4}, {"n": 1}, {"n": 97}],
    solve=_divisors,
    cores=(
        "ans = 0\ni = 1\nwhile i * i <= n:\n    if n % i == 0:\n        ans += $_a\n        if i != n // i:\n"
        "            ans += $_b\n    i += 1",
        "import math\nds = set()\nfor i in range(1, math.isqrt(n) + 1):\n    if n % i == 0:\n"
        "        ds.add(i)\n        ds.add(n // i)\nans = $_agg(ds)",
        "ans = $_agg([d for d in range(1, n + 1) if n % d == 0])",
    ),
    bugs=(
        "ans = 0\ni = 1\nwhile i * i <= n:\n    if n % i == 0:\n        ans += $_a\n        ans += $_b\n"
        "    i += 1",
        "import math\nds = set()\nfor i in range(1, math.isqrt(n)):\n    if n % i == 0:\n"
        "        ds.add(i)\n        ds.add(n // i)\nans = $_agg(ds)",
    ),
    slow_cores=frozenset({2}),
)


def _subarrays(p, c):
    a, s = c["a"], p["S"]
    return sum(1 for i in range(len(a)) for j in range(i + 1, len(a) + 1) if sum(a[i:j]) == s)


subarray_sum = Family(
    name="subarray_sum",
    topic="prefix sums",
    tags=("data structures", "two pointers"),
    fields=_ARR_FIELDS,
    output="int",
    draw_params=lambda rng, lv: {"S": randint(rng, 0, 10)},
    title=lambda p: f"Segments with Sum {p['S']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Count the non-empty contiguous subarrays whose elements add up to exactly {p['S']}.",
            f"{pick(rng, HEROES)} cuts a contiguous non-empty piece out of the array. In how "
            f"many ways can the numbers on the piece sum to {p['S']}?",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The first line contains n (1 ≤ n ≤ {lv.n}). The second line "
        f"contains n integers a_i (-10 ≤ a_i ≤ 10)."
    ),
    output_spec=lambda p: "Print one integer — the number of subarrays.",
    draw_case=lambda rng, p, lv: _array_case(
        rng, lv, -10 if lv.difficulty != DIFFICULTY_A else 0, 10
    ),
    edge_cases=lambda p, lv: [_arr([p["S"]]), _arr([p["S"], 0, 1])],
    solve=_subarrays,
    cores=(
        "from collections import defaultdict\nseen = defaultdict(int)\nseen[0] = 1\ncur = ans = 0\n"
        "for x in a:\n    cur += x\n    ans += seen[cur - $S]\n    seen[cur] += 1",
        "ans = 0\nfor i in range(n):\n    s = 0\n    for j in range(i, n):\n        s += a[j]\n"
        "        if s == $S:\n            ans += 1",
        "ans = sum(1 for i in range(n) for j in range(i + 1, n + 1) if sum(a[i:j]) == $S)",
    ),
    bugs=(
        "from collections import defaultdict\nseen = defaultdict(int)\ncur = ans = 0\nfor x in a:\n"
        "    cur += x\n    ans += seen[cur - $S]\n    seen[cur] += 1",
        "ans = 0\nfor i in range(n):\n    s = a[i]\n    for j in range(i + 1, n):\n        s += a[j]\n"
        "        if s == $S:\n            ans += 1",
    ),
)

_MOD = 10**9 + 7
_STR_N = {DIFFICULTY_A: 60, 9: 200, DIFFICULTY_F: 1000}


def _no_run(p, c):
    # f(m) = 2^m for m < K, else f(m-1) + ... + f(m-K): a sliding window sum.
    k, f, window = p["K"], [], 0
    for m in range(c["n"] + 1):
        value = 2**m if m < k else window % _MOD
        f.append(value)
        window += value - (f[m - k] if m >= k else 0)
    return f[c["n"]] % _MOD


no_k_ones = Family(
    name="no_k_ones",
    topic="counting",
    tags=("dp", "combinatorics"),
    fields=(("int", "n"),),
    output="int",
    draw_params=lambda rng, lv: {"K": randint(rng, 2, 5)},
    title=lambda p: f"No {p['K']} Ones in a Row",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Count the binary strings of length n that do not contain {p['K']} consecutive "
            f"ones. Print the count modulo 10^9 + 7.",
            f"{pick(rng, HEROES)} paints n fences in a row, each black or white, but never "
            f"{p['K']} black fences next to each other. How many colourings are there? The "
            f"answer can be large: print it modulo 1000000007.",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The only line contains an integer n (1 ≤ n ≤ {_STR_N[lv.difficulty]})."
    ),
    output_spec=lambda p: "Print one integer — the count modulo 10^9 + 7.",
    draw_case=lambda rng, p, lv: {"n": randint(rng, 1, _STR_N[lv.difficulty])},
    edge_cases=lambda p, lv: [{"n": 60}, {"n": p["K"]}, {"n": 1}],
    solve=_no_run,
    cores=(
        "MOD = 10**9 + 7\ndp = [1] + [0] * ($K - 1)\nfor _ in range(n):\n    dp = [sum(dp) % MOD] + dp[:-1]\n"
        "ans = sum(dp) % MOD",
        "MOD = 10**9 + 7\nf = []\nfor m in range(n + 1):\n    f.append(2 ** m if m < $K else sum(f[m - $K:m]) % MOD)\n"
        "ans = f[n] % MOD",
        "MOD = 10**9 + 7\ndp = [0] * $K\ndp[0] = 1\nfor _ in range(n):\n    total = sum(dp) % MOD\n"
        "    for j in range($K - 1, 0, -1):\n        dp[j] = dp[j - 1]\n    dp[0] = total\nans = sum(dp) % MOD",
    ),
    bugs=(
        "dp = [1] + [0] * ($K - 1)\nfor _ in range(n):\n    dp = [sum(dp)] + dp[:-1]\nans = sum(dp)",
        "MOD = 10**9 + 7\nf = []\nfor m in range(n + 1):\n"
        "    f.append(2 ** m if m <= $K else sum(f[m - $K - 1:m]) % MOD)\nans = f[n] % MOD",
    ),
)

FAMILIES = (inversions, most_frequent, divisors, subarray_sum, no_k_ones)
