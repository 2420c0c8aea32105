"""Typed storage errors with stable string codes.

The daemon turns any ``StorageError`` into a wire-protocol error reply by copying
``code``, ``message`` and ``details``; the codes are therefore part of the protocol
and must never change.  One subclass per code lets callers ``except`` precisely.
"""

from __future__ import annotations

__all__ = [
    "ERRORS_BY_CODE",
    "AccountDisabled",
    "AuthFailed",
    "BadPassword",
    "BadPath",
    "BadUsername",
    "Exists",
    "IntegrityError",
    "IsADirectory",
    "NoSpace",
    "NoSuchUser",
    "NotADirectory",
    "NotEmpty",
    "NotFound",
    "OffsetMismatch",
    "QuotaExceeded",
    "StorageError",
    "StorageIOError",
    "TooManyPartials",
    "UploadBusy",
    "UserExists",
]


class StorageError(Exception):
    """Base class; never raised itself (its code exists only as a fallback)."""

    code: str = "STORAGE_ERROR"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        # Details must stay JSON-safe (str/int/float/bool/None) because the
        # daemon sends them to clients verbatim.
        self.details: dict[str, object] = dict(details)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, **{self.details!r})"

    def to_dict(self) -> dict[str, object]:
        """The wire form: ``{"code", "message", "details"}``."""
        return {"code": self.code, "message": self.message, "details": dict(self.details)}


class BadPath(StorageError):
    """Path is malformed, escapes the home, or crosses a symbolic link."""

    code = "BAD_PATH"


class NotFound(StorageError):
    code = "NOT_FOUND"


class Exists(StorageError):
    code = "EXISTS"


class NotADirectory(StorageError):
    code = "NOT_A_DIRECTORY"


class IsADirectory(StorageError):
    code = "IS_A_DIRECTORY"


class NotEmpty(StorageError):
    code = "NOT_EMPTY"


class QuotaExceeded(StorageError):
    """Raised with details ``free`` and ``needed`` (bytes)."""

    code = "QUOTA_EXCEEDED"


class UploadBusy(StorageError):
    code = "UPLOAD_BUSY"


class TooManyPartials(StorageError):
    """The user already holds ``limit`` unfinished uploads (details ``limit``): each
    costs a row, a staging file and listing time, so their number is capped."""

    code = "TOO_MANY_PARTIALS"


class OffsetMismatch(StorageError):
    """Raised with details ``expected`` (the upload's offset) and ``got``."""

    code = "OFFSET_MISMATCH"


class IntegrityError(StorageError):
    """Size or SHA-256 of an upload does not match its declaration at commit."""

    code = "INTEGRITY"


class NoSpace(StorageError):
    """The file system is full (ENOSPC / EDQUOT); the partial stays resumable."""

    code = "NO_SPACE"


class StorageIOError(StorageError):
    code = "IO_ERROR"


class AuthFailed(StorageError):
    code = "AUTH_FAILED"


class AccountDisabled(StorageError):
    code = "ACCOUNT_DISABLED"


class UserExists(StorageError):
    code = "USER_EXISTS"


class BadUsername(StorageError):
    code = "BAD_USERNAME"


class BadPassword(StorageError):
    code = "BAD_PASSWORD"


class NoSuchUser(StorageError):
    code = "NO_SUCH_USER"


ERRORS_BY_CODE: dict[str, type[StorageError]] = {
    cls.code: cls
    for cls in (
        BadPath, NotFound, Exists, NotADirectory, IsADirectory, NotEmpty, QuotaExceeded,
        UploadBusy, OffsetMismatch, IntegrityError, NoSpace, StorageIOError, AuthFailed,
        AccountDisabled, UserExists, BadUsername, BadPassword, NoSuchUser, TooManyPartials,
    )
}
