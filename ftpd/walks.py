"""Which file-system walks may run on the reactor thread (issue 13, item 1, daemon side).

A confined walk costs one ``openat`` per folder level.  Paths are capped at 64
levels (``storage.paths.MAX_DEPTH``) and the walk is linear, but 300 pipelined
``stat``s 60 levels down still add up to a stalled loop.  The session's working
folder is held open (``Store.open_workdir`` on ``cd``), so a path below it
walks only the levels past it.  A request whose walk is at most
``LOOP_WALK_LEVELS`` levels (nearly every request: a file in the working folder
or a few levels around it) runs inline as before; a deeper one runs on a worker,
and the session's later requests wait for it (order is kept) while the loop
serves everyone else.  ``cd`` opens a folder and always runs on a worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from storage.paths import split_user_path
from storage.workdir import WorkDir

from .jobs import Deferred, Outcome

__all__ = ["LOOP_WALK_LEVELS", "close_workdir", "plain_path", "walk_levels", "walked"]

#: Folder levels a request may walk on the reactor thread; deeper walks go to a worker.
LOOP_WALK_LEVELS = 8


def walk_levels(cwd: str, path: str) -> int:
    """The ``openat`` calls resolving ``path`` against ``cwd`` costs (no disk access;
    ``BadPath`` for an unacceptable path, as the store would say)."""
    parts = split_user_path(path, cwd)
    if isinstance(cwd, WorkDir) and not cwd.closed and parts[:len(cwd.parts)] == cwd.parts:
        return len(parts) - len(cwd.parts)
    return len(parts)


def walked(cwd: str, paths: tuple[str, ...], job: Callable[[], Any],
           then: Callable[[Any], Outcome], **deferred: Any) -> Outcome:
    """``then(job())`` right here when every path walks at most ``LOOP_WALK_LEVELS``
    levels, else the same as a ``Deferred`` for a worker."""
    if all(walk_levels(cwd, path) <= LOOP_WALK_LEVELS for path in paths):
        return then(job())
    return Deferred(job, then, **deferred)


def plain_path(cwd: str) -> str:
    """The working folder as the plain ``str`` replies need (a ``WorkDir`` is a subclass)."""
    return cwd.path if isinstance(cwd, WorkDir) else cwd


def close_workdir(cwd: str) -> None:
    if isinstance(cwd, WorkDir):
        cwd.close()
