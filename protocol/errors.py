"""Stable error codes and the one exception hierarchy of the wire protocol.

Every error that crosses the wire is a code from ``ERROR_CODES`` plus a human
message.  Codes are strings so that they stay readable in logs and in other
languages' clients; they never change meaning once published.  The storage
layer raises its own exceptions with the same code strings, and the daemon
passes those codes through unchanged.
"""

from __future__ import annotations

from typing import Any

#: code -> one-line meaning.  docs/PROTOCOL.md renders the same table.
ERROR_CODES: dict[str, str] = {
    # framing and message layer (the connection is closed after these)
    "BAD_FRAME": "unknown frame type, empty frame, or EOF inside a frame",
    "FRAME_TOO_LARGE": "a frame header declared more bytes than the peer's limit",
    "BAD_MESSAGE": "a control frame that is not a valid JSON object of the right shape",
    "VERSION_MISMATCH": "the client speaks a protocol version the server does not",
    # request layer (the connection stays open)
    "UNKNOWN_COMMAND": "the cmd field names no command",
    "BAD_REQUEST": "a field is missing, of the wrong type or out of range",
    "BAD_STATE": "the command is not allowed in the connection's current state",
    "AUTH_REQUIRED": "log in first",
    "AUTH_FAILED": "unknown user, wrong password, or invalid token (deliberately not told apart)",
    "LOCKED_OUT": "too many failed logins from this user or address; try again later",
    "ACCOUNT_DISABLED": "the account exists but is disabled",
    "REGISTRATION_DISABLED": "the server does not allow self-registration",
    "USER_EXISTS": "that user name is taken",
    "BAD_USERNAME": "the user name breaks the naming rules",
    "BAD_PASSWORD": "the password breaks the length rules",
    "NO_SUCH_USER": "no such user (administrative operations only)",
    "BAD_PATH": "the path is malformed, escapes the home, or crosses a symlink",
    "NOT_FOUND": "no such file or folder",
    "EXISTS": "the target exists and overwrite was not asked for",
    "NOT_A_DIRECTORY": "a folder was expected",
    "IS_A_DIRECTORY": "a file was expected",
    "NOT_EMPTY": "the folder is not empty",
    "QUOTA_EXCEEDED": "the upload does not fit in the user's free space",
    "TOO_MANY_UPLOADS": "the user already has the maximum number of uploads running",
    "UPLOAD_BUSY": "another connection is writing this upload right now",
    "TOO_MANY_PARTIALS":
        "the user has the maximum number of unfinished uploads; finish or abort one",
    "OFFSET_MISMATCH": "data arrived for an offset other than the upload's current one",
    "INTEGRITY": "size or SHA-256 of the received file differs from what was declared",
    "CANCELLED": "the transfer was cancelled; an upload's partial stays resumable",
    "NO_SPACE": "the server's disk is full; the partial stays resumable",
    "IO_ERROR": "the server's file system failed",
    "TOO_MANY_CONNECTIONS": "the server, this address or this user has too many connections",
    "TIMEOUT": "the connection was idle, stalled or too slow to log in",
    "SHUTTING_DOWN": "the server is stopping",
    "LOGIN_REVOKED": "the account's password changed, or it was disabled or deleted: log in again",
    "INTERNAL": "a bug in the server; the connection is closed",
}

#: Codes after which the sender closes the connection: the byte stream can no
#: longer be trusted to be in sync.
FATAL_CODES = frozenset(
    {"BAD_FRAME", "FRAME_TOO_LARGE", "BAD_MESSAGE", "VERSION_MISMATCH",
     "TOO_MANY_CONNECTIONS", "TIMEOUT", "SHUTTING_DOWN", "LOGIN_REVOKED",
     "INTERNAL"}
)


class ProtocolError(Exception):
    """A violation of the wire protocol, carrying its stable code.

    ``request_id`` is set when the offending request's id could be read, so the
    error frame can echo it.
    """

    code = "BAD_MESSAGE"

    def __init__(self, message: str, *, code: str | None = None,
                 request_id: int | None = None, **details: Any) -> None:
        super().__init__(message)
        if code is not None:
            if code not in ERROR_CODES:
                raise ValueError(f"unknown error code {code!r}")
            self.code = code
        self.message = message
        self.request_id = request_id
        self.details = details

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_CODES

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}: {self.message})"


class BadFrame(ProtocolError):
    code = "BAD_FRAME"


class FrameTooLarge(ProtocolError):
    code = "FRAME_TOO_LARGE"


class BadMessage(ProtocolError):
    code = "BAD_MESSAGE"


class BadRequest(ProtocolError):
    """A well-formed JSON object whose fields are wrong; the connection survives."""

    code = "BAD_REQUEST"


class UnknownCommand(BadRequest):
    code = "UNKNOWN_COMMAND"
