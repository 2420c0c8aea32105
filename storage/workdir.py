"""A session's working folder held open, so relative paths do not walk from the home.

``WorkDir`` *is* the normalised path string of the folder (a ``str`` subclass),
so every storage call that takes ``cwd: str`` accepts it unchanged and reads it
as before; the tree operations (:mod:`storage.tree`) recognise it and resolve a
path that lies below it from its open descriptor, walking only the components
past the working folder.  A session that ``cd``-ed 60 levels down no longer pays
60 ``openat`` calls for every ``stat`` of a file there.

Semantics are those of a process's working directory: the descriptor follows
the folder, not the name.  If another session moves the folder, relative paths
go on resolving inside it (still within the home: renames never leave it) while
the path string is stale; if it is removed, they answer ``NOT_FOUND``.  Paths
that leave the working folder (``..``, absolute paths elsewhere) walk from the
home as before.

The descriptor is shared between the session (reactor thread) and workers that
resolve paths from it, so it is only ever used through ``dup`` under a lock:
``close`` can never pull it from under a running walk, nor let its number be
reused while one still holds it.
"""

from __future__ import annotations

import os
import threading

__all__ = ["WorkDir"]


class WorkDir(str):
    """The normalised user path of a working folder, plus an open descriptor of it.

    Made by ``Store.open_workdir``; the caller closes it (``close``, or ``with``) when
    the session changes folder, logs out or ends.  A forgotten one is closed when it
    is garbage-collected.
    """

    user: str
    parts: tuple[str, ...]

    def __new__(cls, path: str, user: str, parts: tuple[str, ...], fd: int) -> WorkDir:
        self = super().__new__(cls, path)
        self.user = user
        self.parts = parts
        self._fd = fd
        self._lock = threading.Lock()
        return self

    @property
    def path(self) -> str:
        """The path as a plain ``str``: what goes into replies (the protocol's field
        checks want exactly ``str``, not a subclass)."""
        return str.__str__(self)

    def dup(self) -> int | None:
        """A new descriptor of the folder (the caller closes it), or None once closed."""
        with self._lock:
            return os.dup(self._fd) if self._fd >= 0 else None

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Close the descriptor (idempotent); the string value stays usable."""
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> WorkDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    # A WorkDir compares, hashes and pickles as its path (it is one); a copy is a plain
    # string, never a second owner of the descriptor.
    def __reduce__(self) -> tuple[type, tuple[str]]:
        return str, (str(self),)

    def __copy__(self) -> str:
        return str(self)

    def __deepcopy__(self, memo: object) -> str:
        return str(self)
