"""User accounts, login tokens and quota figures, kept in the catalogue.

Password checks cost one scrypt call whether or not the user exists and whether
or not the password is right, and fail with one identical ``AuthFailed``, so
neither timing nor messages reveal which user names exist.  Tokens are random
strings of which only the SHA-256 is stored, so a leaked database holds no usable
credential.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sqlite3

from .confine import map_oserror
from .context import StoreContext
from .errors import AccountDisabled, AuthFailed, NoSuchUser, UserExists
from .models import Usage, UserInfo
from .names import MAX_PASSWORD_CHARS, check_password, check_username, is_valid_username
from .passwords import PasswordHasher

__all__ = ["Accounts"]

_AUTH_FAILED = "invalid user name or password"
_TOKEN_FAILED = "invalid or expired token"


def _check_quota(quota: object) -> int:
    if not isinstance(quota, int) or isinstance(quota, bool) or quota < 0:
        raise ValueError("quota must be a non-negative integer number of bytes")
    return quota


def _info(row: sqlite3.Row) -> UserInfo:
    return UserInfo(name=row["name"], quota=row["quota"], used=row["used"],
                    created=row["created"], disabled=bool(row["disabled"]))


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

    # ----- users
    def create(self, name: str, password: str, quota: int | None = None) -> UserInfo:
        check_username(name)
        check_password(password)
        quota = self.ctx.default_quota if quota is None else _check_quota(quota)
        if self.get(name) is not None:  # cheap early answer; the INSERT below decides
            raise UserExists("user already exists", user=name)
        pwhash = self.hasher.hash(password)
        with self.ctx.user_lock(name):
            try:
                with self.ctx.db.write() as conn:
                    conn.execute(
                        "INSERT INTO users (name, pwhash, quota, used, created, disabled) "
                        "VALUES (?, ?, ?, 0, ?, 0)", (name, pwhash, quota, self.ctx.clock()))
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
            if conn.execute("UPDATE users SET pwhash = ? WHERE name = ?",
                            (pwhash, name)).rowcount != 1:
                raise NoSuchUser("no such user", user=name)
            conn.execute("DELETE FROM tokens WHERE user = ?", (name,))

    def set_quota(self, name: str, quota: int) -> None:
        self._update(name, "UPDATE users SET quota = ? WHERE name = ?",
                     (_check_quota(quota), name))

    def set_disabled(self, name: str, disabled: bool) -> None:
        self._update(name, "UPDATE users SET disabled = ? WHERE name = ?",
                     (1 if disabled else 0, name))

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
        ok = self.hasher.verify(password if valid else "", None if row is None else row["pwhash"])
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
            conn.execute("INSERT INTO tokens (digest, user, expires) VALUES (?, ?, ?)",
                         (_digest(token), name, now + ttl))
        return token

    def verify_token(self, token: str) -> UserInfo:
        if not isinstance(token, str) or not token:
            raise AuthFailed(_TOKEN_FAILED)
        row = self.ctx.db.one(
            "SELECT u.*, t.expires FROM tokens t JOIN users u ON u.name = t.user "
            "WHERE t.digest = ?", (_digest(token),))
        if row is None or row["expires"] <= self.ctx.clock() or row["disabled"]:
            raise AuthFailed(_TOKEN_FAILED)
        return _info(row)

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
