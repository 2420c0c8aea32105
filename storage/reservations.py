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

__all__ = ["CommitMark", "account", "check_quota", "forget", "mark", "touch", "upsert"]


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
           reserved: int, now: float, resume: bool) -> None:
    """The upload's row, new or replacing the old one (no commit mark); a resumed
    upload keeps its creation time."""
    conn.execute(
        "INSERT INTO uploads (user, path, size, sha256, reserved, created, updated)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user, path) DO UPDATE SET"
        " size = excluded.size, sha256 = excluded.sha256,"
        " reserved = excluded.reserved, updated = excluded.updated,"
        " created = CASE WHEN ? THEN uploads.created ELSE excluded.created END,"
        " commit_dev = NULL, commit_ino = NULL, commit_old = NULL",
        (user, path, size, sha256, reserved, now, now, resume))


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
