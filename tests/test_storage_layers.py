"""The shape of the storage and protocol packages: no import circles, small files,
no sockets.  Read from the source with ``ast``, so an import hidden under
``TYPE_CHECKING`` counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def imports_of(package: str) -> dict[str, set[str]]:
    """``module -> modules of the same package it imports`` (any import statement)."""
    folder = REPO / package
    modules = {p.stem for p in folder.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 or node.module == package or (
                        node.module or "").startswith(package + "."):
                    base = (node.module or "").removeprefix(package).lstrip(".")
                    if base:
                        found.add(base.split(".")[0])
                    else:                      # from . import x: x is a module
                        found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(package + "."):
                        found.add(alias.name.split(".")[1])
        graph[path.stem] = found & modules - {path.stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("package", ["storage", "protocol"])
def test_package_has_no_import_circle(package):
    assert find_cycle(imports_of(package)) is None


def test_the_cycle_finder_finds_a_circle_through_a_type_checking_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", ["storage"])
def test_no_module_is_over_500_lines(package):
    long = {p.name: n for p in (REPO / package).glob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}


@pytest.mark.parametrize("package", ["storage", "protocol"])
def test_no_sockets_below_the_daemon(package):
    for path in (REPO / package).glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"socket", "selectors", "ssl", "asyncio"}, path.name


def test_the_storage_state_machine_is_never_weaker_in_ci_than_locally():
    """The machine's count is the named CI budget under ci and the profile's own under
    dev (capped at 100): never fewer in CI than on a laptop, and the example database
    is always the profile's."""
    from hypothesis import settings

    from tests.test_storage_state import StorageMachine

    machine = StorageMachine.TestCase.settings
    if settings.get_current_profile_name() == "ci":
        assert machine.max_examples >= 200
    else:
        assert machine.max_examples == min(100, settings.default.max_examples)
    assert machine.database == settings.default.database
