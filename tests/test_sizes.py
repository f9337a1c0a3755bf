"""The house plan's size rule (issue 15, ARCHITECTURE.md): no module over 400 lines, no function over 60,
unless :data:`ALLOWED` below says why.

Every module of ``features/``, ``stream/``, ``serving/``, ``p13n/`` and ``benchmarks/`` is parsed with
:mod:`ast`; a module counts its lines, a function or method (async ones, nested ones) counts from its ``def``
line to its last line, docstring and comments included, decorators not. Each one over its limit fails the test
by name (``path`` for a module, ``path::Class.method`` for a function) with its length, unless it is in
:data:`ALLOWED` with the reason it may be longer; an entry that no longer exceeds its limit fails too, so the
table only ever lists what is still long.

The modules of ``tests/`` are held to the module rule as well, but their functions are exempt from the
function rule: a test reads as one scenario from set-up to its last assertion, and cutting it into helpers to
meet a line count would hide what it checks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("features", "stream", "serving", "p13n", "benchmarks")
TESTS = "tests"  # module rule only
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

#: What may pass its limit, and why (``path`` for a module, ``path::qualified.name`` for a function). A reason
#: says what the length holds that splitting would scatter — not that splitting is hard.
ALLOWED: dict[str, str] = {
}


def oversized(source: str, path: str, functions: bool = True) -> dict[str, int]:
    """``{name: lines}`` of what in one module's ``source`` passes its limit: the module itself (named ``path``)
    and, unless ``functions`` is false, every function or method (named ``path::Outer.inner``).

    >>> body = "def f():\\n" + "    x = 1\\n" * 60
    >>> oversized(body, "m.py")
    {'m.py::f': 61}
    >>> oversized("def f():\\n" + "    x = 1\\n" * 59, "m.py")
    {}
    """
    found: dict[str, int] = {}
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        found[path] = lines
    if not functions:
        return found

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                length = child.end_lineno - child.lineno + 1
                if not isinstance(child, ast.ClassDef) and length > MAX_FUNCTION_LINES:
                    found[f"{path}::{name}"] = length
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=path), "")
    return found


def _modules() -> list[Path]:
    return sorted(p for top in (*PACKAGES, TESTS) for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)


def _measure() -> dict[str, int]:
    found: dict[str, int] = {}
    for path in _modules():
        name = path.relative_to(ROOT).as_posix()
        found.update(oversized(path.read_text(encoding="utf-8"), name, functions=not name.startswith(f"{TESTS}/")))
    return found


def test_the_walk_reads_every_package():
    walked = {p.relative_to(ROOT).parts[0] for p in _modules()}
    assert walked == {*PACKAGES, TESTS}
    assert len(_modules()) > 100


def test_the_rule_counts_nested_functions_and_methods_and_long_modules():
    method = "class A:\n    def m(self):\n" + "        x = 1\n" * 60
    nested = "def outer():\n    async def inner():\n" + "        x = 1\n" * 60
    assert oversized(method, "a.py") == {"a.py::A.m": 61}
    assert oversized(nested, "n.py") == {"n.py::outer": 62, "n.py::outer.inner": 61}
    assert oversized("x = 1\n" * 401, "long.py") == {"long.py": 401}
    assert oversized("x = 1\n" * 400, "long.py") == {}
    assert oversized(method, "tests/t.py", functions=False) == {}


def test_no_module_or_function_is_longer_than_the_plan_allows():
    over = {name: lines for name, lines in _measure().items() if name not in ALLOWED}
    assert not over, (
        f"modules over {MAX_MODULE_LINES} lines or functions over {MAX_FUNCTION_LINES}; split them by concept, or "
        "add them to ALLOWED in tests/test_sizes.py with the reason they may be longer:\n"
        + "\n".join(f"  {name}: {lines} lines" for name, lines in sorted(over.items()))
    )


def test_every_exemption_is_still_needed():
    measured = _measure()
    stale = sorted(name for name in ALLOWED if name not in measured)
    assert not stale, "within the limits now (or gone); remove from ALLOWED in tests/test_sizes.py: " + ", ".join(stale)


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_every_exemption_names_a_module_and_gives_a_reason(name):
    path = name.split("::")[0]
    assert (ROOT / path).is_file(), f"{name}: no such module"
    assert path.split("/")[0] in (*PACKAGES, TESTS), f"{name}: outside the walked packages"
    assert not (path.startswith(f"{TESTS}/") and "::" in name), f"{name}: test functions are exempt already"
    assert len(ALLOWED[name].split()) >= 4, f"{name}: say why it may be longer"
