"""The login throttle's memory, kept in the catalogue so every daemon process shares it.

Two tables (schema version 2, :mod:`storage.db`):

* ``login_failures``: failed logins per user name (``USER``, known or not, so the
  rows cannot tell names apart) and per address (``ADDR``).  Failures are a leaky
  bucket: one is forgiven per ``decay`` seconds, so an address that stops guessing
  heals by itself, and one that keeps guessing is held to one guess per ``decay``
  in the long run.  ``threshold`` failures start a lockout of ``lockout`` seconds;
  after it is served the count stays just under the threshold (less what decayed
  meanwhile), so the next failure locks again.
* ``login_trust``: "this address logged in successfully as this account", keyed by
  the account's ``uid`` (never reused), so a deleted and re-created name inherits
  nothing.

Every change is one ``BEGIN IMMEDIATE`` transaction, so processes never lose each
other's updates.  The policy's numbers (``decay``, ``threshold``, ...) are the
caller's (``ftpd/throttle.py``); this module only keeps rows and does the
arithmetic inside the transaction.  Rows are bounded: fully decayed ones are
deleted, and past ``max_rows`` per kind the least recently failed go first.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from .db import Database

__all__ = ["ADDR", "USER", "FailureState", "LoginLedger", "decayed", "one_more_failure"]

USER = 0
ADDR = 1

#: Rows deleted past ``max_rows`` are this share of it, so trimming is rare.
_TRIM_SHARE = 10


@dataclass(frozen=True)
class FailureState:
    """A record as it stands at ``now``: failures not yet forgiven, and until when
    (wall-clock seconds) it is locked (0 or past: not locked)."""

    failures: int = 0
    locked_until: float = 0.0

    def locked(self, now: float) -> float:
        """Seconds of lockout left at ``now``."""
        return max(0.0, self.locked_until - now)


def decayed(row: Any, now: float, decay: float,
            threshold: int) -> tuple[int, float, float]:
    """``(failures, since, locked_until)`` of ``row`` at ``now``."""
    if row is None:
        return 0, now, 0.0
    failures, since, locked_until = row["failures"], row["since"], row["locked_until"]
    if decay > 0 and failures > 0 and now > since:
        forgiven = int((now - since) // decay)
        if forgiven >= failures:
            failures, since = 0, now
        elif forgiven > 0:
            failures, since = failures - forgiven, since + forgiven * decay
    if 0 < locked_until <= now:
        # A served lockout: the next failure locks again (unless enough decayed).
        failures = min(failures, threshold - 1)
    return failures, since, locked_until


def one_more_failure(row: Any, now: float, *, decay: float, threshold: int,
                     lockout: float) -> tuple[int, float, float, bool]:
    """``(failures, since, locked_until, started)`` after one more failure of ``row``
    (a mapping with ``failures``, ``since``, ``locked_until``, or None): the one rule
    every ledger counts by, whatever holds its rows (SQLite, PostgreSQL, a node's cache).
    ``started`` is whether this failure began a lockout."""
    failures, since, locked_until = decayed(row, now, decay, threshold)
    if failures == 0:
        since = now
    failures += 1
    started = failures >= threshold and locked_until <= now
    if started:
        locked_until = now + lockout
    return failures, since, locked_until, started


class LoginLedger:
    """Failed-login records and trusted addresses in one ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._rows: dict[int, int | None] = {USER: None, ADDR: None}   # counted lazily

    # ----- failures
    def state(self, kind: int, key: str, now: float, decay: float,
              threshold: int) -> FailureState:
        """The record of ``key`` at ``now`` (a read; nothing changes)."""
        row = self.db.one("SELECT failures, since, locked_until FROM login_failures "
                          "WHERE kind = ? AND key = ?", (kind, key))
        failures, _, locked_until = decayed(row, now, decay, threshold)
        return FailureState(failures, locked_until)

    def states(self, keys: list[tuple[int, str]], now: float, decay: float,
               threshold: int) -> list[FailureState]:
        """The records of a few ``(kind, key)`` at ``now``, in order, with one read
        (a token login asks for its address's and its user name's together)."""
        where = " OR ".join(["(kind = ? AND key = ?)"] * len(keys))
        rows = self.db.all(f"SELECT kind, key, failures, since, locked_until FROM "
                           f"login_failures WHERE {where}", [part for k in keys for part in k])
        found = {(row["kind"], row["key"]): row for row in rows}
        out = []
        for key in keys:
            failures, _, locked_until = decayed(found.get(key), now, decay, threshold)
            out.append(FailureState(failures, locked_until))
        return out

    def fail(self, kind: int, key: str, now: float, *, decay: float, threshold: int,
             lockout: float, max_rows: int) -> tuple[FailureState, bool]:
        """Count one failure of ``key``; returns its new state and whether this failure
        started a lockout."""
        with self.db.write() as conn:
            row = conn.execute("SELECT failures, since, locked_until FROM login_failures "
                               "WHERE kind = ? AND key = ?", (kind, key)).fetchone()
            failures, since, locked_until, started = one_more_failure(
                row, now, decay=decay, threshold=threshold, lockout=lockout)
            conn.execute(
                "INSERT INTO login_failures (kind, key, failures, since, locked_until, last) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET "
                "failures = excluded.failures, since = excluded.since, "
                "locked_until = excluded.locked_until, last = excluded.last",
                (kind, key, failures, since, locked_until, now))
            if row is None:
                self._grew(conn, kind, max_rows)
        return FailureState(failures, locked_until), started

    def _grew(self, conn: sqlite3.Connection, kind: int, max_rows: int) -> None:
        """A row was added: past ``max_rows`` drop the least recently failed ones."""
        rows = self._rows[kind]
        if rows is None:
            rows = conn.execute("SELECT COUNT(*) FROM login_failures WHERE kind = ?",
                                (kind,)).fetchone()[0]
        else:
            rows += 1
        if rows > max_rows:
            keep = max_rows - max(1, max_rows // _TRIM_SHARE)
            conn.execute("DELETE FROM login_failures WHERE rowid IN (SELECT rowid FROM "
                         "login_failures WHERE kind = ? ORDER BY last LIMIT ?)",
                         (kind, rows - keep))
            rows = conn.execute("SELECT COUNT(*) FROM login_failures WHERE kind = ?",
                                (kind,)).fetchone()[0]
        self._rows[kind] = rows

    def clear(self, kind: int, key: str) -> bool:
        """Forget ``key``'s failures and lockout; True if there was a record."""
        with self.db.write() as conn:
            gone = conn.execute("DELETE FROM login_failures WHERE kind = ? AND key = ?",
                                (kind, key)).rowcount
        if gone and self._rows[kind] is not None:
            self._rows[kind] = max(0, (self._rows[kind] or 0) - gone)
        return bool(gone)

    def count(self, kind: int) -> int:
        """Rows kept for ``kind`` (tests and metrics)."""
        return self.db.one("SELECT COUNT(*) AS n FROM login_failures WHERE kind = ?",
                           (kind,))["n"]

    def prune(self, now: float, decay: float, trust_since: float) -> int:
        """Delete fully decayed, unlocked records and trust older than ``trust_since``."""
        with self.db.write() as conn:
            gone = 0
            if decay > 0:
                gone += conn.execute(
                    "DELETE FROM login_failures WHERE locked_until <= ? "
                    "AND since + failures * ? <= ?", (now, decay, now)).rowcount
            gone += conn.execute("DELETE FROM login_trust WHERE last < ?",
                                 (trust_since,)).rowcount
        self._rows = {USER: None, ADDR: None}
        return gone

    # ----- trusted addresses
    def trusted(self, user: str, addr: str, since: float) -> bool:
        """Did ``addr`` log in successfully as the account now called ``user`` at or
        after ``since``?"""
        return self.db.one(
            "SELECT 1 FROM login_trust t JOIN users u ON u.uid = t.uid "
            "WHERE u.name = ? AND t.addr = ? AND t.last >= ?", (user, addr, since)) is not None

    def trust(self, user: str, addr: str, now: float, refresh: float) -> None:
        """Record a successful login of ``user`` from ``addr``; skipped when one was
        recorded less than ``refresh`` seconds ago (saves a write per login)."""
        if self.trusted(user, addr, now - refresh):
            return
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO login_trust (uid, addr, last) SELECT uid, ?, ? FROM users "
                "WHERE name = ? ON CONFLICT (uid, addr) DO UPDATE SET last = excluded.last",
                (addr, now, user))
