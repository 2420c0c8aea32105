"""Inline puts: many small files on one connection, pipelined (protocol section 7.7).

Kept apart from ``transfer`` (one resumable upload or download at a time)
because its rules differ: nothing is resumed, every request and its bytes go
out without waiting, and the replies are matched in request order.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from protocol import encode, encode_data
from protocol.messages import Put, PutDone

from .connection import Connection
from .errors import ConnectionLost, FtpError, IntegrityError


class InlineFile(NamedTuple):
    """One small file read whole, ready to go as an inline put."""

    index: int              # its place in the caller's list
    local: str
    remote: str
    data: bytes
    sha256: str | None


#: ``on_result(file, put.done or the exception)``, called in request order.
InlineResult = Callable[[InlineFile, "PutDone | FtpError"], None]


class InlinePipe:
    """Inline puts on one connection with at most ``window`` awaiting their reply.

    ``send`` writes the request and all its DATA without waiting; replies are
    read (in request order, as the protocol promises) whenever the window is
    full, and by ``drain``.  A server error fails only its file; a lost
    connection or a protocol violation raises ``ConnectionLost`` (the files
    still waiting are then reported by the caller).
    """

    def __init__(self, conn: Connection, window: int, overwrite: bool,
                 on_result: InlineResult) -> None:
        self.conn = conn
        self.window = max(1, window)
        self.overwrite = overwrite
        self.on_result = on_result
        self.waiting: deque[tuple[int, InlineFile]] = deque()

    def send(self, f: InlineFile) -> None:
        while len(self.waiting) >= self.window:
            self._settle_one()
        conn = self.conn
        rid = conn.next_id()
        try:
            mtime: float | None = max(0.0, os.stat(f.local).st_mtime)   # kept, as by put
        except OSError:
            mtime = None
        parts = [encode(Put(id=rid, path=f.remote, size=len(f.data), sha256=f.sha256,
                            overwrite=self.overwrite, inline=True, mtime=mtime))]
        step = conn.send_max_data
        view = memoryview(f.data)
        for start in range(0, len(view), step):
            parts.append(encode_data(view[start:start + step]))
        self.waiting.append((rid, f))
        conn.send(b"".join(parts))

    def drain(self) -> None:
        while self.waiting:
            self._settle_one()

    def _settle_one(self) -> None:
        rid, f = self.waiting[0]
        conn = self.conn
        event = conn.next_event()
        try:
            conn.raise_if_error(event, rid)
        except ConnectionLost:
            raise
        except FtpError as exc:
            self.waiting.popleft()
            self.on_result(f, exc)
            return
        if not isinstance(event, PutDone) or event.id != rid:
            raise conn.violation(f"expected put.done for request {rid}, got {event!r:.200}")
        self.waiting.popleft()
        if event.size != len(f.data) or (f.sha256 is not None and event.sha256 != f.sha256):
            self.on_result(f, IntegrityError(
                "INTEGRITY", f"the server stored {event.size} bytes with SHA-256 "
                             f"{event.sha256}, not what was sent"))
            return
        self.on_result(f, event)
