"""The package's shape: layers whose imports point down, no import cycle, no
module using another module's private (``_x``) names.

Read from the source (ast), every import counted: at the top, inside a
function (lazy) or under ``TYPE_CHECKING``, since each is a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kubectl_gitops"

# Each room and the rooms it may import; the root's leaf helpers ("") import
# only each other. Faces (cli, agent) → engine, validate → source, kube →
# leaf helpers; source and kube know nothing of each other.
MAY_IMPORT = {
    "": {""},
    "source": {"", "source"},
    "kube": {"", "kube"},
    "engine": {"", "source", "kube", "engine"},
    "validate": {"", "source", "kube", "engine", "validate"},
    "agent": {"", "source", "kube", "engine", "validate", "agent"},
    "cli": {"", "source", "kube", "engine", "validate", "agent", "cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
PACKAGES = {m for m, p in MODULES.items() if p.name == "__init__.py"}
SOURCES = {m: p.read_text() for m, p in MODULES.items()}


def room(module: str) -> str:
    """The subpackage a module lives in ("" for the root's leaf helpers)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or module in PACKAGES - {"kubectl_gitops"} else ""


def imports(text: str, modules: set[str]) -> Iterator[tuple[int, str, str | None]]:
    """(line, module imported, name taken from it or None) for each import of
    one of ``modules``."""
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name, None) for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module in modules:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                yield (node.lineno, sub, None) if sub in modules else \
                    (node.lineno, node.module, a.name)


def graph() -> dict[str, set[str]]:
    """Module -> the modules it imports; a package's __init__ counts only if
    it holds code (a docstring alone imports nothing)."""
    empty = {m for m in PACKAGES if not any(
        not isinstance(n, ast.Expr) for n in ast.parse(SOURCES[m]).body)}
    return {m: {t for _, t, _ in imports(SOURCES[m], set(MODULES)) if t not in empty}
            for m in MODULES}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def private_uses(text: str, modules: set[str], own: str) -> Iterator[str]:
    """Private names of other modules, imported (``from m import _x``) or
    reached through an imported module (``m._x``)."""
    tree = ast.parse(text)
    for line, target, name in imports(text, modules):
        if target != own and name and name.startswith("_") and not name.startswith("__"):
            yield f"line {line}: {target}.{name}"
    bound: dict[str, str] = {}  # local name -> module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in modules:
            bound.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                          if f"{node.module}.{a.name}" in modules})
        elif isinstance(node, ast.Import):
            bound.update({a.asname: a.name for a in node.names if a.name in modules and a.asname})
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and bound.get(node.value.id, own) != own
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            yield f"line {node.lineno}: {bound[node.value.id]}.{node.attr}"


def test_every_module_lives_in_a_known_room() -> None:
    assert {room(m) for m in MODULES} == set(MAY_IMPORT)


def test_imports_point_down() -> None:
    wrong = [f"{MODULES[m].relative_to(PACKAGE.parent)}:{line}: {room(m) or 'root'} "
             f"imports {target} ({room(target) or 'root'})"
             for m in MODULES for line, target, _ in imports(SOURCES[m], set(MODULES))
             if room(target) not in MAY_IMPORT[room(m)]]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_uses_another_modules_private_names(module: str) -> None:
    found = list(private_uses(SOURCES[module], set(MODULES), module))
    assert not found, f"{MODULES[module]}: " + "; ".join(found)


def test_the_checks_see_what_they_look_for() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    text = ("from p import m\nfrom p.m import _x, y\nfrom p import q as r\n"
            "def f():\n    return m._y, r._z, m.ok, r.__doc__\n")
    assert list(private_uses(text, {"p", "p.m", "p.q"}, "p.other")) == [
        "line 2: p.m._x", "line 5: p.m._y", "line 5: p.q._z"]
    assert room("kubectl_gitops.engine.plan") == "engine"
    assert room("kubectl_gitops.errors") == ""
