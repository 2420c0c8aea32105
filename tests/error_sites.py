"""Which error codes can each command's handler produce?  Derived from the source, by AST.

tests/test_protocol_doc.py compares the result with the "Errors:" lists of
docs/PROTOCOL.md section 6, so a new raise site in a handler or in the storage
layer under it either appears in the document or fails the suite.

The analysis is deliberately simple and errs on the side of *more* codes:

* A function "makes" a code where it constructs a ``StorageError`` subclass
  (``NotFound(...)``: that class's ``code``), a ``ProtocolError`` with a
  literal ``code="X"`` (or a subclass with its own ``code``), an ``ErrorReply``
  with ``code="X"``, or calls ``refusal(id, "X", ...)``.
* It reaches every function whose *name* it calls (``self.tree.stat(...)``
  reaches every analysed function named ``stat``), except calls on standard
  modules (``os.stat``).  Name resolution over-approximates; a handler's nested
  functions (continuations, worker jobs) count as the handler.
* A command's codes are the closure over its ``@handles`` function.

Codes that are derivable but cannot happen for a reason the analysis cannot
see are named, with the reason, in the test, and the test checks that each
such exclusion is still derivable (so it cannot rot).
"""

from __future__ import annotations

import ast
import builtins
import errno
import inspect
import os
from collections import defaultdict
from functools import cache
from pathlib import Path

import protocol.errors as perrors
import storage.errors as serrors
from storage.confine import map_oserror

ROOT = Path(__file__).resolve().parent.parent
#: The daemon's request path below the dispatcher, and the storage layer.
MODULES = ["ftpd/handlers.py", "ftpd/listing.py", "ftpd/session_transfers.py",
           "ftpd/transfers.py",
           "ftpd/inline.py", "ftpd/jobs.py", *sorted(
               str(p.relative_to(ROOT)) for p in (ROOT / "storage").glob("*.py"))]
#: Calls on objects of these names (the last name before the call) are the standard
#: library's or the database's, never ours: ``os.stat``, ``self.ctx.db.write()``.
FOREIGN = {"os", "stat", "json", "time", "hashlib", "log", "logging", "math", "errno", "shutil",
           "sqlite3", "threading", "struct", "socket", "re", "itertools", "contextlib",
           "lock", "db", "conn", "cur", "fcntl", "secrets", "hmac", "base64", "io", "it",
           "digest", "hasher", "sha", "path", "Path", "parts", "results", "buf", "items",
           "transport"}
#: The errnos each system call can fail with that ``map_oserror`` tells apart (Linux
#: man pages, sections ERRORS); every other errno becomes IO_ERROR.  ``raise
#: map_oserror(exc, ...)`` in an ``except`` gets the codes of the ``os.*`` calls in its
#: ``try``; elsewhere, all of them.
_E = errno
SYSCALL_ERRNOS: dict[str, set[int]] = {
    "open": {_E.ENOENT, _E.EEXIST, _E.ENOTDIR, _E.EISDIR, _E.ELOOP, _E.ENAMETOOLONG,
             _E.ENOSPC, _E.EDQUOT},
    "stat": {_E.ENOENT, _E.ENOTDIR, _E.ELOOP, _E.ENAMETOOLONG},
    "lstat": {_E.ENOENT, _E.ENOTDIR, _E.ELOOP, _E.ENAMETOOLONG},
    "fstat": set(),
    "mkdir": {_E.EEXIST, _E.ENOENT, _E.ENOTDIR, _E.ELOOP, _E.ENAMETOOLONG, _E.ENOSPC,
              _E.EDQUOT},
    # (POSIX also allows EEXIST for a non-empty folder; Linux says ENOTEMPTY.)
    "rmdir": {_E.ENOENT, _E.ENOTDIR, _E.ENOTEMPTY, _E.ELOOP, _E.ENAMETOOLONG},
    "unlink": {_E.ENOENT, _E.ENOTDIR, _E.EISDIR, _E.ELOOP, _E.ENAMETOOLONG},
    "rename": {_E.ENOENT, _E.EEXIST, _E.ENOTDIR, _E.EISDIR, _E.ENOTEMPTY, _E.ELOOP,
               _E.ENAMETOOLONG, _E.ENOSPC, _E.EDQUOT},
    "link": {_E.ENOENT, _E.EEXIST, _E.ENOTDIR, _E.ELOOP, _E.ENAMETOOLONG, _E.ENOSPC,
             _E.EDQUOT},
    "write": {_E.ENOSPC, _E.EDQUOT}, "pwrite": {_E.ENOSPC, _E.EDQUOT},
    "ftruncate": {_E.ENOSPC, _E.EDQUOT}, "posix_fallocate": {_E.ENOSPC, _E.EDQUOT},
    "fsync": {_E.ENOSPC, _E.EDQUOT}, "fdatasync": {_E.ENOSPC, _E.EDQUOT},
    "read": set(), "pread": set(), "lseek": set(), "close": set(), "fchmod": set(),
    "utime": {_E.ENOENT, _E.ENOTDIR, _E.ELOOP}, "scandir": {_E.ENOENT, _E.ENOTDIR},
    "listdir": {_E.ENOENT, _E.ENOTDIR},
}
SYSCALL_ERRNOS["replace"] = SYSCALL_ERRNOS["rename"]
READ_OPEN_ERRNOS = {_E.ENOENT, _E.ENOTDIR, _E.ELOOP, _E.ENAMETOOLONG}
BUILTINS = set(dir(builtins))
#: Method names of builtin containers and strings: ``d.get(k)`` is never ``Store.get``.
BUILTIN_METHODS = {"get", "pop", "popleft", "append", "appendleft", "add", "items", "keys",
                   "values", "update", "setdefault", "join", "split", "encode", "decode",
                   "format", "sort", "extend", "clear", "discard", "copy", "index", "count",
                   "strip", "lstrip", "rstrip", "replace", "startswith", "endswith", "close",
                   "fullmatch", "match", "hexdigest", "isascii"}
_ANY_ERRNO = set().union(*SYSCALL_ERRNOS.values())


def _syscall_errnos(call: ast.Call) -> set[int]:
    name = _call_name(call)[0] or ""
    if name == "open" and len(call.args) > 1:
        flags = ast.unparse(call.args[1])
        if "CREAT" not in flags and ("READ" in flags or "DIR_FLAGS" in flags
                                     or "O_RDONLY" in flags):
            return READ_OPEN_ERRNOS          # no O_CREAT, no writing: EEXIST/EISDIR/ENOSPC
    return SYSCALL_ERRNOS.get(name, _ANY_ERRNO)


def _oserror_codes(errnos: set[int]) -> set[str]:
    """What ``map_oserror`` makes of these errnos (asked, not copied), plus IO_ERROR."""
    codes = {map_oserror(OSError(n, os.strerror(n)), "/x").code for n in errnos}
    return codes | {"IO_ERROR"}


def _error_classes() -> dict[str, str]:
    """Exception class name -> wire code, for both error families."""
    codes = {}
    for module, base in ((serrors, serrors.StorageError), (perrors, perrors.ProtocolError)):
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, base) and (cls is not base or base is perrors.ProtocolError):
                codes[name] = cls.code
    return codes


def _call_name(call: ast.Call) -> tuple[str | None, str | None]:
    """(the called name, the name of what it is called on) for ``f()`` / ``x.f()``."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id, None
    if isinstance(func, ast.Attribute):
        base = func.value
        owner = base.id if isinstance(base, ast.Name) else \
            base.attr if isinstance(base, ast.Attribute) else None
        return func.attr, owner
    return None, None


def _literal_code(call: ast.Call, position: int | None) -> str | None:
    for kw in call.keywords:
        if kw.arg == "code" and isinstance(kw.value, ast.Constant):
            return kw.value.value
    if position is not None and len(call.args) > position and \
            isinstance(call.args[position], ast.Constant):
        return call.args[position].value
    return None


class Sites:
    """Per analysed function ("module:name" or "module:Class.name"): the codes it makes and
    the functions it calls."""

    def __init__(self) -> None:
        self.classes = _error_classes()
        self.makes: dict[str, set[str]] = defaultdict(set)
        self.calls: dict[str, set[str]] = defaultdict(set)
        self.by_name: dict[str, set[str]] = defaultdict(set)
        self.errnos: dict[str, set[int]] = defaultdict(set)     # of its own os.* calls
        self.handlers: dict[str, str] = {}
        functions: list[tuple[str, ast.FunctionDef, str | None, set[str]]] = []
        for rel in MODULES:
            tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"), rel)
            for node in tree.body:
                if isinstance(node, ast.FunctionDef):
                    functions.append((f"{rel}:{node.name}", node, None, set()))
                elif isinstance(node, ast.ClassDef):
                    methods = [n for n in node.body if isinstance(n, ast.FunctionDef)]
                    names = {n.name for n in methods}
                    functions += [(f"{rel}:{node.name}.{n.name}", n, f"{rel}:{node.name}",
                                   names) for n in methods]
        for key, fn, _, _ in functions:
            if not any(isinstance(d, ast.Call) and _call_name(d)[0] == "handles"
                       for d in fn.decorator_list):    # a handler is never called by name
                self.by_name[fn.name].add(key)
            self.errnos[fn.name] |= set().union(set(), *(
                _syscall_errnos(c) for c in ast.walk(fn)
                if isinstance(c, ast.Call) and _call_name(c)[1] == "os"))
            for deco in fn.decorator_list:
                if isinstance(deco, ast.Call) and _call_name(deco)[0] == "handles":
                    self.handlers[deco.args[0].value] = key      # type: ignore[attr-defined]
        for key, fn, cls, siblings in functions:
            self._scan(key, fn, cls, siblings)

    def _scan(self, key: str, fn: ast.FunctionDef, cls: str | None, siblings: set[str]) -> None:
        mapped: set[int] = set()       # map_oserror calls already given their try's errnos
        nested = {n.name for n in ast.walk(fn) if isinstance(n, ast.FunctionDef) and n is not fn}
        for node in ast.walk(fn):
            if isinstance(node, ast.Try):
                errnos: set[int] = set()
                for stmt in node.body:
                    for call in ast.walk(stmt):
                        if not isinstance(call, ast.Call):
                            continue
                        name, owner = _call_name(call)
                        if owner == "os":
                            errnos |= _syscall_errnos(call)
                        elif name in self.errnos:       # a helper around system calls
                            errnos |= self.errnos[name]
                for handler in node.handlers:
                    for call in ast.walk(handler):
                        if isinstance(call, ast.Call) and _call_name(call)[0] == "map_oserror" \
                                and id(call) not in mapped:
                            mapped.add(id(call))
                            self.makes[key] |= _oserror_codes(errnos or _ANY_ERRNO)
            if not isinstance(node, ast.Call):
                continue
            name, owner = _call_name(node)
            if name == "map_oserror":
                if id(node) not in mapped:
                    self.makes[key] |= _oserror_codes(_ANY_ERRNO)
                continue
            if name is None or owner in FOREIGN or name in nested or \
                    (owner is not None and name in BUILTIN_METHODS) or \
                    (owner is None and name in BUILTINS):
                continue
            if name in self.classes:
                code = self.classes[name]
                if name == "ProtocolError":
                    code = _literal_code(node, None) or code
                self.makes[key].add(code)
            elif name == "ErrorReply":
                code = _literal_code(node, None)
                if code:
                    self.makes[key].add(code)
            elif name in ("refusal", "make_refusal"):
                code = _literal_code(node, 1)
                if code:
                    self.makes[key].add(code)
            elif owner in ("self", "cls") and name in siblings:
                self.calls[key].add(f"{cls}.{name}")     # resolved: this class's own method
            else:
                self.calls[key] |= self.by_name.get(name, set())

    def reach(self, start: str) -> set[str]:
        """Every code the function ``start`` can make, transitively."""
        seen, todo, codes = {start}, [start], set()
        while todo:
            key = todo.pop()
            codes |= self.makes.get(key, set())
            for callee in self.calls.get(key, ()):
                if callee not in seen:
                    seen.add(callee)
                    todo.append(callee)
        return codes

    def command_codes(self, cmd: str) -> set[str]:
        return self.reach(self.handlers[cmd])


@cache
def sites() -> Sites:
    return Sites()
