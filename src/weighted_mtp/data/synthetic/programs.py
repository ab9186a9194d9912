"""Inputs, outputs and whole programs derived from a family's field layout.

The reading code of every program and the text of every test input are produced here from the
same field list, so they cannot disagree; a family only writes the computation (its "core").
Styles vary the way competitive programmers vary them: ``input()``, ``sys.stdin.readline``,
one ``sys.stdin.read()`` split into tokens or into lines; flat scripts, ``main()`` functions,
per-case ``solve()`` functions; ``print`` or ``sys.stdout.write`` or one joined write.
"""

from __future__ import annotations

from string import Template
from typing import Any

from weighted_mtp.data.synthetic.family import Case, Family, Params

READ_STYLES = ("input", "readline", "lines", "tokens")
SINGLE_LAYOUTS = ("flat", "main", "guard")
MULTI_LAYOUTS = ("solve_print", "collect", "inline")
PRINT_STYLES = ("print", "write")
# Generic output-format bugs an incorrect program may carry, by output kind.
FORMAT_BUGS = {"seq": ("repr_list", "comma_join"), "yesno": ("title_case",), "int": (), "str": ()}
MULTI_FORMAT_BUGS = {"int": ("one_line",), "yesno": ("one_line",)}


# ---------------------------------------------------------------- test data


def render_case(fields: tuple[tuple[str, ...], ...], case: Case) -> list[str]:
    """The input lines of one case."""
    out: list[str] = []
    for f in fields:
        kind, name = f[0], f[1]
        if kind == "int":
            out.append(str(case[name]))
        elif kind == "ints":
            out.append(" ".join(str(case[n]) for n in name.split()))
        elif kind == "arr":
            out.append(" ".join(map(str, case[name])))
        elif kind in ("word", "line"):
            out.append(case[name])
        elif kind == "pairs":
            out.extend(f"{x} {y}" for x, y in case[name])
        elif kind == "grid":
            out.extend(case[name])
        elif kind == "matrix":
            out.extend(" ".join(map(str, row)) for row in case[name])
        else:  # pragma: no cover - a registry bug, caught by the tests
            raise ValueError(f"unknown field kind {kind!r}")
    return out


def render_answer(output: str, ans: Any) -> str:
    """The expected output text of one case (no final newline)."""
    if output == "yesno":
        return "YES" if ans else "NO"
    if output == "seq":
        return " ".join(map(str, ans))
    if output == "lines":
        return "\n".join(map(str, ans))
    return str(ans)


def render_test(family: Family, params: Params, cases: list[Case], multi: bool) -> tuple[str, str]:
    """``(stdin, expected stdout)`` of one test made of ``cases`` (one case unless ``multi``)."""
    lines = [str(len(cases))] if multi else []
    answers = []
    for case in cases:
        lines.extend(render_case(family.fields, case))
        answers.append(render_answer(family.output, family.solve(params, case)))
    return "\n".join(lines) + "\n", "\n".join(answers) + "\n"


# ---------------------------------------------------------------- programs


def _read_lines(fields: tuple[tuple[str, ...], ...], style: str) -> list[str]:
    if style == "tokens":
        return [_read_token_field(f) for f in fields]
    rd = "next(it)" if style == "lines" else "input()"
    strip_nl = ".rstrip('\\n')" if style == "readline" else ""
    out = []
    for f in fields:
        kind, name = f[0], f[1]
        if kind == "int":
            out.append(f"{name} = int({rd})")
        elif kind == "ints":
            out.append(f"{', '.join(name.split())} = map(int, {rd}.split())")
        elif kind == "arr":
            out.append(f"{name} = list(map(int, {rd}.split()))")
        elif kind == "word":
            out.append(f"{name} = {rd}.strip()")
        elif kind == "line":
            out.append(f"{name} = {rd}{strip_nl}")
        elif kind == "pairs":
            out.append(f"{name} = [tuple(map(int, {rd}.split())) for _ in range({f[2]})]")
        elif kind == "grid":
            out.append(f"{name} = [{rd}.strip() for _ in range({f[2]})]")
        elif kind == "matrix":
            rows = f[2].split()[0]
            out.append(f"{name} = [list(map(int, {rd}.split())) for _ in range({rows})]")
    return out


def _read_token_field(f: tuple[str, ...]) -> str:
    kind, name = f[0], f[1]
    if kind == "int":
        return f"{name} = int(next(it))"
    if kind == "ints":
        names = name.split()
        return f"{', '.join(names)} = {', '.join('int(next(it))' for _ in names)}"
    if kind == "arr":
        return f"{name} = [int(next(it)) for _ in range({f[2]})]"
    if kind == "word":
        return f"{name} = next(it)"
    if kind == "pairs":
        return f"{name} = [(int(next(it)), int(next(it))) for _ in range({f[2]})]"
    if kind == "grid":
        return f"{name} = [next(it) for _ in range({f[2]})]"
    if kind == "matrix":
        rows, cols = f[2].split()
        return f"{name} = [[int(next(it)) for _ in range({cols})] for _ in range({rows})]"
    raise ValueError(f"field kind {kind!r} cannot be read token by token")


def _header(style: str) -> list[str]:
    if style == "readline":
        return ["input = sys.stdin.readline"]
    if style == "lines":
        return ["it = iter(sys.stdin.read().split('\\n'))"]
    if style == "tokens":
        return ["it = iter(sys.stdin.read().split())"]
    return []


def _text_expr(output: str) -> str:
    if output == "yesno":
        return '("YES" if ans else "NO")'
    if output == "seq":
        return '" ".join(map(str, ans))'
    if output == "lines":
        return '"\\n".join(map(str, ans))'
    if output == "int":
        return "str(ans)"
    return "ans"


def _emit(output: str, print_style: str, bug: str | None) -> str:
    """A statement printing ``ans`` for one case."""
    if bug == "repr_list":
        return "print(ans)"
    if bug == "comma_join":
        return 'print(",".join(map(str, ans)))'
    if bug == "title_case":
        return 'print("Yes" if ans else "No")'
    if print_style == "write":
        return f"sys.stdout.write({_text_expr(output)} + '\\n')"
    if output in ("int", "str"):
        return "print(ans)"
    if output == "seq":
        return "print(*ans)"
    if output == "lines":
        return (
            'print(*ans, sep="\\n")'
            if print_style == "print"
            else "print('\\n'.join(map(str, ans)))"
        )
    return f"print({_text_expr(output)})"


def _split_imports(core: str) -> tuple[list[str], list[str]]:
    imports, body = [], []
    for line in core.strip("\n").split("\n"):
        (imports if line.startswith(("import ", "from ")) else body).append(line)
    return imports, body


def _indent(lines: list[str]) -> list[str]:
    return [("    " + line if line else line) for chunk in lines for line in chunk.split("\n")]


def build_program(
    family: Family,
    params: Params,
    core: str,
    *,
    multi: bool,
    style: str,
    layout: str,
    print_style: str,
    bug: str | None = None,
) -> str:
    """A whole Python 3 program for ``family`` with computation ``core``.

    ``bug`` names a generic output-format bug (``FORMAT_BUGS``/``MULTI_FORMAT_BUGS``) to build
    an incorrect program from a correct core; None builds the program as the core computes.
    """
    imports, body = _split_imports(Template(core).substitute(params))
    header = _header(style)
    if header or (print_style == "write" and bug is None):
        imports.append("import sys")
    header = [line for line in header if line != "import sys"]
    imports = sorted(set(imports))
    read = _read_lines(family.fields, style)
    emit = _emit(family.output, print_style, bug)
    top = imports + ([""] if imports and header else []) + header
    if bug is not None and layout == "collect":
        layout = "solve_print"  # the collecting layout formats answers itself: emit the bug
    if not multi:
        if layout == "flat":
            main = read + body + [emit]
        else:
            main = ["def main():", *_indent(read + body + [emit]), "", ""]
            main.append('if __name__ == "__main__":\n    main()' if layout == "guard" else "main()")
    else:
        read_t = _read_lines((("int", "t"),), style)
        if bug == "one_line":
            text = _text_expr(family.output)
            main = ["def solve():", *_indent(read + body + ["return ans"]), "", ""]
            main += read_t + ["out = []", "for _ in range(t):", "    ans = solve()"]
            main += [f"    out.append({text})", 'print(" ".join(out))']
        elif layout == "inline":
            main = read_t + ["for _ in range(t):", *_indent(read + body + [emit])]
        elif layout == "collect":
            text = _text_expr(family.output)
            main = ["def solve():", *_indent(read + body + ["return ans"]), "", ""]
            main += read_t + ["out = []", "for _ in range(t):", "    ans = solve()"]
            main += [f"    out.append({text})", 'print("\\n".join(out))']
        else:
            main = ["def solve():", *_indent(read + body + ["return ans"]), "", ""]
            main += read_t + ["for _ in range(t):", "    ans = solve()", f"    {emit}"]
    lines = top + ([""] if top else []) + main
    return "\n".join(lines).rstrip() + "\n"


def build_python2_program(family: Family, params: Params, core: str, *, multi: bool) -> str:
    """A Python 2 rendering of a correct core (language 1 rows, filtered out downstream)."""
    imports, body = _split_imports(Template(core).substitute(params))
    read = [line.replace("input()", "raw_input()") for line in _read_lines(family.fields, "input")]
    emit = f"print {_text_expr(family.output)}"
    if multi:
        main = ["t = int(raw_input())", "for _ in xrange(t):", *_indent(read + body + [emit])]
    else:
        main = read + body + [emit]
    return "\n".join(imports + main) + "\n"
