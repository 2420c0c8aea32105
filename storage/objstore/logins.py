"""The login throttle's records in PostgreSQL, shared by every node (issue 18).

``PgLoginLedger`` is :class:`storage.logins.LoginLedger` over the ``throttle``
and ``login_trust`` tables: the same records and the same arithmetic
(failures decay one per ``decay`` seconds, ``threshold`` failures lock for
``lockout`` seconds), so guesses spread over several nodes count together
and a lockout on one node refuses the address or name on every node.  Every
call is a database round trip: worker threads only.

``CachedLedger`` is what the daemon's ``LoginThrottle`` (which asks on the
reactor thread) is given on the object backend: it answers from a cache that
a worker fills just before each login (``refresh``) and sends every change
to PostgreSQL from one background thread, in order.  The cache may be a
moment behind the other nodes; a lockout another node started is seen at
the next login's refresh, and counting stays exact in the database (each
failure is one ``UPDATE`` of the row under its lock).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..errors import StorageError
from ..logins import ADDR, USER, FailureState, decayed, one_more_failure
from .pg import Database

__all__ = ["CachedLedger", "PgLoginLedger"]

log = logging.getLogger(__name__)

#: Rows deleted past ``max_rows`` are this share of it, so trimming is rare.
_TRIM_SHARE = 10


class PgLoginLedger:
    """Failed-login records and trusted addresses in PostgreSQL; thread-safe."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ----- failures
    def state(self, kind: int, key: str, now: float, decay: float,
              threshold: int) -> FailureState:
        row = self.db.one("SELECT failures, since, locked_until FROM throttle "
                          "WHERE kind = %s AND key = %s", (kind, key))
        failures, _, locked_until = decayed(row, now, decay, threshold)
        return FailureState(failures, locked_until)

    def fail(self, kind: int, key: str, now: float, *, decay: float, threshold: int,
             lockout: float, max_rows: int) -> tuple[FailureState, bool]:
        """One failure of ``key``, counted under the row's lock (exact across nodes)."""
        with self.db.tx() as conn:
            added = conn.execute(
                "INSERT INTO throttle (kind, key, failures, since, locked_until, last) "
                "VALUES (%s, %s, 0, %s, 0, %s) ON CONFLICT (kind, key) DO NOTHING",
                (kind, key, now, now)).rowcount
            row = conn.execute("SELECT failures, since, locked_until FROM throttle "
                               "WHERE kind = %s AND key = %s FOR UPDATE", (kind, key)).fetchone()
            failures, since, locked_until, started = one_more_failure(
                row, now, decay=decay, threshold=threshold, lockout=lockout)
            conn.execute("UPDATE throttle SET failures = %s, since = %s, locked_until = %s, "
                         "last = %s WHERE kind = %s AND key = %s",
                         (failures, since, locked_until, now, kind, key))
            if added:
                self._trim(conn, kind, max_rows)
        return FailureState(failures, locked_until), started

    @staticmethod
    def _trim(conn: Any, kind: int, max_rows: int) -> None:
        rows = conn.execute("SELECT count(*) AS n FROM throttle WHERE kind = %s",
                            (kind,)).fetchone()["n"]
        if rows > max_rows:
            keep = max_rows - max(1, max_rows // _TRIM_SHARE)
            conn.execute("DELETE FROM throttle WHERE (kind, key) IN (SELECT kind, key FROM "
                         "throttle WHERE kind = %s ORDER BY last LIMIT %s)", (kind, rows - keep))

    def clear(self, kind: int, key: str) -> bool:
        with self.db.tx() as conn:
            return bool(conn.execute("DELETE FROM throttle WHERE kind = %s AND key = %s",
                                     (kind, key)).rowcount)

    def count(self, kind: int) -> int:
        row = self.db.one("SELECT count(*) AS n FROM throttle WHERE kind = %s", (kind,))
        return int(row["n"]) if row else 0

    def prune(self, now: float, decay: float, trust_since: float) -> int:
        with self.db.tx() as conn:
            gone = 0
            if decay > 0:
                gone += conn.execute("DELETE FROM throttle WHERE locked_until <= %s "
                                     "AND since + failures * %s <= %s",
                                     (now, decay, now)).rowcount
            gone += conn.execute("DELETE FROM login_trust WHERE last < %s",
                                 (trust_since,)).rowcount
        return gone

    # ----- trusted addresses (rows go with the account: ON DELETE CASCADE)
    def trusted(self, user: str, addr: str, since: float) -> bool:
        return self.db.one("SELECT 1 AS ok FROM login_trust WHERE username = %s AND addr = %s "
                           "AND last >= %s", (user, addr, since)) is not None

    def trust(self, user: str, addr: str, now: float, refresh: float) -> None:
        if self.trusted(user, addr, now - refresh):
            return
        with self.db.tx() as conn:
            conn.execute("INSERT INTO login_trust (username, addr, last) SELECT name, %s, %s "
                         "FROM users WHERE name = %s ON CONFLICT (username, addr) "
                         "DO UPDATE SET last = EXCLUDED.last", (addr, now, user))


class CachedLedger:
    """``PgLoginLedger`` for a caller on the reactor: reads from a cache a worker
    refreshes before each login, writes sent in order from one background thread."""

    def __init__(self, ledger: PgLoginLedger, clock: Callable[[], float]) -> None:
        self.ledger = ledger
        self.clock = clock
        self._rows: dict[tuple[int, str], tuple[int, float, float]] = {}
        self._trust: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._writer = concurrent.futures.ThreadPoolExecutor(1, "ftpd-throttle-write")
        self._last: concurrent.futures.Future[Any] | None = None

    def close(self) -> None:
        self._writer.shutdown(wait=True)

    # ----- the worker side
    def refresh(self, user: str | None, addr: str, trust_since: float) -> None:
        """Load the records one login reads (the address, the user name, the trust of
        the pair).  SLOW (the database): a worker's job, before the login runs."""
        self.settle()
        keys = [(ADDR, addr)] + ([(USER, user)] if isinstance(user, str) else [])
        with self.ledger.db.tx() as conn:
            rows = {(kind, key): conn.execute(
                "SELECT failures, since, locked_until FROM throttle WHERE kind = %s "
                "AND key = %s", (kind, key)).fetchone() for kind, key in keys}
            trusted = None
            if isinstance(user, str):
                trusted = conn.execute("SELECT last FROM login_trust WHERE username = %s "
                                       "AND addr = %s", (user, addr)).fetchone()
        with self._lock:
            if len(self._rows) > 10_000:
                self._rows.clear()
                self._trust.clear()
            for k, row in rows.items():
                if row is None:
                    self._rows.pop(k, None)
                else:
                    self._rows[k] = (row["failures"], row["since"], row["locked_until"])
            if isinstance(user, str):
                if trusted is None:
                    self._trust.pop((user, addr), None)
                else:
                    self._trust[(user, addr)] = trusted["last"]
        del trust_since          # the caller's window is applied when it asks

    def settle(self, timeout: float = 10.0) -> None:
        """Wait for the writes sent so far (the next read must see them)."""
        last = self._last
        if last is not None:
            concurrent.futures.wait([last], timeout=timeout)

    def _send(self, call: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                call()
            except StorageError as exc:        # an outage: the record is a moment behind
                log.warning("login throttle write failed: %s", exc.message)
        self._last = self._writer.submit(run)

    # ----- the reactor side: LoginLedger's interface
    def state(self, kind: int, key: str, now: float, decay: float,
              threshold: int) -> FailureState:
        with self._lock:
            row = self._rows.get((kind, key))
        if row is None:
            return FailureState()
        failures, _, locked_until = decayed(
            {"failures": row[0], "since": row[1], "locked_until": row[2]},
            now, decay, threshold)
        return FailureState(failures, locked_until)

    def fail(self, kind: int, key: str, now: float, *, decay: float, threshold: int,
             lockout: float, max_rows: int) -> tuple[FailureState, bool]:
        with self._lock:
            row = self._rows.get((kind, key))
            cached = None if row is None else \
                {"failures": row[0], "since": row[1], "locked_until": row[2]}
            failures, since, locked_until, started = one_more_failure(
                cached, now, decay=decay, threshold=threshold, lockout=lockout)
            self._rows[(kind, key)] = (failures, since, locked_until)
        self._send(lambda: self.ledger.fail(kind, key, now, decay=decay, threshold=threshold,
                                            lockout=lockout, max_rows=max_rows))
        return FailureState(failures, locked_until), started

    def clear(self, kind: int, key: str) -> bool:
        with self._lock:
            had = self._rows.pop((kind, key), None) is not None
        self._send(lambda: self.ledger.clear(kind, key))
        return had

    def count(self, kind: int) -> int:
        self.settle()
        return self.ledger.count(kind)

    def prune(self, now: float, decay: float, trust_since: float) -> int:
        self._send(lambda: self.ledger.prune(now, decay, trust_since))
        return 0

    def trusted(self, user: str, addr: str, since: float) -> bool:
        with self._lock:
            last = self._trust.get((user, addr))
        return last is not None and last >= since

    def trust(self, user: str, addr: str, now: float, refresh: float) -> None:
        with self._lock:
            last = self._trust.get((user, addr))
            if last is not None and last >= now - refresh:
                return
            self._trust[(user, addr)] = now
        self._send(lambda: self.ledger.trust(user, addr, now, refresh))


__all__ += ["ADDR", "USER"]
