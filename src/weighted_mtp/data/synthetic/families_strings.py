"""String families: letter counts, shifts, palindromes, run-length codes, words, brackets."""

from __future__ import annotations

from itertools import groupby

from weighted_mtp.data.synthetic.family import (
    HEROES,
    LETTERS,
    Family,
    other_letters,
    pick,
    rand_word,
    randint,
)

_S = "a string s of lowercase Latin letters"

count_letter = Family(
    name="count_letter",
    topic="strings",
    tags=("strings", "implementation"),
    fields=(("word", "s"),),
    output="int",
    draw_params=lambda rng, lv: {"C": pick(rng, LETTERS)},
    title=lambda p: f"Letter {p['C'].upper()}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"{pick(rng, HEROES)} loves the letter '{p['C']}'. Given a string, count how many "
            f"times this letter occurs in it.",
            f"You are given {_S}. Find the number of positions i such that s_i = '{p['C']}'.",
        ),
    ),
    input_spec=lambda p, lv: f"The only line contains {_S} (1 ≤ |s| ≤ {lv.n}).",
    output_spec=lambda p: f"Print one integer — the number of letters '{p['C']}' in s.",
    draw_case=lambda rng, p, lv: {
        "s": rand_word(rng, randint(rng, 1, lv.n), p["C"] + other_letters(p["C"], 3))
    },
    edge_cases=lambda p, lv: [
        {"s": p["C"] * 3},
        {"s": p["C"] + other_letters(p["C"], 2)},
        {"s": other_letters(p["C"], 1) * 2},
    ],
    solve=lambda p, c: c["s"].count(p["C"]),
    cores=(
        "ans = s.count('$C')",
        "ans = sum(1 for ch in s if ch == '$C')",
        "ans = 0\nfor ch in s:\n    if ch == '$C':\n        ans += 1",
        "ans = len([ch for ch in s if ch == '$C'])",
    ),
    bugs=(
        "ans = s[1:].count('$C')",
        "ans = 1 if '$C' in s else 0",
    ),
)


def _caesar(s: str, k: int) -> str:
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in s)


caesar_shift = Family(
    name="caesar_shift",
    topic="strings",
    tags=("strings", "implementation"),
    fields=(("word", "s"),),
    output="str",
    # A shift of 13 is its own inverse, which would hide a wrong-direction bug.
    draw_params=lambda rng, lv: {"K": pick(rng, [k for k in range(1, 26) if k != 13])},
    title=lambda p: f"Shift by {p['K']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"{pick(rng, HEROES)} encrypts messages by replacing every letter with the letter "
            f"{p['K']} positions later in the alphabet; after 'z' the alphabet starts again "
            f"from 'a'. Encrypt the given message.",
            f"Apply a Caesar cipher with shift {p['K']} to the string: each letter c becomes the "
            f"letter that stands {p['K']} places after c in the cyclic alphabet a..z.",
        ),
    ),
    input_spec=lambda p, lv: f"The only line contains {_S} (1 ≤ |s| ≤ {lv.n}).",
    output_spec=lambda p: "Print the encrypted string.",
    draw_case=lambda rng, p, lv: {"s": rand_word(rng, randint(rng, 1, lv.n), LETTERS)},
    edge_cases=lambda p, lv: [{"s": "z"}, {"s": "abc"}, {"s": "xyz"}],
    solve=lambda p, c: _caesar(c["s"], p["K"]),
    cores=(
        "ans = ''.join(chr((ord(c) - 97 + $K) % 26 + 97) for c in s)",
        "import string\nabc = string.ascii_lowercase\n"
        "ans = s.translate(str.maketrans(abc, abc[$K:] + abc[:$K]))",
        "res = []\nfor c in s:\n    x = ord(c) - ord('a') + $K\n    if x >= 26:\n        x -= 26\n"
        "    res.append(chr(ord('a') + x))\nans = ''.join(res)",
    ),
    bugs=(
        "ans = ''.join(chr(ord(c) + $K) for c in s)",
        "ans = ''.join(chr((ord(c) - 97 - $K) % 26 + 97) for c in s)",
    ),
)


def _palindrome_case(rng, p, lv):
    c, others = p["C"], other_letters(p["C"], 2)
    if rng.random() < 0.5:
        half = rand_word(rng, randint(rng, 0, lv.n // 3), others)
        core = half + rand_word(rng, randint(rng, 0, 1), others) + half[::-1]
    else:
        core = rand_word(rng, randint(rng, 1, lv.n // 2), others)
    chars = list(core)
    for _ in range(min(lv.n - len(chars), randint(rng, 1, 3))):
        chars.insert(randint(rng, 0, len(chars)), c)
    return {"s": "".join(chars)}


def _palindrome_edges(p, lv):
    o1, o2 = other_letters(p["C"], 2)
    return [{"s": o1 + p["C"] + o2 + o1}, {"s": p["C"] * 3}, {"s": o1 + o2}]


palindrome_after_deletion = Family(
    name="palindrome_after_deletion",
    topic="strings",
    tags=("strings", "two pointers"),
    fields=(("word", "s"),),
    output="yesno",
    draw_params=lambda rng, lv: {"C": pick(rng, LETTERS)},
    title=lambda p: f"Palindrome without {p['C'].upper()}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"{pick(rng, HEROES)} erases every letter '{p['C']}' from a string. Is the remaining "
            f"string a palindrome? (The empty string is a palindrome.)",
            f"Delete all occurrences of the letter '{p['C']}' from s and check whether the "
            f"result reads the same from left to right and from right to left. An empty "
            f"result counts as a palindrome.",
        ),
    ),
    input_spec=lambda p, lv: f"The only line contains {_S} (1 ≤ |s| ≤ {lv.n}).",
    output_spec=lambda p: 'Print "YES" if the result is a palindrome, and "NO" otherwise.',
    draw_case=_palindrome_case,
    edge_cases=_palindrome_edges,
    solve=lambda p, c: (t := c["s"].replace(p["C"], "")) == t[::-1],
    cores=(
        "t = s.replace('$C', '')\nans = t == t[::-1]",
        "t = [ch for ch in s if ch != '$C']\nans = t == t[::-1]",
        "t = s.replace('$C', '')\ni, j = 0, len(t) - 1\nans = True\nwhile i < j:\n"
        "    if t[i] != t[j]:\n        ans = False\n        break\n    i += 1\n    j -= 1",
        "t = ''.join(filter(lambda ch: ch != '$C', s))\n"
        "ans = all(t[i] == t[-1 - i] for i in range(len(t) // 2))",
    ),
    bugs=(
        "ans = s == s[::-1]",
        "t = s.replace('$C', '')\nans = t[0] == t[-1]",
    ),
)

_RLE_PIECES = {
    ("letter", 0): "ch + str(k)",
    ("letter", 1): "ch + (str(k) if k > 1 else '')",
    ("count", 0): "str(k) + ch",
    ("count", 1): "(str(k) if k > 1 else '') + ch",
}


def _rle_params(rng, lv):
    order, omit = pick(rng, ("letter", "count")), int(rng.random() < 0.5)
    return {
        "order": order,
        "omit": omit,
        "L": randint(rng, 2, 4),
        "_piece": _RLE_PIECES[order, omit],
    }


def _rle(p, c):
    parts = []
    for ch, grp in groupby(c["s"]):
        k = len(list(grp))
        num = "" if (p["omit"] and k == 1) else str(k)
        parts.append(ch + num if p["order"] == "letter" else num + ch)
    return "".join(parts)


def _rle_legend(p, rng):
    where = "followed by" if p["order"] == "letter" else "preceded by"
    omit = " A run of length 1 is written as the letter alone." if p["omit"] else ""
    return pick(
        rng,
        (
            f"Compress a string with run-length encoding: every maximal block of equal "
            f"letters is written as its letter {where} the block's length.{omit}",
            f"{pick(rng, HEROES)} shortens strings: each maximal run of identical letters "
            f"becomes the letter {where} the number of letters in the run.{omit}",
        ),
    )


run_length_encoding = Family(
    name="run_length_encoding",
    topic="strings",
    tags=("strings", "implementation"),
    fields=(("word", "s"),),
    output="str",
    draw_params=_rle_params,
    title=lambda p: "Run-Length Encoding" + (" Lite" if p["omit"] else ""),
    legend=_rle_legend,
    input_spec=lambda p, lv: f"The only line contains {_S} (1 ≤ |s| ≤ {lv.n}).",
    output_spec=lambda p: "Print the encoded string.",
    draw_case=lambda rng, p, lv: {"s": rand_word(rng, randint(rng, 1, lv.n), LETTERS[: p["L"]])},
    edge_cases=lambda p, lv: [{"s": "aba"}, {"s": "aaab"}, {"s": "a"}],
    solve=_rle,
    cores=(
        "from itertools import groupby\nparts = []\nfor ch, grp in groupby(s):\n"
        "    k = len(list(grp))\n    parts.append($_piece)\nans = ''.join(parts)",
        "parts = []\ni = 0\nwhile i < len(s):\n    j = i\n    while j < len(s) and s[j] == s[i]:\n"
        "        j += 1\n    ch, k = s[i], j - i\n    parts.append($_piece)\n    i = j\n"
        "ans = ''.join(parts)",
        "import re\nparts = []\nfor m in re.finditer(r'(.)\\1*', s):\n"
        "    ch, k = m.group(1), len(m.group(0))\n    parts.append($_piece)\nans = ''.join(parts)",
    ),
    bugs=(
        # Forgets to flush the last run.
        "parts = []\nprev, k = s[0], 0\nfor cur in s:\n    if cur == prev:\n        k += 1\n"
        "    else:\n        ch = prev\n        parts.append($_piece)\n        prev, k = cur, 1\n"
        "ans = ''.join(parts)",
        # Counts every occurrence of a letter instead of runs.
        "parts = []\nfor ch in dict.fromkeys(s):\n    k = s.count(ch)\n    parts.append($_piece)\n"
        "ans = ''.join(parts)",
    ),
)

_WORD_PICK = {
    ("longest", "first"): ("max(words, key=len)", ">", ">=", "(-len(words[i]), i)", "max"),
    ("longest", "last"): ("max(words[::-1], key=len)", ">=", ">", "(-len(words[i]), -i)", "max"),
    ("shortest", "first"): ("min(words, key=len)", "<", "<=", "(len(words[i]), i)", "min"),
    ("shortest", "last"): ("min(words[::-1], key=len)", "<=", "<", "(len(words[i]), -i)", "min"),
}


def _word_params(rng, lv):
    crit, tie = pick(rng, ("longest", "shortest")), pick(rng, ("first", "last"))
    pick_expr, cmp, bad_cmp, sort_key, lex = _WORD_PICK[crit, tie]
    return {
        "crit": crit,
        "tie": tie,
        "_pick": pick_expr,
        "_cmp": cmp,
        "_badcmp": bad_cmp,
        "_key": sort_key,
        "_lex": lex,
    }


def _word_solve(p, c):
    words = c["s"].split()
    sign = 1 if p["crit"] == "shortest" else -1
    order = range(len(words)) if p["tie"] == "first" else range(len(words) - 1, -1, -1)
    return words[min(order, key=lambda i: sign * len(words[i]))]


def _word_case(rng, p, lv):
    words = [rand_word(rng, randint(rng, 1, 5), "abcde") for _ in range(randint(rng, 1, lv.n))]
    return {"s": " ".join(words)}


word_extreme = Family(
    name="word_extreme",
    topic="strings",
    tags=("strings", "implementation"),
    fields=(("line", "s"),),
    output="str",
    draw_params=_word_params,
    title=lambda p: f"The {p['crit'].capitalize()} Word",
    legend=lambda p, rng: pick(
        rng,
        (
            f"A sentence is given. Find its {p['crit']} word; if several words have that "
            f"length, print the {p['tie']} of them.",
            f"{pick(rng, HEROES)} wants the {p['crit']} word of a sentence. Among words of "
            f"equal length, the one that occurs {p['tie']} in the sentence is chosen.",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The only line contains between 1 and {lv.n} words separated by "
        "single spaces; each word consists of 1 to 5 lowercase Latin letters."
    ),
    output_spec=lambda p: "Print the chosen word.",
    draw_case=_word_case,
    edge_cases=lambda p, lv: [{"s": "ab cd"}, {"s": "b aa"}, {"s": "aa b"}, {"s": "word"}],
    solve=_word_solve,
    cores=(
        "words = s.split()\nans = $_pick",
        "best = None\nfor w in s.split():\n    if best is None or len(w) $_cmp len(best):\n"
        "        best = w\nans = best",
        "words = s.split()\nans = words[min(range(len(words)), key=lambda i: $_key)]",
    ),
    bugs=(
        "best = None\nfor w in s.split():\n    if best is None or len(w) $_badcmp len(best):\n"
        "        best = w\nans = best",
        "ans = $_lex(s.split())",
    ),
)


def _brackets_case(rng, p, lv):
    o, x = p["O"], p["X"]
    if rng.random() < 0.5:
        out, bal = [], 0
        for _ in range(randint(rng, 1, lv.n // 2)):
            if bal and rng.random() < 0.5:
                out.append(x)
                bal -= 1
            else:
                out.append(o)
                bal += 1
        return {"s": "".join(out) + x * bal}
    return {"s": rand_word(rng, randint(rng, 1, lv.n), o + x)}


def _balanced(s: str, o: str) -> bool:
    bal = 0
    for ch in s:
        bal += 1 if ch == o else -1
        if bal < 0:
            return False
    return bal == 0


balanced_brackets = Family(
    name="balanced_brackets",
    topic="strings",
    tags=("strings", "greedy", "data structures"),
    fields=(("word", "s"),),
    output="yesno",
    draw_params=lambda rng, lv: dict(zip("OX", pick(rng, ("()", "[]", "{}", "<>")), strict=True)),
    title=lambda p: f"Brackets {p['O']}{p['X']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f"A string of brackets '{p['O']}' and '{p['X']}' is balanced if every opening "
            f"bracket can be matched with a later closing one, pairs properly nested. Check "
            f"whether the given string is balanced.",
            f"{pick(rng, HEROES)} typed a sequence of '{p['O']}' and '{p['X']}'. Decide whether "
            f"it is a correct bracket sequence.",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The only line contains a string s of the characters '{p['O']}' "
        f"and '{p['X']}' (1 ≤ |s| ≤ {lv.n})."
    ),
    output_spec=lambda p: 'Print "YES" if s is balanced, and "NO" otherwise.',
    draw_case=_brackets_case,
    edge_cases=lambda p, lv: [
        {"s": p["X"] + p["O"]},
        {"s": p["O"] * 2},
        {"s": p["O"] + p["X"]},
    ],
    solve=lambda p, c: _balanced(c["s"], p["O"]),
    cores=(
        "bal = 0\nans = True\nfor ch in s:\n    bal += 1 if ch == '$O' else -1\n    if bal < 0:\n"
        "        ans = False\n        break\nif bal != 0:\n    ans = False",
        "stack = []\nans = True\nfor ch in s:\n    if ch == '$O':\n        stack.append(ch)\n"
        "    elif stack:\n        stack.pop()\n    else:\n        ans = False\n        break\n"
        "ans = ans and not stack",
        "t = s\nwhile '$O$X' in t:\n    t = t.replace('$O$X', '')\nans = t == ''",
    ),
    bugs=(
        "ans = s.count('$O') == s.count('$X')",
        "bal = 0\nans = True\nfor ch in s:\n    bal += 1 if ch == '$O' else -1\n    if bal < 0:\n"
        "        ans = False",
    ),
)


def _pattern_params(rng, lv):
    u = rand_word(rng, randint(rng, 1, 2), "abc")
    v = rand_word(rng, randint(rng, 0, 2), "abc")
    # u + v + u overlaps itself, so non-overlapping counting is always a visible bug.
    return {"P": u + v + u, "_v": v, "_u": u}


def _pattern_case(rng, p, lv):
    n = randint(rng, 1, max(lv.n, 12))
    letters = "".join(sorted(set(p["P"]))) or "a"
    s = rand_word(rng, n, letters + "c")
    pos = randint(rng, 0, max(0, n - len(p["P"])))
    return {"s": (s[:pos] + p["P"] + s[pos + len(p["P"]) :])[: max(lv.n, 12)]}


def _count_overlapping(s: str, pat: str) -> int:
    return sum(1 for i in range(len(s) - len(pat) + 1) if s.startswith(pat, i))


pattern_occurrences = Family(
    name="pattern_occurrences",
    topic="strings",
    tags=("strings", "brute force"),
    fields=(("word", "s"),),
    output="int",
    draw_params=_pattern_params,
    title=lambda p: f"Count {p['P']}",
    legend=lambda p, rng: pick(
        rng,
        (
            f'Count the occurrences of the pattern "{p["P"]}" in the string s. Occurrences '
            f"may overlap: every starting position counts.",
            f'{pick(rng, HEROES)} looks for the word "{p["P"]}" inside a long string. How many '
            f"positions i are there such that the pattern starts at position i? Overlapping "
            f"occurrences are counted separately.",
        ),
    ),
    input_spec=lambda p, lv: (
        f"The only line contains a string s of letters 'a', 'b' and 'c' "
        f"(1 ≤ |s| ≤ {max(lv.n, 12)})."
    ),
    output_spec=lambda p: "Print one integer — the number of occurrences.",
    draw_case=_pattern_case,
    edge_cases=lambda p, lv: [
        {"s": p["P"] + p["_v"] + p["_u"]},
        {"s": p["P"]},
        {"s": "c"},
    ],
    solve=lambda p, c: _count_overlapping(c["s"], p["P"]),
    cores=(
        "ans = sum(1 for i in range(len(s) - len('$P') + 1) if s[i:i + len('$P')] == '$P')",
        "ans = 0\nfor i in range(len(s)):\n    if s.startswith('$P', i):\n        ans += 1",
        "ans = 0\ni = s.find('$P')\nwhile i != -1:\n    ans += 1\n    i = s.find('$P', i + 1)",
        "import re\nans = len(re.findall('(?=$P)', s))",
    ),
    bugs=(
        "ans = s.count('$P')",
        "ans = 0\nfor i in range(len(s) - len('$P')):\n    if s[i:i + len('$P')] == '$P':\n"
        "        ans += 1",
    ),
)

FAMILIES = (
    count_letter,
    caesar_shift,
    palindrome_after_deletion,
    run_length_encoding,
    word_extreme,
    balanced_brackets,
    pattern_occurrences,
)
