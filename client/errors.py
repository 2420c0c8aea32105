"""Exceptions the client library raises, one family per kind of failure.

Callers (the CLI above all) decide what to do by family -- retry after a
dropped connection, ask for a password again after an authentication
failure, pick an exit status -- so every server error code is mapped to
exactly one subclass here.  Every exception keeps the server's stable code
and message, so nothing the server said is lost on the way to the user.
"""

from __future__ import annotations

from typing import Any

from protocol import FATAL_CODES


class FtpError(Exception):
    """Base of everything the library raises on purpose.

    ``code`` is a protocol error code (``NOT_FOUND``...) or, for conditions the
    client detects itself, one of ``CONNECTION_FAILED``, ``CONNECTION_LOST``,
    ``TIMEOUT``, ``INTEGRITY``, ``CANCELLED``.
    """

    default_code = "INTERNAL"

    def __init__(self, code: str | None = None, message: str = "",
                 details: dict[str, Any] | None = None) -> None:
        self.code = code or self.default_code
        self.message = message or self.code
        self.details = details or {}
        super().__init__(f"{self.code}: {self.message}")


class ServerError(FtpError):
    """The server refused a request with an ``error`` reply."""


class AuthError(ServerError):
    """Not logged in, wrong credentials, locked out or disabled account."""


class NotFoundError(ServerError):
    """The remote file or folder does not exist."""


class QuotaError(ServerError):
    """No room: the user's quota or the server's disk is full."""


class IntegrityError(ServerError):
    """Bytes differ from what was declared: a SHA-256 or size mismatch, found by
    either side, or a local file that changed while it was being uploaded."""

    default_code = "INTEGRITY"


class PathError(ServerError):
    """The path is malformed, exists already, is (not) a folder, or is not empty."""


class TransferError(ServerError):
    """A transfer could not start or go on: busy, too many uploads, offset, cancel."""


class RegistrationError(ServerError):
    """Self-registration refused: disabled, name taken, or rules broken."""


class RequestError(ServerError):
    """The server did not understand the request: a client bug, not a user error."""


class ConnectionLost(FtpError):
    """The connection could not be made, dropped, timed out, or the server broke
    the protocol.  The connection is closed; a transfer can be resumed on a new one."""

    default_code = "CONNECTION_LOST"


class ServerAuthError(FtpError):
    """The server could not be authenticated (exit status 9): unknown or changed
    fingerprint, a certificate chain that does not validate, a wrong host name.
    Nothing was sent to it; retrying would not help, so it is no ``ConnectionLost``."""

    default_code = "SERVER_AUTH"


class Cancelled(FtpError):
    """Raised by a progress callback (or the user) to stop a transfer.

    The library closes the connection; the server keeps an upload's partial and
    a download's ``.part`` file stays on disk, so both can be resumed.
    """

    default_code = "CANCELLED"


_FAMILIES: dict[type[ServerError], tuple[str, ...]] = {
    AuthError: ("AUTH_FAILED", "LOCKED_OUT", "ACCOUNT_DISABLED", "AUTH_REQUIRED"),
    NotFoundError: ("NOT_FOUND", "NO_SUCH_USER"),
    QuotaError: ("QUOTA_EXCEEDED", "NO_SPACE"),
    IntegrityError: ("INTEGRITY",),
    PathError: ("BAD_PATH", "EXISTS", "NOT_A_DIRECTORY", "IS_A_DIRECTORY", "NOT_EMPTY"),
    TransferError: ("CANCELLED", "UPLOAD_BUSY", "TOO_MANY_UPLOADS", "OFFSET_MISMATCH"),
    RegistrationError: ("REGISTRATION_DISABLED", "USER_EXISTS", "BAD_USERNAME",
                        "BAD_PASSWORD"),
    RequestError: ("UNKNOWN_COMMAND", "BAD_REQUEST", "BAD_STATE"),
}
_CLASS_OF_CODE: dict[str, type[ServerError]] = {
    code: cls for cls, codes in _FAMILIES.items() for code in codes
}


def error_for(code: str, message: str = "", details: dict[str, Any] | None = None) -> FtpError:
    """The exception for a server ``error`` reply.

    Fatal codes (the server closes the connection after them) become
    ``ConnectionLost`` so that callers treat them like any other drop.
    """
    if code in FATAL_CODES:
        return ConnectionLost(code, message, details)
    return _CLASS_OF_CODE.get(code, ServerError)(code, message, details)
