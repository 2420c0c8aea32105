"""The daemon's seams, checked on its source: no import circle, one owner per resource."""

from __future__ import annotations

import ast
from pathlib import Path

FTPD = Path(__file__).resolve().parent.parent / "ftpd"


def _imports(path: Path) -> set[str]:
    """The ftpd modules ``path`` imports, type-checking-only imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("ftpd."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("ftpd."))
    return found


def test_the_daemon_has_no_import_circle():
    graph = {p.stem: _imports(p) & {q.stem for q in FTPD.glob("*.py")}
             for p in FTPD.glob("*.py")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    circles = sorted(m for m in graph if reaches(m, m, set()))
    assert not circles, f"modules on an import circle: {circles}"


def test_only_the_transport_sends_files_or_touches_the_selector_mask():
    for path in FTPD.glob("*.py"):
        text = path.read_text()
        if path.stem != "transport":
            assert "sendfile(" not in text, path.name
        if path.stem not in ("transport", "server"):
            assert "selector.register" not in text and "selector.modify" not in text, path.name


def test_sessions_and_handlers_never_see_the_server():
    for name in ("session", "session_transfers", "handlers", "transfers", "inline", "jobs"):
        assert "server" not in _imports(FTPD / f"{name}.py"), name


def test_no_daemon_file_is_over_500_lines():
    long = {p.name: n for p in FTPD.glob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
