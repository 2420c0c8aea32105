"""Sessions end when their login stops standing (issue 13, item 6).

An account's ``uid`` (never reused) and ``generation`` (bumped by ``ftpd user
passwd`` and ``disable``) are taken at login; ``Store.login_valid`` says, with
one indexed read of ``users.db``, whether that login still stands -- false after
a new password, a disable, a delete, or a delete and a new ``add`` of the same
name.  The database is shared, so a change made by ``ftpd user`` in another
process (or another daemon process) is seen at once.

Two checks, because each covers what the other cannot:

* **before requests run**: once per read from the socket that carries a request
  or the last bytes of an upload (``SessionGuard._checks_login``), and once per
  batch of requests that waited (on the reactor: one indexed read, tens of microseconds
  at most, so a pipelined batch pays it once and a request-reply client once
  per request, beside its own round trip).  This one is what makes "a revoked
  session never touches the files again" hold for every request that arrives
  after the revocation: a re-created name's new owner can have files within a
  second of the ``add``.
* **a sweep every ``SWEEP_INTERVAL`` (1 s)** for sessions that send no
  requests: an idle one, or one streaming DATA into an upload.  The sweep asks
  once per distinct login (not per session), on a worker, and ends every
  session of a login that no longer stands.

On the object backend (``store.remote``) the check before requests is the
sweep's verdict instead: there ``login_valid`` is a PostgreSQL round trip,
which must not run on the reactor (nor stall it, or fail, for ``timeout``
seconds during a database outage).  A revoked session there may go on for
up to ``SWEEP_INTERVAL`` before the sweep ends it (docs/SECURITY.md).

A revoked session is sent ``LOGIN_REVOKED`` (fatal) and closed; its upload is
released, never committed (the store already deleted a deleted account's
partials; after ``passwd`` or ``disable`` the partial stays resumable by the
next valid login).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from storage import Store

    from .timers import Timer, TimerHeap
    from .workers import WorkerPool

log = logging.getLogger("ftpd.conn")

#: Seconds between two sweeps of the logged-in sessions (at most this long may a
#: session that sends nothing outlive its revocation).
SWEEP_INTERVAL = 1.0

Login = tuple[str, int, int]        # (user name, uid, generation) at login


class Revocable(Protocol):
    def revoke(self) -> None: ...


class LoginWatch:
    """The logged-in sessions of this process, grouped by login, and the sweep timer.

    Reactor thread only (the sweep's database reads run on a worker).
    """

    __slots__ = ("store", "timers", "pool", "logins", "timer", "sweeping")

    def __init__(self, store: Store, timers: TimerHeap, pool: WorkerPool) -> None:
        self.store = store
        self.timers = timers
        self.pool = pool
        self.logins: dict[Login, set[Revocable]] = {}
        self.timer: Timer | None = None
        self.sweeping = False

    def valid(self, login: Login) -> bool:
        """The per-request check: one indexed read (the sweep's, on a remote store)."""
        if getattr(self.store, "remote", False):
            return login in self.logins      # the sweep drops a login it revoked
        return self.store.login_valid(*login)

    def watch(self, login: Login, session: Revocable) -> None:
        self.logins.setdefault(login, set()).add(session)
        if self.timer is None:
            self.timer = self.timers.call_later(SWEEP_INTERVAL, self._sweep)

    def unwatch(self, login: Login, session: Revocable) -> None:
        sessions = self.logins.get(login)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self.logins[login]

    def _sweep(self) -> None:
        self.timer = None
        if not self.logins:
            return
        if not self.sweeping:
            self.sweeping = True
            keys = list(self.logins)
            store = self.store
            self.pool.submit(lambda: [k for k in keys if not store.login_valid(*k)],
                             self._swept)
        self.timer = self.timers.call_later(SWEEP_INTERVAL, self._sweep)

    def _swept(self, revoked: Any, error: BaseException | None) -> None:
        self.sweeping = False
        if error is not None:
            log.warning("checking logins failed: %s", error)
            return
        for login in revoked:
            for session in list(self.logins.pop(login, ())):
                session.revoke()

