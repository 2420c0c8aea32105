"""User accounts, login tokens and quota figures, kept in the catalogue.

Password checks cost one scrypt call whether or not the user exists and whether
or not the password is right, and fail with one identical ``AuthFailed``, so
neither timing nor messages reveal which user names exist.  For an unknown name
the scrypt runs with the parameters most stored hashes have (``_probe_params``),
not the configured ones: after ``scrypt_n`` is raised, old and new hashes differ
in cost, and unknown names must cost what most real ones do.  ``create`` hashes
before it looks the name up, so a taken name costs the same as a free one.

Every account has a ``uid`` that is never reused and a ``generation`` bumped by
``set_password`` and ``set_disabled``: a session remembers both from its login,
and ``login_valid`` tells it cheaply when that login no longer stands (the
account was re-passworded, disabled, deleted, or deleted and created again).  Tokens are random
strings of which only the SHA-256 is stored, so a leaked database holds no usable
credential.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sqlite3
from typing import NamedTuple

from .confine import map_oserror
from .context import StoreContext
from .errors import AccountDisabled, AuthFailed, NoSuchUser, UserExists
from .logins import ADDR, USER
from .models import Usage, UserInfo
from .names import MAX_PASSWORD_CHARS, check_password, check_username, is_valid_username
from .passwords import PasswordHasher, ScryptParams, parse_params

__all__ = ["Accounts", "TokenRecords"]

_AUTH_FAILED = "invalid user name or password"
_TOKEN_FAILED = "invalid or expired token"


def _check_quota(quota: object) -> int:
    if not isinstance(quota, int) or isinstance(quota, bool) or quota < 0:
        raise ValueError("quota must be a non-negative integer number of bytes")
    return quota


#: How long the parameters of the stored hashes are trusted before being counted again
#: (another process, ``ftpd user passwd``, may have changed them).
PROBE_PARAMS_TTL = 60.0


def _info(row: sqlite3.Row) -> UserInfo:
    return UserInfo(name=row["name"], quota=row["quota"], used=row["used"],
                    created=row["created"], disabled=bool(row["disabled"]),
                    uid=row["uid"] or 0, generation=row["generation"])


class TokenRecords(NamedTuple):
    """A valid token's account, and the throttle's rows (``failures``, ``since``,
    ``locked_until``; None: no record) of the address and of the user name."""

    info: UserInfo
    addr: dict[str, float] | None
    user: dict[str, float] | None


def _record(row: sqlite3.Row, prefix: str) -> dict[str, float] | None:
    failures = row[prefix + "failures"]
    if failures is None:
        return None
    return {"failures": failures, "since": row[prefix + "since"],
            "locked_until": row[prefix + "locked_until"]}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Accounts:
    """Users, their password hashes, login tokens and quota figures.

    Owns the ``users`` and ``tokens`` rows and the creation and removal of a
    user's two folders (``homes/<user>``, ``staging/<user>``) as a whole.  It
    may not change what is inside a home or a staging folder while the user
    exists (``FileTree`` and ``UploadManager`` do that), and it reads the
    ``uploads`` rows only to report reservations.  Password hashing is the
    ``PasswordHasher``'s: one scrypt per check, known user or not.
    """

    def __init__(self, ctx: StoreContext, hasher: PasswordHasher) -> None:
        self.ctx = ctx
        self.hasher = hasher
        self._probe: tuple[float, ScryptParams] | None = None    # (counted at, params)

    def _probe_params(self) -> ScryptParams:
        """The scrypt parameters of most stored hashes (the configured ones if none).

        Counted with one grouped scan of ``users``, at most every ``PROBE_PARAMS_TTL``
        seconds; runs where ``verify_password`` runs (a worker)."""
        now = self.ctx.clock()
        cached = self._probe
        if cached is not None and now - cached[0] < PROBE_PARAMS_TTL:
            return cached[1]
        # The stored form is scrypt$n$r$p$salt$key: group by what precedes salt and key.
        row = self.ctx.db.one(
            "SELECT pwhash, COUNT(*) AS c FROM users GROUP BY "
            "substr(pwhash, 1, length(pwhash) - ?) ORDER BY c DESC LIMIT 1",
            (self.hasher.salt_and_key_chars,))
        params = (parse_params(row["pwhash"]) if row is not None else None) or self.hasher.params
        self._probe = (now, params)
        return params

    def _forget_probe(self) -> None:
        self._probe = None

    # ----- users
    def create(self, name: str, password: str, quota: int | None = None) -> UserInfo:
        check_username(name)
        check_password(password)
        quota = self.ctx.default_quota if quota is None else _check_quota(quota)
        # Hash first, whether or not the name is taken: a taken name must not answer
        # faster than a free one (the INSERT below decides).
        pwhash = self.hasher.hash(password)
        with self.ctx.user_lock(name):
            try:
                with self.ctx.db.write() as conn:
                    if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                        raise UserExists("user already exists", user=name)
                    uid = conn.execute("UPDATE counters SET value = value + 1 "
                                       "WHERE name = 'next_uid' RETURNING value - 1").fetchone()[0]
                    conn.execute(
                        "INSERT INTO users (name, pwhash, quota, used, created, disabled, uid, "
                        "generation) VALUES (?, ?, ?, 0, ?, 0, ?, 1)",
                        (name, pwhash, quota, self.ctx.clock(), uid))
                    # Folders inside the transaction: if they cannot be made, no user exists.
                    for base in (self.ctx.homes_fd, self.ctx.staging_fd):
                        try:
                            os.mkdir(name, 0o700, dir_fd=base)
                        except FileExistsError:
                            pass
                        except OSError as exc:
                            raise map_oserror(exc, "/")
            except sqlite3.IntegrityError:
                raise UserExists("user already exists", user=name)
        self._forget_probe()
        info = self.get(name)
        assert info is not None
        return info

    def delete(self, name: str) -> None:
        """Remove files first, then the row: a crash half-way leaves a user to delete again,
        never an orphaned home that a new account of the same name would inherit."""
        check_username(name)
        if self.get(name) is None:
            raise NoSuchUser("no such user", user=name)
        with self.ctx.user_lock(name):
            for base in (self.ctx.staging_fd, self.ctx.homes_fd):
                try:
                    # rmtree with dir_fd never follows symlinks inside the tree.
                    shutil.rmtree(name, dir_fd=base)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise map_oserror(exc, "/")
            with self.ctx.db.write() as conn:
                conn.execute("DELETE FROM tokens WHERE user = ?", (name,))
                conn.execute("DELETE FROM uploads WHERE user = ?", (name,))
                conn.execute("DELETE FROM login_trust WHERE uid = "
                             "(SELECT uid FROM users WHERE name = ?)", (name,))
                conn.execute("DELETE FROM users WHERE name = ?", (name,))

    def _update(self, name: str, sql: str, args: tuple[object, ...]) -> None:
        check_username(name)
        with self.ctx.db.write() as conn:
            if conn.execute(sql, args).rowcount != 1:
                raise NoSuchUser("no such user", user=name)

    def set_password(self, name: str, password: str) -> None:
        """New hash with the current scrypt parameters; existing tokens are revoked."""
        check_username(name)
        check_password(password)
        if self.get(name) is None:
            raise NoSuchUser("no such user", user=name)
        pwhash = self.hasher.hash(password)
        with self.ctx.db.write() as conn:
            if conn.execute("UPDATE users SET pwhash = ?, generation = generation + 1 "
                            "WHERE name = ?", (pwhash, name)).rowcount != 1:
                raise NoSuchUser("no such user", user=name)
            conn.execute("DELETE FROM tokens WHERE user = ?", (name,))
            # Addresses that logged in with the old password are trusted no more.
            conn.execute("DELETE FROM login_trust WHERE uid = "
                         "(SELECT uid FROM users WHERE name = ?)", (name,))
        self._forget_probe()

    def set_quota(self, name: str, quota: int) -> None:
        self._update(name, "UPDATE users SET quota = ? WHERE name = ?",
                     (_check_quota(quota), name))

    def set_disabled(self, name: str, disabled: bool) -> None:
        self._update(name, "UPDATE users SET disabled = ?, generation = generation + 1 "
                     "WHERE name = ?", (1 if disabled else 0, name))

    def login_stamp(self, name: str) -> tuple[int, int] | None:
        """``(uid, generation)`` of the account called ``name`` now, None if there is none.

        Fast (one indexed read): a session may ask it for every request.  (Any string
        may be looked up: a name that is not valid is in no row, so no pattern match
        is spent on the logged-in name asked about before each request, issue 17.)"""
        if type(name) is not str:
            return None
        row = self.ctx.db.one("SELECT uid, generation, disabled FROM users WHERE name = ?",
                              (name,))
        if row is None or row["disabled"]:
            return None
        return row["uid"], row["generation"]

    def login_valid(self, name: str, uid: int, generation: int) -> bool:
        """Whether a login of ``name`` as account ``uid`` at ``generation`` still stands:
        False once the account was re-passworded, disabled, deleted or re-created."""
        return self.login_stamp(name) == (uid, generation)

    def get(self, name: str) -> UserInfo | None:
        if not is_valid_username(name):
            return None
        row = self.ctx.db.one("SELECT * FROM users WHERE name = ?", (name,))
        return None if row is None else _info(row)

    def list(self) -> list[UserInfo]:
        return [_info(row) for row in self.ctx.db.all("SELECT * FROM users ORDER BY name")]

    def verify_password(self, name: str, password: str) -> UserInfo:
        row = None
        if is_valid_username(name):
            row = self.ctx.db.one("SELECT * FROM users WHERE name = ?", (name,))
        # Junk passwords still cost exactly one scrypt (against the real or dummy hash).
        valid = isinstance(password, str) and 1 <= len(password) <= MAX_PASSWORD_CHARS
        ok = self.hasher.verify(password if valid else "", None if row is None else row["pwhash"],
                                self._probe_params() if row is None else None)
        if not (ok and valid) or row is None:
            raise AuthFailed(_AUTH_FAILED)
        if row["disabled"]:
            raise AccountDisabled("account is disabled", user=name)
        return _info(row)

    # ----- tokens
    def issue_token(self, name: str, ttl: float = 86400) -> str:
        info = self.get(name)
        if info is None:
            raise NoSuchUser("no such user", user=name if isinstance(name, str) else None)
        if info.disabled:
            raise AccountDisabled("account is disabled", user=name)
        token = secrets.token_urlsafe(32)
        now = self.ctx.clock()
        with self.ctx.db.write() as conn:
            conn.execute("DELETE FROM tokens WHERE expires <= ?", (now,))
            conn.execute("INSERT INTO tokens (digest, user, expires, uid) VALUES (?, ?, ?, ?)",
                         (_digest(token), name, now + ttl, info.uid))
        return token

    def verify_token(self, token: str) -> UserInfo:
        if not isinstance(token, str) or not token:
            raise AuthFailed(_TOKEN_FAILED)
        row = self.ctx.db.one(
            "SELECT u.*, t.expires FROM tokens t JOIN users u ON u.name = t.user "
            "AND u.uid IS t.uid WHERE t.digest = ?", (_digest(token),))
        if row is None or row["expires"] <= self.ctx.clock() or row["disabled"]:
            raise AuthFailed(_TOKEN_FAILED)
        return _info(row)

    def verify_token_with_records(self, token: str, addr: str) -> TokenRecords:
        """``verify_token``, plus the login throttle's records (``storage.logins``) of
        ``addr`` and of the token's user name, read by the same statement: a
        reconnecting client's login then costs the reactor one SQLite statement
        (each one is a read transaction with two ``fcntl`` calls, issue 17)."""
        if not isinstance(token, str) or not token:
            raise AuthFailed(_TOKEN_FAILED)
        row = self.ctx.db.one(
            "SELECT u.*, t.expires, a.failures AS a_failures, a.since AS a_since, "
            "a.locked_until AS a_locked_until, f.failures AS u_failures, "
            "f.since AS u_since, f.locked_until AS u_locked_until "
            "FROM tokens t JOIN users u ON u.name = t.user AND u.uid IS t.uid "
            "LEFT JOIN login_failures a ON a.kind = ? AND a.key = ? "
            "LEFT JOIN login_failures f ON f.kind = ? AND f.key = u.name "
            "WHERE t.digest = ?", (ADDR, addr, USER, _digest(token)))
        if row is None or row["expires"] <= self.ctx.clock() or row["disabled"]:
            raise AuthFailed(_TOKEN_FAILED)
        return TokenRecords(_info(row), _record(row, "a_"), _record(row, "u_"))

    def revoke_token(self, token: str) -> None:
        if isinstance(token, str):
            with self.ctx.db.write() as conn:
                conn.execute("DELETE FROM tokens WHERE digest = ?", (_digest(token),))

    # ----- quota
    def usage(self, name: str) -> Usage:
        check_username(name)
        row = self.ctx.db.one(
            "SELECT quota, used, (SELECT COALESCE(SUM(reserved), 0) FROM uploads "
            "WHERE user = ?) AS reserved FROM users WHERE name = ?", (name, name))
        if row is None:
            raise NoSuchUser("no such user", user=name)
        return Usage(used=row["used"], reserved=row["reserved"], limit=row["quota"])
