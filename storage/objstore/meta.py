"""``MetaStore``: everything the nodes share, in PostgreSQL (issue 18).

Users (the same fields as :mod:`storage.accounts`), login tokens (only their
SHA-256 stored), the login throttle, quotas and reservations, the folder tree
(:mod:`.namespace`), unfinished uploads and their parts (:mod:`.pending`),
the hash cache and the collector's queue.  Every operation is one
transaction on a pooled connection; an outage gives ``StorageIOError``
(``IO_ERROR``) and the pool reconnects by itself when the database is back.

Password hashing stays with the caller (``storage.passwords.PasswordHasher``
on a worker): this layer stores and returns hashes, it never computes one.
All methods block on the network: worker threads only, never the reactor.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..errors import AccountDisabled, AuthFailed, NoSuchUser, UserExists
from ..models import Usage, UserInfo
from ..names import check_username, is_valid_username
from ..store import DEFAULT_FOLDER_COST, DEFAULT_MAX_PARTIALS
from .namespace import DIR_MODE, NamespaceOps
from .pending import UploadOps
from .pg import Database, UploadLocks

__all__ = ["MetaStore", "check_limits"]

_TOKEN_FAILED = "invalid or expired token"
THROTTLE_USER = 0
THROTTLE_ADDR = 1


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _info(row: dict[str, Any]) -> UserInfo:
    return UserInfo(name=row["name"], quota=row["quota"], used=row["used"],
                    created=row["created"], disabled=bool(row["disabled"]))


def _check_quota(quota: object) -> int:
    if not isinstance(quota, int) or isinstance(quota, bool) or quota < 0:
        raise ValueError("quota must be a non-negative integer number of bytes")
    return quota


def check_limits(max_partials: object, folder_cost: object) -> None:
    """``ValueError`` for the limits ``storage.Store`` refuses (the same rules)."""
    if not isinstance(max_partials, int) or max_partials < 1:
        raise ValueError("max_partials must be a positive integer")
    if not isinstance(folder_cost, int) or folder_cost < 0:
        raise ValueError("folder_cost must be a non-negative integer")


class MetaStore(NamespaceOps, UploadOps):
    """The PostgreSQL half of the object-store backend; thread-safe.

    ``url`` is a libpq URI (``postgresql://user@host:port/db`` or
    ``postgresql:///db?host=/socket/dir``); a password belongs in ``PGPASSWORD``
    or ``~/.pgpass`` rather than the URL, and is never logged.

    One user's hoarding is bounded as on the local backend (issue 13): at most
    ``max_partials`` unfinished uploads each, and ``folder_cost`` bytes of quota
    per folder.
    """

    def __init__(self, url: str, *, default_quota: int = 1 << 30, pool_size: int = 8,
                 timeout: float = 5.0, clock: Callable[[], float] = time.time,
                 max_partials: int = DEFAULT_MAX_PARTIALS,
                 folder_cost: int = DEFAULT_FOLDER_COST) -> None:
        self.default_quota = _check_quota(default_quota)
        check_limits(max_partials, folder_cost)
        self.max_partials = max_partials
        self.folder_cost = folder_cost
        self.clock = clock
        self.db = Database(url, max_size=pool_size, timeout=timeout)
        self.locks = UploadLocks(self.db)

    def close(self) -> None:
        """Close the lock session (releasing this node's upload locks) and the pool."""
        self.locks.close()
        self.db.close()

    def __enter__(self) -> MetaStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- users
    def create_user(self, name: str, pwhash: str, quota: int | None = None) -> UserInfo:
        """The user row and their root folder, together or not at all."""
        import psycopg

        check_username(name)
        quota = self.default_quota if quota is None else _check_quota(quota)
        now = self.clock()
        try:
            with self.db.tx() as conn:
                row = conn.execute(
                    "INSERT INTO users (name, pwhash, quota, created) VALUES (%s, %s, %s, %s)"
                    " RETURNING *", (name, pwhash, quota, now)).fetchone()
                conn.execute("INSERT INTO entries (owner, parent, name, type, mtime, mode) "
                             "VALUES (%s, NULL, '', 'dir', %s, %s)", (name, now, DIR_MODE))
        except psycopg.errors.UniqueViolation:
            raise UserExists("user already exists", user=name)
        return _info(row)

    def delete_user(self, name: str) -> None:
        """Remove the user and everything they own; their blobs and multipart uploads are
        queued for the collector in the same transaction."""
        check_username(name)
        with self.db.tx() as conn:
            self.lock_user(conn, name)
            now = self.clock()
            conn.execute("INSERT INTO garbage (blob, mpu, since) SELECT blob, '', %s "
                         "FROM entries WHERE owner = %s AND type = 'file' "
                         "ON CONFLICT DO NOTHING", (now, name))
            conn.execute("INSERT INTO garbage (blob, mpu, since) SELECT blob, mpu, %s "
                         "FROM uploads WHERE owner = %s ON CONFLICT DO NOTHING", (now, name))
            # Children before parents is not needed: one statement removes the whole tree.
            conn.execute("DELETE FROM entries WHERE owner = %s", (name,))
            conn.execute("DELETE FROM users WHERE name = %s", (name,))

    def get_user(self, name: str) -> UserInfo | None:
        if not is_valid_username(name):
            return None
        row = self.db.one("SELECT * FROM users WHERE name = %s", (name,))
        return None if row is None else _info(row)

    def list_users(self) -> list[UserInfo]:
        return [_info(r) for r in self.db.all("SELECT * FROM users ORDER BY name")]

    def password_hash(self, name: str) -> tuple[str, UserInfo] | None:
        """``(pwhash, info)`` for a login check, None for an unknown name (the caller still
        spends one hash against a dummy, so timing does not tell)."""
        if not is_valid_username(name):
            return None
        row = self.db.one("SELECT * FROM users WHERE name = %s", (name,))
        return None if row is None else (row["pwhash"], _info(row))

    def _update(self, name: str, sql: str, args: tuple[Any, ...]) -> None:
        check_username(name)
        with self.db.tx() as conn:
            if conn.execute(sql, args).rowcount != 1:
                raise NoSuchUser("no such user", user=name)

    def set_password(self, name: str, pwhash: str) -> None:
        """New hash; every token of the user is revoked in the same transaction."""
        check_username(name)
        with self.db.tx() as conn:
            if conn.execute("UPDATE users SET pwhash = %s WHERE name = %s",
                            (pwhash, name)).rowcount != 1:
                raise NoSuchUser("no such user", user=name)
            conn.execute("DELETE FROM tokens WHERE username = %s", (name,))

    def set_quota(self, name: str, quota: int) -> None:
        self._update(name, "UPDATE users SET quota = %s WHERE name = %s",
                     (_check_quota(quota), name))

    def set_disabled(self, name: str, disabled: bool) -> None:
        self._update(name, "UPDATE users SET disabled = %s WHERE name = %s",
                     (bool(disabled), name))

    def usage(self, name: str) -> Usage:
        check_username(name)
        row = self.db.one(
            "SELECT quota, used, (SELECT COALESCE(SUM(reserved), 0) FROM uploads "
            "WHERE owner = %s) AS reserved FROM users WHERE name = %s", (name, name))
        if row is None:
            raise NoSuchUser("no such user", user=name)
        return Usage(used=row["used"], reserved=int(row["reserved"]), limit=row["quota"])

    # ----- tokens
    def issue_token(self, name: str, ttl: float = 86400) -> str:
        info = self.get_user(name)
        if info is None:
            raise NoSuchUser("no such user", user=name if isinstance(name, str) else None)
        if info.disabled:
            raise AccountDisabled("account is disabled", user=name)
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self.db.tx() as conn:
            conn.execute("DELETE FROM tokens WHERE expires <= %s", (now,))
            conn.execute("INSERT INTO tokens (digest, username, expires) VALUES (%s, %s, %s)",
                         (_digest(token), name, now + ttl))
        return token

    def verify_token(self, token: str) -> UserInfo:
        """Any node accepts a token issued by any other (a resumed session's login)."""
        if not isinstance(token, str) or not token:
            raise AuthFailed(_TOKEN_FAILED)
        row = self.db.one("SELECT u.*, t.expires FROM tokens t JOIN users u "
                          "ON u.name = t.username WHERE t.digest = %s", (_digest(token),))
        if row is None or row["expires"] <= self.clock() or row["disabled"]:
            raise AuthFailed(_TOKEN_FAILED)
        return _info(row)

    def revoke_token(self, token: str) -> None:
        if isinstance(token, str):
            with self.db.tx() as conn:
                conn.execute("DELETE FROM tokens WHERE digest = %s", (_digest(token),))

    # ----- login throttle, shared so that spreading guesses over nodes gains nothing
    def throttle_failure(self, kind: int, key: str, *, threshold: int,
                         lockout: float) -> tuple[int, float]:
        """Count a failed login of a user name (kind 0) or address (kind 1); returns
        ``(consecutive failures, locked_until)``.  A lapsed lockout starts again at 1."""
        now = self.clock()
        row = self.db.one(
            "INSERT INTO throttle AS t (kind, key, failures, locked_until, last) "
            "VALUES (%(k)s, %(key)s, 1, 0, %(now)s) ON CONFLICT (kind, key) DO UPDATE SET "
            "failures = CASE WHEN t.locked_until > 0 AND t.locked_until <= %(now)s THEN 1 "
            "                ELSE t.failures + 1 END, "
            "locked_until = CASE WHEN t.locked_until > 0 AND t.locked_until <= %(now)s THEN 0 "
            "                    ELSE t.locked_until END, last = %(now)s "
            "RETURNING failures, locked_until",
            {"k": kind, "key": key, "now": now})
        assert row is not None
        failures, until = int(row["failures"]), float(row["locked_until"])
        if failures >= threshold and until <= now:
            until = now + lockout
            self.db.one("UPDATE throttle SET locked_until = %s WHERE kind = %s AND key = %s "
                        "RETURNING 1", (until, kind, key))
        return failures, until

    def throttle_state(self, kind: int, key: str) -> tuple[int, float]:
        """``(failures, locked_until)``; a lapsed lockout reads as ``(0, 0)``."""
        row = self.db.one("SELECT failures, locked_until FROM throttle WHERE kind = %s "
                          "AND key = %s", (kind, key))
        if row is None or (row["locked_until"] and row["locked_until"] <= self.clock()):
            return 0, 0.0
        return int(row["failures"]), float(row["locked_until"])

    def throttle_success(self, kind: int, key: str) -> None:
        with self.db.tx() as conn:
            conn.execute("DELETE FROM throttle WHERE kind = %s AND key = %s", (kind, key))

    def throttle_prune(self, older_than: float) -> int:
        """Forget records untouched since ``older_than`` (bounds the table)."""
        with self.db.tx() as conn:
            return conn.execute("DELETE FROM throttle WHERE last < %s AND locked_until < %s",
                                (older_than, self.clock())).rowcount

    # ----- hash cache (blobs are immutable: the blob id is the whole key)
    def cached_hash(self, blob: str) -> tuple[str, int] | None:
        row = self.db.one("SELECT sha256, size FROM hashes WHERE blob = %s", (blob,))
        return None if row is None else (row["sha256"], int(row["size"]))

    def remember_hash(self, blob: str, sha256: str, size: int) -> None:
        with self.db.tx() as conn:
            conn.execute("INSERT INTO hashes (blob, size, sha256) VALUES (%s, %s, %s) "
                         "ON CONFLICT (blob) DO NOTHING", (blob, size, sha256))
            conn.execute("UPDATE entries SET sha256 = %s WHERE blob = %s AND sha256 IS NULL",
                         (sha256, blob))
