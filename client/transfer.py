"""One attempt at an upload or a download over one connection.

Retrying, reconnecting and local file bookkeeping (``.part`` files, hashing
prefixes) live in ``client.client``; this module only moves bytes and checks
that the server keeps to the protocol.  The rule for the connection after a
failure: an ``error`` reply that ends the transfer leaves it usable; anything
that interrupts the byte stream halfway (a cancel from the progress callback,
Ctrl-C, a local write error, a server error in the middle of an upload)
closes it, because nobody can tell any more which frames were in flight.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import BinaryIO

from protocol import DataChunk
from protocol.messages import (
    Abort,
    AbortOk,
    Cancel,
    CancelOk,
    ErrorReply,
    Get,
    GetDone,
    GetReady,
    Put,
    PutDone,
    PutReady,
)

from .connection import Connection
from .errors import FtpError, IntegrityError, ServerError
from .files import Identity, identity

#: ``progress(done_bytes, total_bytes, resumed_from)``; may raise ``Cancelled``.
Progress = Callable[[int, int, int], None]
Sink = Callable[[memoryview], None]


def changed_during_upload(name: str) -> IntegrityError:
    return IntegrityError("INTEGRITY", f"local file {name!r} changed during the upload; "
                          "it was not reported as uploaded, try again once it is stable")


def upload(conn: Connection, fileobj: BinaryIO, *, remote: str, size: int,
           sha256: str | None, before: Identity, overwrite: bool, name: str,
           progress: Progress | None, on_ready: Callable[[PutReady], None]) -> PutDone:
    """Declare the upload, send the bytes the server lacks, return ``put.done``.

    ``before`` is the file's identity when it was hashed: if it changes between
    frames the upload is cancelled, its partial discarded, and
    ``IntegrityError`` raised.
    """
    rid = conn.next_id()
    ready = conn.call(Put(id=rid, path=remote, size=size, sha256=sha256,
                          overwrite=overwrite), PutReady)
    if ready.offset > size:
        raise conn.violation(f"put.ready offset {ready.offset} is past the size {size}")
    on_ready(ready)
    offset = pos = ready.offset
    try:
        if progress:
            progress(pos, size, offset)
        while pos < size:
            count = min(conn.send_max_data, size - pos)
            if conn.send_file_frame(fileobj, pos, count) != count:
                raise changed_during_upload(name)       # it shrank: the frame was cut
            pos += count
            if identity(fileobj) != before:
                abandon_upload(conn, rid, ready.path, finished=pos == size)
                raise changed_during_upload(name)
            if pos < size and conn.pending():
                # Only an error can come now; it ends the upload server-side.
                event = conn.next_event()
                conn.raise_if_error(event, rid)
                raise conn.violation("unexpected reply in the middle of an upload")
            if progress:
                progress(pos, size, offset)
    except IntegrityError:
        raise
    except BaseException:
        conn.close()
        raise
    return conn.reply(rid, PutDone)


def abandon_upload(conn: Connection, rid: int, path: str, *, finished: bool) -> None:
    """Stop an upload whose source changed, and discard its partial.

    Best effort: on any surprise the connection is closed instead, which also
    leaves the server in a clean state (the stale partial will be restarted by
    the next ``put`` because its declaration no longer matches).
    """
    try:
        if finished:
            # Every byte is out: the server answers put.done or an error by itself.
            event = conn.next_event()
            if not (isinstance(event, (PutDone, ErrorReply)) and event.id == rid):
                conn.close()
            return
        cid = conn.next_id()
        conn.send_message(Cancel(id=cid))
        while True:
            event = conn.next_event()
            if isinstance(event, ErrorReply) and event.id == rid:
                continue                    # CANCELLED (or whatever ended the put)
            if isinstance(event, (CancelOk, ErrorReply)) and event.id == cid:
                break
            conn.close()
            return
        conn.call(Abort(id=conn.next_id(), path=path), AbortOk)
    except ServerError:
        pass                                # nothing to abort: fine
    except FtpError:
        conn.close()


def start_download(conn: Connection, remote: str, offset: int,
                   verify: bool) -> tuple[int, GetReady]:
    """Send ``get`` and return its id and ``get.ready``."""
    rid = conn.next_id()
    ready = conn.call(Get(id=rid, path=remote, offset=offset, verify=verify), GetReady)
    if ready.offset != offset or ready.size < offset:
        raise conn.violation(f"get.ready for offset {ready.offset} of {ready.size} bytes, "
                             f"asked for offset {offset}")
    if verify and ready.sha256 is None:
        conn.close()
        raise IntegrityError("INTEGRITY", "the server sent no SHA-256 to verify against")
    return rid, ready


def receive_download(conn: Connection, rid: int, ready: GetReady, sink: Sink,
                     digest: hashlib._Hash | None, progress: Progress | None) -> GetDone:
    """Hand every DATA chunk to ``sink`` (and ``digest``) until ``get.done``."""
    size, offset = ready.size, ready.offset
    expected = size - offset
    got = 0
    try:
        if progress:
            progress(offset, size, offset)
        while True:
            event = conn.next_event()
            if type(event) is DataChunk:
                data = event.data
                got += len(data)
                if got > expected:
                    raise conn.violation(f"more than the {expected} bytes announced")
                sink(data)
                if digest is not None:
                    digest.update(data)
                if progress:
                    progress(offset + got, size, offset)
                continue
            conn.raise_if_error(event, rid)
            if isinstance(event, GetDone) and event.id == rid:
                break
            raise conn.violation("unexpected reply in the middle of a download")
    except ServerError:
        raise                               # the server ended the transfer: still in sync
    except BaseException:
        conn.close()
        raise
    if got != expected or event.size != size:
        raise conn.violation(f"download ended after {got} of {expected} bytes")
    return event
