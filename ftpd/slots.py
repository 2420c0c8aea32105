"""Per-user session slots: one user cannot hold every connection (issue 13, item 16).

A user pinging to stay past the idle timeout on every connection the server
allows would lock everyone else out.  ``max_connections_per_user`` (default 64)
bounds the logged-in sessions of one user name at once: the server takes a slot
at login and gives it back at logout or close (like ProFTPD's
``MaxClientsPerUser``).  The refused login is answered ``TOO_MANY_CONNECTIONS``.

``UserSlots`` counts in this process, on the reactor thread (no lock needed
there).  With worker processes (``--workers N``) ``SharedLimits`` holds the
limits that span connections for all of them -- connections in total and per
address, upload slots per user -- and ``SharedUserSlots`` (same interface)
counts sessions per user over every worker: rows per process in
``<root>/run/live.db`` (:mod:`storage.shared`), swept when a process dies.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

from storage.shared import SharedState

if TYPE_CHECKING:
    from .config import Config

__all__ = ["SharedLimits", "SharedUploadSlots", "SharedUserSlots", "UploadSlots", "UserSlots"]

log = logging.getLogger("ftpd")


class UploadSlots:
    """How many uploads each user has running; at most ``limit`` per user.

    A slot is taken when an upload is accepted (before the worker begins it,
    so racing puts cannot pass the limit) and freed when it ends.
    """

    __slots__ = ("limit", "active")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: collections.Counter[str] = collections.Counter()

    def take(self, user: str) -> bool:
        """Count one more upload of ``user``, unless the per-user limit is reached."""
        if self.active[user] >= self.limit:
            return False
        self.active[user] += 1
        return True

    def free(self, user: str) -> None:
        self.active[user] -= 1
        if self.active[user] <= 0:
            del self.active[user]


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


class SharedLimits:
    """The limits that span connections, kept for every worker process at once.

    With ``worker_processes > 1`` each worker's ``Server`` checks its own
    counters *and* these: the total and per-address connection counts and the
    per-user upload slots (and, through ``user_slots``, the per-user session
    limit) are sums over all workers, in :class:`storage.shared.SharedState`.
    Each call is one small SQLite transaction on the reactor thread (no fsync;
    see docs/ARCHITECTURE.md for the measured cost).  A database error fails
    closed for taking (refused) and is logged for giving back (the rows go with
    the process anyway).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = SharedState(config.root)
        swept = self.state.sweep_dead()
        if swept:
            log.info("shared state: swept %d rows of processes that died", swept)

    def admit(self, ip: str) -> str | None:
        """Count a new connection from ``ip``; None, or why it is refused."""
        try:
            why = self.state.open_connection(ip, self.config.max_connections,
                                             self.config.max_connections_per_ip)
        except sqlite3.Error as exc:
            log.warning("shared state: %s; refusing a connection", exc)
            return "the server is busy"
        if why == "total":
            return "the server has too many connections"
        if why == "ip":
            return "too many connections from your address"
        return None

    def forget(self, ip: str) -> None:
        self._quietly(self.state.close_connection, ip)

    def take_upload(self, user: str) -> bool:
        try:
            return self.state.take_upload(user, self.config.max_uploads_per_user)
        except sqlite3.Error as exc:
            log.warning("shared state: %s; refusing an upload slot", exc)
            return False

    def free_upload(self, user: str) -> None:
        self._quietly(self.state.free_upload, user)

    def user_slots(self) -> SharedUserSlots:
        return SharedUserSlots(self)

    @staticmethod
    def _quietly(action: Callable[[str], None], key: str) -> None:
        try:
            action(key)
        except sqlite3.Error as exc:
            log.warning("shared state: %s", exc)

    def close(self) -> None:
        self.state.close()


class SharedUserSlots(UserSlots):
    """``UserSlots`` whose counts are summed over every worker process."""

    def __init__(self, limits: SharedLimits) -> None:
        super().__init__(limits.config.max_connections_per_user)
        self._limits = limits

    def acquire(self, user: str) -> bool:
        try:
            taken = self._limits.state.login(user, self.limit)
        except sqlite3.Error as exc:
            log.warning("shared state: %s; refusing a session", exc)
            return False
        if taken:
            self._held[user] = self._held.get(user, 0) + 1
        return taken

    def release(self, user: str) -> None:
        if self._held.get(user, 0) <= 0:
            return                          # extra releases are ignored, here as in the base
        super().release(user)
        self._limits._quietly(self._limits.state.logout, user)

    def held(self, user: str) -> int:
        return self._limits.state.count("user:" + user)


class SharedUploadSlots(UploadSlots):
    """``UploadSlots`` (the session context's) whose limit counts every worker's uploads.

    ``active`` still counts this process's own, so a free without a take gives
    back nothing of another worker's."""

    __slots__ = ("_limits",)

    def __init__(self, limits: SharedLimits) -> None:
        super().__init__(limits.config.max_uploads_per_user)
        self._limits = limits

    def take(self, user: str) -> bool:
        if self.active[user] >= self.limit or not self._limits.take_upload(user):
            return False
        self.active[user] += 1
        return True

    def free(self, user: str) -> None:
        if self.active[user] > 0:
            self._limits.free_upload(user)
        super().free(user)
