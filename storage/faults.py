"""Crash points: named steps of the storage's crash-safe paths where a test can stop it.

The commit, the group commit, ``begin`` and the start-up recovery call
``crash_point("commit.after_mark")`` and the like between the steps whose order
the crash argument (:mod:`storage.commit`) relies on.  Unarmed -- the normal
case -- a crash point costs one global lookup and one comparison.

Two ways to arm them:

* ``FTPD_CRASH_AT=name`` or ``name@n`` in the environment when the process
  starts: the process dies with ``os._exit(CRASH_EXIT)`` the first (or n-th)
  time it reaches that step -- as abrupt as SIGKILL for the files and the
  catalogue, with no ``finally`` blocks run.  ``FTPD_CRASH_TRACE=file`` appends
  the name of every step reached to ``file`` (unbuffered, so it survives the
  crash): a test first traces a run to learn every step, then kills one run
  at each.
* ``set_hook(callable)`` in-process: the callable gets each step's name (a test
  may raise from it, record the order, or wait).

In the spirit of SQLite's crash-test VFS: the code names its own steps so a
test can crash between any two of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["CRASH_EXIT", "ENV_AT", "ENV_TRACE", "Hook", "crash_point", "exit_at", "set_hook",
           "tracer"]

ENV_AT = "FTPD_CRASH_AT"
ENV_TRACE = "FTPD_CRASH_TRACE"
#: Exit status of a process stopped at a crash point (tells it apart from a real failure).
CRASH_EXIT = 86

Hook = Callable[[str], None]

_hook: Hook | None = None


def crash_point(name: str) -> None:
    """The process may die here when a test asks for it; otherwise nothing happens."""
    if _hook is not None:
        _hook(name)


def set_hook(hook: Hook | None) -> Hook | None:
    """Install ``hook`` (``None`` disarms); returns the previous one so tests can restore it."""
    global _hook
    previous, _hook = _hook, hook
    return previous


def exit_at(spec: str) -> Hook:
    """A hook that calls ``os._exit(CRASH_EXIT)`` at the n-th arrival at a step (``name@n``)."""
    name, _, nth = spec.partition("@")
    target = int(nth) if nth else 1
    seen = 0

    def hook(step: str) -> None:
        nonlocal seen
        if step == name:
            seen += 1
            if seen == target:
                os._exit(CRASH_EXIT)

    return hook


def tracer(path: str) -> Hook:
    """A hook that appends each step's name to ``path`` with one unbuffered write."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def hook(step: str) -> None:
        os.write(fd, step.encode("ascii") + b"\n")

    return hook


def _from_environment() -> Hook | None:
    hooks = []
    if os.environ.get(ENV_TRACE):
        hooks.append(tracer(os.environ[ENV_TRACE]))
    if os.environ.get(ENV_AT):
        hooks.append(exit_at(os.environ[ENV_AT]))
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def both(step: str) -> None:
        for hook in hooks:
            hook(step)

    return both


_hook = _from_environment()
