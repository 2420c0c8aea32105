"""Per-user session slots: one user cannot hold every connection (issue 13, item 16).

A user pinging to stay past the idle timeout on every connection the server
allows would lock everyone else out.  ``max_connections_per_user`` (default 64)
bounds the logged-in sessions of one user name at once: the server takes a slot
at login and gives it back at logout or close (like ProFTPD's
``MaxClientsPerUser``).  The refused login is answered ``TOO_MANY_CONNECTIONS``.

The counter is per process, on the reactor thread (no lock needed there).  When
the daemon grows worker processes it must become shared (a SQLite row per user
and process, swept at start-up for processes that died); the interface stays.
"""

from __future__ import annotations

__all__ = ["UserSlots"]


class UserSlots:
    """Counts logged-in sessions per user name against a limit."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the per-user connection limit must be >= 1")
        self.limit = limit
        self._held: dict[str, int] = {}

    def acquire(self, user: str) -> bool:
        """Take a slot for a new session of ``user``; False (nothing taken) at the limit.

        Every True must be matched by one ``release`` when the session ends."""
        held = self._held.get(user, 0)
        if held >= self.limit:
            return False
        self._held[user] = held + 1
        return True

    def release(self, user: str) -> None:
        """A session of ``user`` ended (logout, close); extra releases are ignored."""
        held = self._held.get(user, 0) - 1
        if held > 0:
            self._held[user] = held
        else:
            self._held.pop(user, None)

    def held(self, user: str) -> int:
        return self._held.get(user, 0)
