"""Matrix and simulation families: rotations, diagonals, a walking robot."""

from __future__ import annotations

from string import Template

from weighted_mtp.data.synthetic.family import HEROES, Family, pick, rand_list, rand_word, randint

_TURN = {
    "clockwise": ("[list(r) for r in zip(*g[::-1])]", "g[n - 1 - i][j]"),
    "counterclockwise": ("[list(r) for r in zip(*g)][::-1]", "g[i][m - 1 - j]"),
    "transpose": ("[list(r) for r in zip(*g)]", "g[i][j]"),
}
# Each operation's bugs: the other two operations.
_TURN_BUGS = {
    "clockwise": ("counterclockwise", "transpose"),
    "counterclockwise": ("clockwise", "transpose"),
    "transpose": ("clockwise", "counterclockwise"),
}


def _turn_params(rng, lv):
    op = pick(rng, tuple(_TURN))
    zipped, cell = _TURN[op]
    bad1, bad2 = (_TURN[b][0] for b in _TURN_BUGS[op])
    return {"op": op, "_zip": zipped, "_cell": cell, "_bad1": bad1, "_bad2": bad2}


def _turn_solve(p, c):
    g = c["g"]
    res = [
        list(r)
        for r in (zip(*g[::-1], strict=True) if p["op"] == "clockwise" else zip(*g, strict=True))
    ]
    if p["op"] == "counterclockwise":
        res = res[::-1]
    return [" ".join(map(str, row)) for row in res]


def _turn_case(rng, p, lv):
    n, m = randint(rng, 1, min(lv.n, 10)), randint(rng, 1, min(lv.n, 10))
    return {"n": n, "m": m, "g": [rand_list(rng, m, 0, min(lv.v, 99)) for _ in range(n)]}


_JOIN = "ans = [' '.join(map(str, row)) for row in res]"

rotate_matrix = Family(
    name="rotate_matrix",
    topic="matrix",
    tags=("implementation", "matrices"),
    fields=(("ints", "n m"), ("matrix", "g", "n m")),
    output="lines",
    draw_params=_turn_params,
    title=lambda p: "Transpose" if p["op"] == "transpose" else f"Turn {p['op'].capitalize()}",
    legend=lambda p, rng: (
        pick(
            rng,
            (
                "Transpose the given n × m table: the element in row i, column j moves to row j, "
                "column i.",
                f"{pick(rng, HEROES)} mirrors a table along its main diagonal. Print the result.",
            ),
        )
        if p["op"] == "transpose"
        else pick(
            rng,
            (
                f"Rotate the given n × m table by 90 degrees {p['op']}.",
                f"{pick(rng, HEROES)} turns a picture, stored as a table of numbers, a quarter "
                f"turn {p['op']}. Print the turned table.",
            ),
        )
    ),
    input_spec=lambda p, lv: (
        f"The first line contains n and m (1 ≤ n, m ≤ {min(lv.n, 10)}). "
        f"Each of the next n lines contains m integers between 0 and {min(lv.v, 99)}."
    ),
    output_spec=lambda p: "Print the resulting table: m lines of n integers separated by spaces.",
    draw_case=_turn_case,
    edge_cases=lambda p, lv: [
        {"n": 2, "m": 3, "g": [[1, 2, 3], [4, 5, 6]]},
        {"n": 1, "m": 1, "g": [[7]]},
    ],
    solve=_turn_solve,
    cores=(
        f"res = $_zip\n{_JOIN}",
        "res = [[$_cell for i in range(n)] for j in range(m)]\n"
        "ans = [' '.join(str(x) for x in row) for row in res]",
        f"res = []\nfor j in range(m):\n    row = []\n    for i in range(n):\n        row.append($_cell)\n"
        f"    res.append(row)\n{_JOIN}",
    ),
    bugs=(f"res = $_bad1\n{_JOIN}", f"res = $_bad2\n{_JOIN}"),
)

_DIAG = {
    "both": (
        "ans = sum(g[i][i] + g[i][n - 1 - i] for i in range(n))\nif n % 2:\n    ans -= g[n // 2][n // 2]",
        "i == j or i + j == n - 1",
        "ans = sum(g[i][i] + g[i][n - 1 - i] for i in range(n))",
        "ans = sum(g[i][i] + g[i][n - 1 - i] for i in range(n - 1))\nif n % 2:\n    ans -= g[n // 2][n // 2]",
    ),
    "main": (
        "ans = sum(g[i][i] for i in range(n))",
        "i == j",
        "ans = sum(g[i][n - 1 - i] for i in range(n))",
        "ans = sum(g[i][i] for i in range(n - 1))",
    ),
    "anti": (
        "ans = sum(g[i][n - 1 - i] for i in range(n))",
        "i + j == n - 1",
        "ans = sum(g[i][i] for i in range(n))",
        "ans = sum(g[i][n - 1 - i] for i in range(n - 1))",
    ),
}
_DIAG_TEXT = {
    "both": "both diagonals (an element on both of them is counted once)",
    "main": "the main diagonal (from the top-left to the bottom-right corner)",
    "anti": "the anti-diagonal (from the top-right to the bottom-left corner)",
}


def _diag_params(rng, lv):
    mode = pick(rng, tuple(_DIAG))
    core, cond, bad1, bad2 = _DIAG[mode]
    return {"mode": mode, "_core": core, "_cond": cond, "_bad1": bad1, "_bad2": bad2}


def _diag_solve(p, c):
    g, n = c["g"], c["n"]
    cells = set()
    if p["mode"] in ("both", "main"):
        cells |= {(i, i) for i in range(n)}
    if p["mode"] in ("both", "anti"):
        cells |= {(i, n - 1 - i) for i in range(n)}
    return sum(g[i][j] for i, j in cells)


def _diag_case(rng, p, lv):
    n = randint(rng, 1, min(lv.n, 10))
    return {"n": n, "g": [rand_list(rng, n, 0, min(lv.v, 99)) for _ in range(n)]}


diagonal_sum = Family(
    name="diagonal_sum",
    topic="matrix",
    tags=("implementation", "matrices"),
    fields=(("int", "n"), ("matrix", "g", "n n")),
    output="int",
    draw_params=_diag_params,
    title=lambda p: f"Diagonal Sum ({p['mode']})",
    legend=lambda p, rng: pick(
        rng,
        (
            f"Given a square n × n matrix, print the sum of the elements on {_DIAG_TEXT[p['mode']]}.",
            f"{pick(rng, HEROES)} adds up the numbers of a square table that lie on "
            f"{_DIAG_TEXT[p['mode']]}. What is the total?",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The first line contains n (1 ≤ n ≤ {min(lv.n, 10)}). Each of the "
        f"next n lines contains n integers between 0 and {min(lv.v, 99)}."
    ),
    output_spec=lambda p: "Print one integer — the sum.",
    draw_case=_diag_case,
    edge_cases=lambda p, lv: [
        {"n": 2, "g": [[1, 2], [3, 5]]},
        {"n": 3, "g": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]},
        {"n": 1, "g": [[7]]},
    ],
    solve=_diag_solve,
    cores=(
        "$_core",
        "ans = 0\nfor i in range(n):\n    for j in range(n):\n        if $_cond:\n            ans += g[i][j]",
        "ans = sum(g[i][j] for i in range(n) for j in range(n) if $_cond)",
    ),
    bugs=("$_bad1", "$_bad2"),
)


def _walk(p, c):
    x = y = 0
    seen = {(0, 0)}
    step = {p["U"]: (0, 1), p["D"]: (0, -1), p["L"]: (-1, 0), p["R"]: (1, 0)}
    for ch in c["s"]:
        dx, dy = step[ch]
        x, y = x + dx, y + dy
        seen.add((x, y))
    return len(seen) if p["mode"] == "visited" else abs(x) + abs(y)


_MOVES = "moves = {'$U': (0, 1), '$D': (0, -1), '$L': (-1, 0), '$R': (1, 0)}\n"
_ROBOT = {
    "distance": (
        "x = y = 0\nfor c in s:\n    if c == '$U':\n        y += 1\n    elif c == '$D':\n        y -= 1\n"
        "    elif c == '$L':\n        x -= 1\n    else:\n        x += 1\nans = abs(x) + abs(y)",
        "x = s.count('$R') - s.count('$L')\ny = s.count('$U') - s.count('$D')\nans = abs(x) + abs(y)",
        _MOVES + "x = y = 0\nfor c in s:\n    dx, dy = moves[c]\n    x += dx\n    y += dy\n"
        "ans = abs(x) + abs(y)",
        "x = s.count('$R') - s.count('$L')\ny = s.count('$U') - s.count('$D')\nans = x + y",
        "x = s.count('$R') - s.count('$L')\ny = s.count('$U') - s.count('$D')\nans = abs(x + y)",
    ),
    "visited": (
        _MOVES + "x = y = 0\nseen = {(0, 0)}\nfor c in s:\n    dx, dy = moves[c]\n    x += dx\n"
        "    y += dy\n    seen.add((x, y))\nans = len(seen)",
        _MOVES + "pos = [(0, 0)]\nfor c in s:\n    dx, dy = moves[c]\n"
        "    pos.append((pos[-1][0] + dx, pos[-1][1] + dy))\nans = len(set(pos))",
        "x = y = 0\nseen = set()\nseen.add((x, y))\nfor c in s:\n    if c == '$U':\n        y += 1\n"
        "    elif c == '$D':\n        y -= 1\n    elif c == '$L':\n        x -= 1\n    else:\n"
        "        x += 1\n    seen.add((x, y))\nans = len(seen)",
        _MOVES + "x = y = 0\nseen = set()\nfor c in s:\n    dx, dy = moves[c]\n    x += dx\n"
        "    y += dy\n    seen.add((x, y))\nans = len(seen)",
        "ans = len(s) + 1",
    ),
}


def _robot_params(rng, lv):
    letters, distinct = pick(rng, ("UDLR", "NSWE")), rng.random() < 0.5
    p = {"letters": letters, "mode": "visited" if distinct else "distance",
         "U": letters[0], "D": letters[1], "L": letters[2], "R": letters[3]}  # fmt: skip
    # The mode's cores are templates over the direction letters: filled in here.
    for name, code in zip(("_c0", "_c1", "_c2", "_b0", "_b1"), _ROBOT[p["mode"]], strict=True):
        p[name] = Template(code).substitute(p)
    return p


def _robot_legend(p, rng):
    dirs = f"'{p['U']}' (up), '{p['D']}' (down), '{p['L']}' (left) and '{p['R']}' (right)"
    ask = (
        "How many different cells does it visit, the starting cell included?"
        if p["mode"] == "visited"
        else "What is the Manhattan distance |x| + |y| between its final cell and the start?"
    )
    return pick(
        rng,
        (
            f"A robot starts at cell (0, 0) of an infinite grid and executes commands {dirs}, "
            f"each moving it by one cell. {ask}",
            f"{pick(rng, HEROES)} programs a toy robot with the letters {dirs}; each letter is one "
            f"step. The robot starts at the origin. {ask}",
        ),
    )


robot_walk = Family(
    name="robot_walk",
    topic="simulation",
    tags=("implementation", "simulation"),
    fields=(("word", "s"),),
    output="int",
    draw_params=_robot_params,
    title=lambda p: "Robot Walk" if p["mode"] == "distance" else "Robot Footprints",
    legend=_robot_legend,
    input_spec=lambda p, lv: (
        f"The only line contains the commands: a string of the letters "
        f"{', '.join(p['letters'])} (1 ≤ |s| ≤ {lv.n})."
    ),
    output_spec=lambda p: "Print one integer — the answer.",
    draw_case=lambda rng, p, lv: {"s": rand_word(rng, randint(rng, 1, lv.n), p["letters"])},
    edge_cases=lambda p, lv: [
        {"s": p["D"] * 2},
        {"s": p["R"] + p["D"]},
        {"s": p["U"]},
        {"s": p["U"] + p["D"]},
    ],
    solve=_walk,
    cores=("$_c0", "$_c1", "$_c2"),
    bugs=("$_b0", "$_b1"),
)


FAMILIES = (rotate_matrix, diagonal_sum, robot_walk)
