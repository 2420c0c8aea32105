"""The one translation of an exception into the wire's error reply.

Every place that answers a request with an error -- the dispatcher, a worker
job's completion, a failed upload write, a commit, an inline group -- goes
through ``error_reply``, so a code is checked against the protocol's table in
exactly one place.  A storage code the table does not know is a bug (the
storage layer and the protocol disagree): it goes out as ``IO_ERROR`` and is
logged, and tests/test_session_unit.py checks that no storage error class has
such a code.
"""

from __future__ import annotations

import logging
from typing import Any

from protocol import ErrorReply, ProtocolError
from protocol.errors import ERROR_CODES, FATAL_CODES
from storage import StorageError

log = logging.getLogger("ftpd.errors")

_SCALARS = (int, str, float, bool)


def error_reply(exc: BaseException, request_id: int | None, *, operation: str = "",
                fatal_allowed: bool = True) -> ErrorReply:
    """The error reply for ``exc`` answering ``request_id``.

    ``ProtocolError`` and ``StorageError`` carry their code.  Any other
    exception is a failure of the daemon: ``IO_ERROR`` ("<operation> failed")
    when ``operation`` names file work that ran on a worker (the client may
    retry), ``INTERNAL`` (fatal) otherwise.  ``fatal_allowed=False`` is for a
    reply that must leave the connection usable (one file of an inline group).
    """
    if isinstance(exc, ProtocolError | StorageError):
        code, message, details = exc.code, exc.message, dict(exc.details or {})
        if isinstance(exc, StorageError):    # only JSON scalars from the store go on the wire
            details = {k: v for k, v in details.items() if isinstance(v, _SCALARS)}
        if code not in ERROR_CODES:
            log.warning("error code %s is not a protocol code; sent as IO_ERROR", code)
            code = "IO_ERROR"
    elif operation:
        code, message, details = "IO_ERROR", f"{operation} failed: {exc}", {}
    else:
        code, message, details = "INTERNAL", "internal server error", {}
    if not fatal_allowed and code in FATAL_CODES:
        code = "IO_ERROR"
    return ErrorReply(id=request_id, code=code, message=message, details=details or None)


def refusal(request_id: int | None, code: str, message: str,
            details: dict[str, Any] | None = None) -> ErrorReply:
    """An error the daemon decides itself (not from an exception), checked the same way."""
    return error_reply(ProtocolError(message, code=code if code in ERROR_CODES else "IO_ERROR",
                                     **(details or {})), request_id)


def is_fatal(reply: ErrorReply) -> bool:
    """Whether sending ``reply`` ends the connection."""
    return reply.code in FATAL_CODES
