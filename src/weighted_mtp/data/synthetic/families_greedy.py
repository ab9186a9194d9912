"""Greedy and sorting families: coins, word ordering, interval scheduling, best k elements."""

from __future__ import annotations

from weighted_mtp.data.synthetic.family import HEROES, Family, pick, rand_list, rand_word, randint
from weighted_mtp.data.synthetic.schema import DIFFICULTY_A, DIFFICULTY_F

_COIN_N = {DIFFICULTY_A: 100_000, 9: 10**9, DIFFICULTY_F: 10**18}


def _coin_params(rng, lv):
    b, m = randint(rng, 2, 9), randint(rng, 3, 6)
    coins = tuple(b**i for i in range(m))
    return {"B": b, "M": m, "COINS": coins, "_desc": coins[::-1]}


def _coins_solve(p, c):
    n, ans = c["n"], 0
    for coin in p["_desc"]:
        ans += n // coin
        n %= coin
    return ans


greedy_coins = Family(
    name="greedy_coins",
    topic="greedy",
    tags=("greedy", "math"),
    fields=(("int", "n"),),
    output="int",
    draw_params=_coin_params,
    title=lambda p: f"Coins of Powers of {p['B']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"The coins of a country are worth {', '.join(map(str, p['COINS']))}. Pay exactly n "
            f"using as few coins as possible and print that number of coins.",
            f"{pick(rng, HEROES)} has unlimited coins of the values "
            f"{', '.join(map(str, p['COINS']))}. What is the minimum number of coins with total "
            f"value exactly n?",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The only line contains an integer n (1 ≤ n ≤ {_COIN_N[lv.difficulty]})."
    ),
    output_spec=lambda p: "Print one integer — the minimum number of coins.",
    draw_case=lambda rng, p, lv: {"n": randint(rng, 1, _COIN_N[lv.difficulty])},
    edge_cases=lambda p, lv: [{"n": p["B"]}, {"n": 1}, {"n": p["COINS"][-1] + 1}],
    solve=_coins_solve,
    cores=(
        "ans = 0\nfor c in $_desc:\n    ans += n // c\n    n %= c",
        "ans = 0\nrest = n\nfor c in reversed($COINS):\n    q, rest = divmod(rest, c)\n    ans += q",
        "ans = 0\nfor c in sorted($COINS, reverse=True):\n    while n >= c:\n        n -= c\n        ans += 1",
    ),
    bugs=(
        "ans = 0\nfor c in $COINS:\n    ans += n // c\n    n %= c",
        "ans = 0\nfor c in $_desc:\n    k = (n - 1) // c\n    ans += k\n    n -= k * c",
    ),
    slow_cores=frozenset({2}),
)


def _words_params(rng, lv):
    len_desc, lex_desc = rng.random() < 0.5, rng.random() < 0.5
    return {
        "len_order": "decreasing" if len_desc else "increasing",
        "lex_order": "reverse" if lex_desc else "alphabetical",
        "_lenrev": len_desc,
        "_lexrev": lex_desc,
        "_lensign": "-" if len_desc else "",
        "_lexsign": "-" if lex_desc else "",
    }


def _words_solve(p, c):
    words = sorted(c["g"], reverse=p["_lexrev"])
    return sorted(words, key=len, reverse=p["_lenrev"])


def _words_case(rng, p, lv):
    n = randint(rng, 1, lv.n)
    return {"n": n, "g": [rand_word(rng, randint(rng, 1, 4), "abc") for _ in range(n)]}


sort_words = Family(
    name="sort_words",
    topic="sorting",
    tags=("sortings", "strings"),
    fields=(("int", "n"), ("grid", "g", "n")),
    output="seq",
    draw_params=_words_params,
    title=lambda p: "Sorting Words",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Sort the words by length in {p['len_order']} order; words of equal length go in "
            f"{p['lex_order']} (lexicographic) order.",
            f"{pick(rng, HEROES)} arranges a dictionary: shorter words first if the order is "
            f"increasing, longer first if decreasing — here it is {p['len_order']} — and equal "
            f"lengths are ordered {'alphabetically' if p['lex_order'] == 'alphabetical' else 'in reverse alphabetical order'}.",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The first line contains n (1 ≤ n ≤ {lv.n}). Each of the next n "
        f"lines contains a word of 1 to 4 lowercase Latin letters."
    ),
    output_spec=lambda p: "Print the sorted words on one line, separated by spaces.",
    draw_case=_words_case,
    edge_cases=lambda p, lv: [
        {"n": 2, "g": ["b", "a"]},
        {"n": 2, "g": ["a", "b"]},
        {"n": 2, "g": ["aa", "b"]},
        {"n": 2, "g": ["a", "bb"]},
    ],
    solve=_words_solve,
    cores=(
        "g.sort(reverse=$_lexrev)\ng.sort(key=len, reverse=$_lenrev)\nans = g",
        "ans = sorted(sorted(g, reverse=$_lexrev), key=len, reverse=$_lenrev)",
        "from functools import cmp_to_key\n\n\ndef cmp(x, y):\n    if len(x) != len(y):\n"
        "        return $_lensign(len(x) - len(y))\n    return $_lexsign((x > y) - (x < y))\n\n\n"
        "ans = sorted(g, key=cmp_to_key(cmp))",
    ),
    bugs=(
        "ans = sorted(g, key=len, reverse=$_lenrev)",
        "ans = sorted(g, reverse=$_lexrev)",
    ),
)


def _intervals_params(rng, lv):
    touch = rng.random() < 0.5
    return {"touch": touch, "_cmp": ">=" if touch else ">", "_bad": ">" if touch else ">="}


def _intervals_solve(p, c):
    ans, last = 0, None
    for lo, hi in sorted(c["segs"], key=lambda s: s[1]):
        if last is None or (lo >= last if p["touch"] else lo > last):
            ans, last = ans + 1, hi
    return ans


def _intervals_case(rng, p, lv):
    n = randint(rng, 1, lv.n)
    segs = []
    for _ in range(n):
        lo = randint(rng, 1, lv.v - 1)
        segs.append((lo, randint(rng, lo + 1, min(lv.v, lo + max(2, lv.v // 3)))))
    return {"n": n, "segs": segs}


interval_scheduling = Family(
    name="interval_scheduling",
    topic="greedy",
    tags=("greedy", "sortings"),
    fields=(("int", "n"), ("pairs", "segs", "n")),
    output="int",
    draw_params=_intervals_params,
    title=lambda p: "Meeting Room" + (" (Back to Back)" if p["touch"] else ""),
    legend=lambda p, rng: pick(
        rng,
        (
            "There are n meetings; meeting i lasts from time l_i to time r_i. Choose as many "
            "meetings as possible so that no two chosen meetings overlap. "
            + (
                "A meeting may start exactly when another one ends."
                if p["touch"]
                else "Two meetings sharing an endpoint overlap."
            ),
            f"{pick(rng, HEROES)} wants to attend the largest number of talks [l_i, r_i] "
            f"without being at two talks at once. "
            + (
                "Leaving one talk at time t and entering another that starts at t is fine."
                if p["touch"]
                else "Talks that touch at an endpoint cannot both be attended."
            ),
        ),
    ),
    input_spec=lambda p, lv: (
        f"The first line contains n (1 ≤ n ≤ {lv.n}). Each of the next n "
        f"lines contains two integers l_i and r_i (1 ≤ l_i < r_i ≤ {lv.v})."
    ),
    output_spec=lambda p: "Print one integer — the maximum number of meetings.",
    draw_case=_intervals_case,
    edge_cases=lambda p, lv: [
        {"n": 3, "segs": [(1, 10), (2, 3), (4, 5)]},
        {"n": 2, "segs": [(1, 2), (2, 3)]},
    ],
    solve=_intervals_solve,
    cores=(
        "ans = 0\nlast = -1\nfor l, r in sorted(segs, key=lambda s: s[1]):\n    if l $_cmp last:\n"
        "        ans += 1\n        last = r",
        "segs.sort(key=lambda s: (s[1], s[0]))\nans, last = 0, None\nfor l, r in segs:\n"
        "    if last is None or l $_cmp last:\n        ans, last = ans + 1, r",
        "order = sorted(range(n), key=lambda i: segs[i][1])\nans, last = 0, -1\nfor i in order:\n"
        "    if segs[i][0] $_cmp last:\n        ans += 1\n        last = segs[i][1]",
    ),
    bugs=(
        "ans = 0\nlast = -1\nfor l, r in sorted(segs):\n    if l $_cmp last:\n        ans += 1\n"
        "        last = r",
        "ans = 0\nlast = -1\nfor l, r in sorted(segs, key=lambda s: s[1]):\n    if l $_bad last:\n"
        "        ans += 1\n        last = r",
    ),
)


def _best_params(rng, lv):
    at_most = rng.random() < 0.5
    return {
        "mode": "at most" if at_most else "exactly",
        "_filter": " if x > 0" if at_most else "",
        "_add": "ans += max(x, 0)" if at_most else "ans += x",
        "_other": "" if at_most else " if x > 0",
    }


def _best_solve(p, c):
    top = sorted(c["a"], reverse=True)[: c["k"]]
    return sum(x for x in top if x > 0) if p["mode"] == "at most" else sum(top)


def _best_case(rng, p, lv):
    n = randint(rng, 1, lv.n)
    return {"n": n, "k": randint(rng, 1, n), "a": rand_list(rng, n, -lv.v, lv.v)}


best_k_sum = Family(
    name="best_k_sum",
    topic="greedy",
    tags=("greedy", "sortings"),
    fields=(("ints", "n k"), ("arr", "a", "n")),
    output="int",
    draw_params=_best_params,
    title=lambda p: f"Choose {'At Most' if p['mode'] == 'at most' else 'Exactly'} K",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Choose {p['mode']} k elements of the array (each element at most once) so that "
            f"their sum is as large as possible. Print that sum"
            + (" (choosing nothing gives 0)." if p["mode"] == "at most" else "."),
            f"{pick(rng, HEROES)} may take {p['mode']} k of the n items with values a_i (values "
            f"can be negative). What is the largest possible total value?"
            + (" Taking no item is allowed." if p["mode"] == "at most" else ""),
        ),
    ),
    input_spec=lambda p, lv: (
        f"The first line contains n and k (1 ≤ k ≤ n ≤ {lv.n}). The second "
        f"line contains n integers a_i (-{lv.v} ≤ a_i ≤ {lv.v})."
    ),
    output_spec=lambda p: "Print one integer — the maximum sum.",
    draw_case=_best_case,
    edge_cases=lambda p, lv: [
        {"n": 2, "k": 2, "a": [-5, 3]},
        {"n": 3, "k": 1, "a": [1, 2, 3]},
    ],
    solve=_best_solve,
    cores=(
        "b = sorted(a, reverse=True)\nans = sum(x for x in b[:k]$_filter)",
        "import heapq\nans = sum(x for x in heapq.nlargest(k, a)$_filter)",
        "b = sorted(a)\nans = 0\nfor _ in range(k):\n    x = b.pop()\n    $_add",
    ),
    bugs=(
        "b = sorted(a, reverse=True)\nans = sum(x for x in b[:k]$_other)",
        "b = sorted(a)\nans = sum(x for x in b[:k]$_filter)",
    ),
)

FAMILIES = (greedy_coins, sort_words, interval_scheduling, best_k_sum)
