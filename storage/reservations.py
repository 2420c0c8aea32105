"""The ``uploads`` rows: an unfinished upload's declaration, its quota reservation and
its commit mark.

Each function runs inside a write transaction the caller opened
(``Database.write``), so a caller can group several of them into one
transaction.  Nothing here touches a file: the matching staging files are
:mod:`storage.partials`'s.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

from .db import to_i64
from .errors import NoSuchUser, QuotaExceeded

__all__ = ["CommitMark", "QuotaLedger", "account", "check_quota", "forget", "mark", "touch",
           "upsert"]


@dataclass(frozen=True)
class CommitMark:
    """What a row records just before its partial is moved into place: the partial's
    inode, and the size of the file it replaces (given back when it is accounted)."""

    dev: int
    ino: int
    old: int

    @classmethod
    def of(cls, st: os.stat_result, old: int) -> CommitMark:
        return cls(to_i64(st.st_dev), to_i64(st.st_ino), old)

    def matches(self, st: os.stat_result) -> bool:
        """Is ``st`` the marked inode (the rename into place happened)?"""
        return (to_i64(st.st_dev), to_i64(st.st_ino)) == (self.dev, self.ino)


def upsert(conn: sqlite3.Connection, user: str, path: str, size: int, sha256: str | None,
           reserved: int, now: float, resume: bool, blake3: str | None = None) -> None:
    """The upload's row, new or replacing the old one (no commit mark); a resumed
    upload keeps its creation time.  ``blake3``: declared instead of ``sha256``."""
    conn.execute(
        "INSERT INTO uploads (user, path, size, sha256, blake3, reserved, created, updated)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user, path) DO UPDATE SET"
        " size = excluded.size, sha256 = excluded.sha256, blake3 = excluded.blake3,"
        " reserved = excluded.reserved, updated = excluded.updated,"
        " created = CASE WHEN ? THEN uploads.created ELSE excluded.created END,"
        " commit_dev = NULL, commit_ino = NULL, commit_old = NULL",
        (user, path, size, sha256, blake3, reserved, now, now, resume))


def check_quota(conn: sqlite3.Connection, user: str, path: str, need: int) -> None:
    """``QuotaExceeded`` unless ``need`` more bytes fit beside what is used and what
    the user's *other* uploads reserve."""
    row = conn.execute(
        "SELECT quota, used, (SELECT COALESCE(SUM(reserved), 0) FROM uploads"
        " WHERE user = ? AND path != ?) AS others FROM users WHERE name = ?",
        (user, path, user)).fetchone()
    if row is None:
        raise NoSuchUser("no such user", user=user)
    free = row["quota"] - row["used"] - row["others"]
    if need > free:
        raise QuotaExceeded("not enough quota for this upload", free=max(0, free),
                            needed=need)


class QuotaLedger:
    """``check_quota`` for many files of one write transaction, at one read.

    The user's quota, usage and total reservation, and the reservations of the
    given paths, are read once (on the first check); ``reserve`` follows each
    ``upsert`` the caller makes.  Inside its ``BEGIN IMMEDIATE`` nobody else
    changes them, so every check answers what ``check_quota`` would have at that
    point -- without a ``SUM`` over the user's uploads per file (a group commit
    made two per file).  Valid only in the transaction it was made for, while
    the caller changes the user's rows through ``reserve`` alone.
    """

    __slots__ = ("conn", "user", "paths", "quota", "used", "reserved", "own", "missing")

    _CHUNK = 500                         # paths per IN (...) read, well under SQLite's limit

    def __init__(self, conn: sqlite3.Connection, user: str, paths: list[str]) -> None:
        self.conn, self.user, self.paths = conn, user, paths
        self.own: dict[str, int] | None = None      # read on the first check
        self.quota = self.used = self.reserved = 0
        self.missing = False

    def _load(self) -> dict[str, int]:
        row = self.conn.execute(
            "SELECT quota, used, (SELECT COALESCE(SUM(reserved), 0) FROM uploads"
            " WHERE user = ?) AS reserved FROM users WHERE name = ?",
            (self.user, self.user)).fetchone()
        own: dict[str, int] = {}
        if row is None:
            self.missing = True
        else:
            self.quota, self.used, self.reserved = row["quota"], row["used"], row["reserved"]
            paths = list(dict.fromkeys(self.paths))
            for i in range(0, len(paths), self._CHUNK):
                chunk = paths[i:i + self._CHUNK]
                marks = ", ".join("?" * len(chunk))
                for r in self.conn.execute(
                        "SELECT path, reserved FROM uploads WHERE user = ?"
                        f" AND path IN ({marks})", (self.user, *chunk)):
                    own[r["path"]] = r["reserved"]
        self.own = own
        return own

    def check(self, path: str, need: int) -> None:
        """As ``check_quota(conn, user, path, need)`` (``path`` must be one of the paths)."""
        own = self.own if self.own is not None else self._load()
        if self.missing:
            raise NoSuchUser("no such user", user=self.user)
        free = self.quota - self.used - (self.reserved - own.get(path, 0))
        if need > free:
            raise QuotaExceeded("not enough quota for this upload", free=max(0, free),
                                needed=need)

    def reserve(self, path: str, reserved: int) -> None:
        """The row of ``path`` now reserves ``reserved`` (the caller's ``upsert``)."""
        own = self.own if self.own is not None else self._load()
        self.reserved += reserved - own.get(path, 0)
        own[path] = reserved


def mark(conn: sqlite3.Connection, user: str, path: str, commit: CommitMark | None) -> None:
    """Set (before the rename into place) or clear (rolled back) the commit mark."""
    dev, ino, old = (None, None, None) if commit is None else (commit.dev, commit.ino,
                                                               commit.old)
    conn.execute("UPDATE uploads SET commit_dev = ?, commit_ino = ?, commit_old = ?"
                 " WHERE user = ? AND path = ?", (dev, ino, old, user, path))


def account(conn: sqlite3.Connection, user: str, path: str, delta: int) -> None:
    """Turn the reservation into usage: the upload row goes, ``used`` grows by ``delta``.

    Only while the row is still there: whoever finishes a commit first (the commit
    itself, ``settle`` or ``recover``, maybe in another process) accounts it, and
    nobody can account it twice."""
    conn.execute("UPDATE users SET used = MAX(0, used + ?) WHERE name = ? AND EXISTS"
                 " (SELECT 1 FROM uploads WHERE user = ? AND path = ?)",
                 (delta, user, user, path))
    forget(conn, user, path)


def forget(conn: sqlite3.Connection, user: str, path: str) -> None:
    """Drop the row and with it the reservation."""
    conn.execute("DELETE FROM uploads WHERE user = ? AND path = ?", (user, path))


def touch(conn: sqlite3.Connection, user: str, path: str, now: float) -> None:
    conn.execute("UPDATE uploads SET updated = ? WHERE user = ? AND path = ?",
                 (now, user, path))
