"""Every failure the CLI can meet, as (code, one-line message, exit status).

Scripts branch on the exit status, people read the line, so both are derived
here in one place from the exception -- server errors by family, local file
errors by kind -- and the table below is what ``ftpc --help`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import (
    AuthError,
    ConnectionLost,
    FtpError,
    IntegrityError,
    NotFoundError,
    PathError,
    QuotaError,
    ServerAuthError,
)

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_AUTH = 4
EXIT_NOT_FOUND = 5
EXIT_QUOTA = 6
EXIT_INTEGRITY = 7
EXIT_CONFLICT = 8
EXIT_SERVER_AUTH = 9
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141

EXIT_TABLE = f"""\
exit status:
  {EXIT_OK:<4}success
  {EXIT_OTHER:<4}other error (the server refused for another reason, local I/O error)
  {EXIT_USAGE:<4}usage: bad command line, or no user/password available
  {EXIT_CONNECTION:<4}connection: cannot connect, connection lost, timeout, protocol violation
  {EXIT_AUTH:<4}authentication: wrong user or password, locked out, disabled account
  {EXIT_NOT_FOUND:<4}not found: the remote or local file or folder does not exist
  {EXIT_QUOTA:<4}quota: the user's quota or the server's disk is full
  {EXIT_INTEGRITY:<4}integrity: SHA-256 or size mismatch, or the local file changed during upload
  {EXIT_CONFLICT:<4}path conflict: exists (use --overwrite), is / is not a folder, not empty
  {EXIT_SERVER_AUTH:<4}server not authenticated: unknown or changed fingerprint, bad certificate
  {EXIT_INTERRUPTED:<4}interrupted (Ctrl-C); a partial transfer resumes on the next run
  {EXIT_PIPE:<4}stdout closed early (ftpc ls | head): the output was cut short, quietly
"""

_BY_FAMILY: tuple[tuple[type[FtpError], int], ...] = (
    (ServerAuthError, EXIT_SERVER_AUTH),
    (ConnectionLost, EXIT_CONNECTION),
    (AuthError, EXIT_AUTH),
    (NotFoundError, EXIT_NOT_FOUND),
    (QuotaError, EXIT_QUOTA),
    (IntegrityError, EXIT_INTEGRITY),
    (PathError, EXIT_CONFLICT),
)


class UsageError(Exception):
    """A bad command line (or shell line)."""


class SomeFailed(Exception):
    """Several files were transferred and some failed (each reported on its own line).

    The exit status is the first failure's, so scripts branch as for one file."""

    def __init__(self, failed: int, total: int, first: BaseException,
                 outcome: Any = None) -> None:
        super().__init__(f"{failed} of {total} files failed")
        self.first = first
        #: what did succeed (an ``Outcome``): printed with the error, as one document
        self.outcome = outcome


@dataclass(frozen=True)
class Failure:
    code: str
    message: str
    exit_status: int

    def line(self, prog: str = "ftpc") -> str:
        return f"{prog}: error: {self.code}: {self.message}"


def describe(exc: BaseException) -> Failure:
    """The code, message and exit status for anything a command can raise."""
    if isinstance(exc, FtpError):
        status = next((s for cls, s in _BY_FAMILY if isinstance(exc, cls)), EXIT_OTHER)
        return Failure(exc.code, exc.message + _figures(exc), status)
    if isinstance(exc, UsageError):
        return Failure("USAGE", str(exc), EXIT_USAGE)
    if isinstance(exc, SomeFailed):
        return Failure("SOME_FAILED", str(exc), describe(exc.first).exit_status)
    if isinstance(exc, KeyboardInterrupt):
        return Failure("INTERRUPTED", "interrupted; run the command again to resume",
                       EXIT_INTERRUPTED)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror or exc}"
        if isinstance(exc, FileNotFoundError):
            return Failure("NOT_FOUND", f"local {text}", EXIT_NOT_FOUND)
        if isinstance(exc, (IsADirectoryError, NotADirectoryError, FileExistsError)):
            return Failure("LOCAL_PATH", f"local {text}", EXIT_CONFLICT)
        return Failure("LOCAL_IO", f"local {text}", EXIT_OTHER)
    return Failure("INTERNAL", f"{type(exc).__name__}: {exc}", EXIT_OTHER)


def _figures(exc: FtpError) -> str:
    """A quota refusal's numbers, when the server gave them: "(needs 5.0 MiB, 1.0 MiB free)"."""
    if not isinstance(exc, QuotaError):
        return ""
    needed, free = exc.details.get("needed"), exc.details.get("free")
    if not isinstance(needed, int) or not isinstance(free, int) or "free" in exc.message:
        return ""
    from .progress import human_size

    return f" (needs {human_size(needed)}, {human_size(free)} free)"
