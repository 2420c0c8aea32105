"""Which targets have a writer right now: one active writer per ``(user, path)``.

A target is claimed by an ``Upload`` between ``begin`` and its end, or by a
group commit (``store_small``) while it writes the file.  The registry only
answers "is someone writing there?" and closes writers when the store or a user
goes away; it never touches files or rows.  Its lock is the innermost of the
store's locks (see :mod:`storage.context`).
"""

from __future__ import annotations

import threading
from typing import Protocol

__all__ = ["INLINE", "InlineClaim", "Writer", "WriterRegistry"]


class Writer(Protocol):
    """Anything that holds a claim: it can be cut off from another thread."""

    def _revoke(self) -> None: ...


class InlineClaim:
    """The claim of a group commit on a path it is writing (nothing to close: the
    group commit owns its descriptors until it returns)."""

    __slots__ = ()

    def _revoke(self) -> None:
        pass


INLINE = InlineClaim()


class WriterRegistry:
    """The claims, keyed by ``(user, normalised path)``; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writers: dict[tuple[str, str], Writer] = {}

    def is_active(self, user: str, path: str) -> bool:
        with self._lock:
            return (user, path) in self._writers

    def claim(self, user: str, path: str, writer: Writer) -> None:
        """Record ``writer`` (the caller holds the user lock and checked ``is_active``)."""
        with self._lock:
            self._writers[(user, path)] = writer

    def drop(self, user: str, path: str, writer: Writer) -> None:
        """Forget the claim if it is still ``writer``'s."""
        with self._lock:
            if self._writers.get((user, path)) is writer:
                del self._writers[(user, path)]

    def revoke(self, user: str | None = None) -> None:
        """Cut off every writer (or one user's) and forget their claims."""
        with self._lock:
            victims = [(key, w) for key, w in self._writers.items()
                       if user is None or key[0] == user]
        for (owner, path), writer in victims:
            writer._revoke()
            self.drop(owner, path, writer)
