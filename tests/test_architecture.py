"""The house rules of ``src/weighted_mtp``, read from the source with ``ast`` (nothing imported):
which package may import which, and how long a module may grow before it must say why."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "weighted_mtp"

#: Packages that hold the library (no Kedro): they may not reach up into the Kedro side.
LIBRARY = ("models", "model_io", "losses", "weighting", "data", "evaluation", "training")
#: The Kedro side: pipelines, the hooks and the catalog's dataset classes.
KEDRO_SIDE = ("weighted_mtp.pipelines", "weighted_mtp.hooks", "weighted_mtp.datasets")
#: ``weighting/`` is maths on tensors: it sits below all of these.
ABOVE_WEIGHTING = (
    "weighted_mtp.models",
    "weighted_mtp.losses",
    "weighted_mtp.data",
    "weighted_mtp.training",
)
MAX_LINES = 450
KEPT_WHOLE = "Kept whole because"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every ``weighted_mtp`` module ``path`` imports, at any depth of its code (function-level
    imports count), relative imports resolved; ``from a import b`` yields ``a`` and ``a.b``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "weighted_mtp" or m.startswith("weighted_mtp.")}


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_rules_see_every_kind_of_import(tmp_path: Path, monkeypatch) -> None:
    # A checker that misses a form of import would pass on anything: feed it each form.
    fake = tmp_path / "weighted_mtp" / "weighting"
    fake.mkdir(parents=True)
    module = fake / "bad.py"
    module.write_text(
        "import weighted_mtp.models.args\n"
        "from weighted_mtp import hooks\n"
        "from ..training import loop\n"
        "def f():\n    from weighted_mtp.datasets.jsonl import X\n"
    )
    monkeypatch.setattr(f"{__name__}.SRC", tmp_path)
    got = imported_modules(module)
    assert "weighted_mtp.models.args" in got
    assert _under("weighted_mtp.hooks", KEDRO_SIDE) and "weighted_mtp.hooks" in got
    assert "weighted_mtp.training.loop" in got
    assert "weighted_mtp.datasets.jsonl" in got


def test_weighting_imports_nothing_above_it() -> None:
    offenders = {
        _module_name(path): sorted(m for m in imported_modules(path) if _under(m, ABOVE_WEIGHTING))
        for path in sorted((PACKAGE / "weighting").rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_library_packages_do_not_import_the_kedro_side() -> None:
    offenders = {}
    for package in LIBRARY:
        for path in sorted((PACKAGE / package).rglob("*.py")):
            bad = sorted(m for m in imported_modules(path) if _under(m, KEDRO_SIDE))
            if bad:
                offenders[_module_name(path)] = bad
    assert offenders == {}


def test_long_modules_say_why_they_stay_whole() -> None:
    # Fails while any module under src/ is over the limit without saying why in its first five
    # lines; the list names each one with its length.
    offenders = {}
    for path in _sources():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES and not any(KEPT_WHOLE in line for line in lines[:5]):
            offenders[str(path.relative_to(SRC))] = len(lines)
    assert offenders == {}, f"over {MAX_LINES} lines without {KEPT_WHOLE!r}: {offenders}"


@pytest.mark.parametrize("package", LIBRARY)
def test_every_library_package_exists(package: str) -> None:
    # A renamed package would silently drop out of the rules above.
    assert (PACKAGE / package / "__init__.py").is_file()
