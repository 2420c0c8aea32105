"""One attempt at an upload or a download over one connection.

Retrying, restarting, parking and local file bookkeeping (``.part`` files,
hashing prefixes) live in the policies, ``client.put_policy`` and
``client.get_policy``; this module only moves bytes and checks
that the server keeps to the protocol.  The rule for the connection after a
failure: an ``error`` reply that ends the transfer leaves it usable; anything
that interrupts the byte stream halfway (a cancel from the progress callback,
Ctrl-C, a local write error, a server error in the middle of an upload)
closes it, because nobody can tell any more which frames were in flight.

Big downloads hash, and write to their file, in helper threads while the main
thread receives: the connection receives into a small ring of buffers, and a
semaphore per helper keeps it from refilling a buffer a helper has not
finished with.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from protocol import DataChunk
from protocol.digests import BLAKE3, SHA256
from protocol.messages import (
    Abort,
    AbortOk,
    Cancel,
    CancelOk,
    Commit,
    ErrorReply,
    Get,
    GetDone,
    GetReady,
    Ping,
    Pong,
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
#: ``digest(timeout)``: the whole file's digest, or None if not ready within timeout.
DeferredDigest = Callable[[float | None], "str | None"]

#: Seconds a deferred upload waits after its last byte for the local hash (the
#: server's stall timeout, 60 s by default, runs meanwhile) before it parks.
COMMIT_WAIT = 15.0
#: While parked the session is idle: ping this often to keep it open.
PARK_PING = 15.0


def changed_during_upload(name: str) -> IntegrityError:
    return IntegrityError("INTEGRITY", f"local file {name!r} changed during the upload; "
                          "it was not reported as uploaded, try again once it is stable")


@dataclass
class UploadJob:
    """Everything one upload attempt needs, in one object.

    ``before`` is the file's identity when it was hashed (or opened): if it
    changes between frames the upload is cancelled.  ``on_ready`` sees every
    ``put.ready`` (the policy learns the normalised path and the offset).
    ``deferred_sha256`` (if given) makes the put declare ``defer_sha256`` and
    supplies the digest for ``commit`` after the last byte.  ``algo`` names the
    digest of both (``sha256`` and ``deferred_sha256``): with ``"blake3"`` the
    put declares ``blake3``/``defer_blake3`` instead (a session that chose it).
    """

    fileobj: BinaryIO
    remote: str
    size: int
    before: Identity
    name: str
    sha256: str | None = None
    overwrite: bool = False
    progress: Progress | None = None
    on_ready: Callable[[PutReady], None] = field(default=lambda _ready: None)
    deferred_sha256: DeferredDigest | None = None
    #: metadata the server applies before publishing (None: not sent)
    mtime: float | None = None
    mode: int | None = None
    algo: str = SHA256


def digest_fields(algo: str, value: str | None) -> dict[str, str | None]:
    """``{"sha256": value}`` or ``{"blake3": value}``: the field that carries it."""
    return {BLAKE3 if algo == BLAKE3 else SHA256: value}


def named_digest(reply: Any, algo: str) -> str | None:
    """The ``algo`` digest a ``put.done``/``get.ready``/``hash`` reply carries."""
    return getattr(reply, BLAKE3 if algo == BLAKE3 else SHA256, None)


@dataclass(frozen=True)
class Parked:
    """A deferred upload whose digest was late: cancelled with its partial complete.

    ``path`` is where to put it again; ``done`` is set when a server without
    ``commit`` had already published it (the caller checks its hash then).
    """

    path: str
    done: PutDone | None


def upload(conn: Connection, job: UploadJob) -> PutDone | Parked:
    """Declare the upload, send the bytes the server lacks, return ``put.done``.

    If ``job.before`` no longer matches the file between frames the upload is
    cancelled, its partial discarded, and ``IntegrityError`` raised.

    With ``job.deferred_sha256`` the put declares ``defer_sha256`` instead of
    ``sha256``; after the last byte ``deferred_sha256(timeout)`` gives the whole
    file's digest (it waits for a hashing thread), which goes in ``commit``,
    and ``put.done`` answers the commit.  If the digest is not ready within
    ``COMMIT_WAIT`` the upload is cancelled (the complete partial stays on the
    server) and ``Parked`` returned: what to do then is the caller's policy.
    """
    deferred = job.deferred_sha256 is not None
    size, fileobj, name = job.size, job.fileobj, job.name
    rid = conn.next_id()
    blake3 = job.algo == BLAKE3
    ready = conn.call(Put(id=rid, path=job.remote, size=size, **digest_fields(job.algo, job.sha256),
                          overwrite=job.overwrite, defer_sha256=deferred and not blake3,
                          defer_blake3=(deferred and blake3) or None, mtime=job.mtime,
                          mode=job.mode), PutReady)
    if ready.offset > size:
        raise conn.violation(f"put.ready offset {ready.offset} is past the size {size}")
    job.on_ready(ready)
    offset = pos = ready.offset
    progress = job.progress
    try:
        if progress:
            progress(pos, size, offset)
        while pos < size:
            count = min(conn.send_max_data, size - pos)
            if conn.send_file_frame(fileobj, pos, count) != count:
                raise changed_during_upload(name)       # it shrank: the frame was cut
            pos += count
            if identity(fileobj) != job.before:
                # A deferred upload waits for its commit: cancel it even after the last byte.
                abandon_upload(conn, rid, ready.path, finished=pos == size and not deferred)
                raise changed_during_upload(name)
            if pos < size and conn.pending():
                # Only an error can come now; it ends the upload server-side.
                event = conn.next_event()
                conn.raise_if_error(event, rid)
                raise conn.violation("unexpected reply in the middle of an upload")
            if progress:
                progress(pos, size, offset)
        digest = cid = None
        if job.deferred_sha256 is not None:
            digest = job.deferred_sha256(COMMIT_WAIT)
            if digest is not None:
                if identity(fileobj) != job.before:   # it changed while it was being hashed
                    abandon_upload(conn, rid, ready.path, finished=False)
                    raise changed_during_upload(name)
                cid = conn.next_id()
                conn.send_message(Commit(id=cid, **digest_fields(job.algo, digest)))
    except IntegrityError:
        raise
    except BaseException:
        conn.close()
        raise
    if not deferred:
        return conn.reply(rid, PutDone)
    if cid is not None:
        return _commit_reply(conn, rid, cid)
    # The server would time the upload out while we hash: cancel it (in READY
    # only the idle timeout runs, and a ping resets it).
    return Parked(ready.path, _cancel(conn, rid))


def keep_alive(conn: Connection) -> None:
    """One ``ping``: resets the server's idle timeout while a parked upload waits."""
    conn.call(Ping(id=conn.next_id()), Pong)


def _commit_reply(conn: Connection, rid: int, cid: int) -> PutDone:
    """``put.done`` (or the error) for ``commit`` ``cid`` of the deferred put ``rid``.

    A server that predates ``commit`` ignores ``defer_sha256`` (an unknown
    field), commits by itself after the last byte and answers the put; it then
    refuses the commit.  That outcome is returned (or raised) as is: its
    ``put.done`` carries no ``sha256``, which tells the caller to check the
    stored file some other way.
    """
    event = conn.next_event()
    if isinstance(event, (PutDone, ErrorReply)) and event.id == rid:
        refusal = conn.next_event()
        if not (isinstance(refusal, ErrorReply) and refusal.id == cid):
            raise conn.violation(f"expected the answer to commit {cid}, "
                                 f"got {type(refusal).__name__}")
        conn.raise_if_error(event, rid)
        assert isinstance(event, PutDone)
        return event
    conn.raise_if_error(event, cid)
    if not isinstance(event, PutDone) or event.id != cid:
        raise conn.violation(f"expected put.done for commit {cid}, got "
                             f"{type(event).__name__} (id {getattr(event, 'id', None)})")
    return event


def abandon_upload(conn: Connection, rid: int, path: str, *, finished: bool) -> None:
    """Stop an upload whose source changed, and discard its partial.

    ``finished``: every byte is out and the server commits by itself (not a
    deferred upload), so there is nothing to cancel; wait for its answer.
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
        _cancel(conn, rid)
        conn.call(Abort(id=conn.next_id(), path=path), AbortOk)
    except ServerError:
        pass                                # nothing to abort: fine
    except FtpError:
        conn.close()


def _cancel(conn: Connection, rid: int) -> PutDone | None:
    """Cancel the running upload ``rid`` (its partial stays); the session is READY.

    Returns the ``put.done`` if the upload ended by itself first (a server that
    commits without waiting for ``commit``).
    """
    cid = conn.next_id()
    conn.send_message(Cancel(id=cid))
    done = None
    while True:
        event = conn.next_event()
        if isinstance(event, (PutDone, ErrorReply)) and event.id == rid:
            if isinstance(event, PutDone):
                done = event
            continue                        # CANCELLED (or whatever ended the put)
        if isinstance(event, (CancelOk, ErrorReply)) and event.id == cid:
            return done
        raise conn.violation(f"unexpected {type(event).__name__} while cancelling")


def start_download(conn: Connection, remote: str, offset: int,
                   verify: bool, algo: str = SHA256) -> tuple[int, GetReady]:
    """Send ``get`` and return its id and ``get.ready`` (which carries the ``algo``
    digest when ``verify``; BLAKE3 only in a session that chose it)."""
    rid = conn.next_id()
    ready = conn.call(Get(id=rid, path=remote, offset=offset, verify=verify,
                          digest=BLAKE3 if verify and algo == BLAKE3 else None), GetReady)
    if ready.offset != offset or ready.size < offset:
        raise conn.violation(f"get.ready for offset {ready.offset} of {ready.size} bytes, "
                             f"asked for offset {offset}")
    if verify and named_digest(ready, algo) is None:
        conn.close()
        raise IntegrityError("INTEGRITY", f"the server sent no {algo} to verify against")
    return rid, ready


#: A download with at least this many bytes to come hashes (and writes, when its
#: sink allows) in helper threads.
PIPELINE_MIN = 4 * 1024 * 1024
#: Receive buffers (1 MiB each) the helper threads may lag behind by.
RING_BUFFERS = 4
_FILL_DONE = object()
_STOP = object()


class RingReader:
    """``consume(chunk)`` in a helper thread, fed views of the connection's ring.

    ``before_fill`` is the connection's guard.  Called before every receive,
    it first queues a marker for the previous receive (all of whose chunks are
    queued by then), then takes one of ``slots`` permits; the thread gives one
    back each time it passes a marker.  So receive ``n`` waits until every
    chunk of receive ``n - slots`` -- the one that used the same buffer -- is
    consumed, and the thread never reads a buffer that is being refilled.
    Chunks are consumed in order.

    After ``consume`` fails the thread skips the rest (it keeps releasing
    buffers, never blocking the receiver); the next ``before_fill`` raises the
    error in the receiving thread, and so does ``finish``.
    """

    def __init__(self, consume: Callable[[memoryview], object], slots: int,
                 name: str = "ftpc-ring") -> None:
        self._consume = consume
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._free = threading.Semaphore(slots)
        self._fills = 0
        self._error: BaseException | None = None
        self._raised = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def before_fill(self) -> None:
        self._raise_error()
        if self._fills:
            self._queue.put(_FILL_DONE)
        self._free.acquire()
        self._fills += 1

    def feed(self, data: memoryview) -> None:
        self._queue.put(data)

    def _run(self) -> None:
        get, consume, release = self._queue.get, self._consume, self._free.release
        while True:
            item = get()
            if item is _FILL_DONE:
                release()
            elif item is _STOP:
                return
            elif self._error is None:
                try:
                    consume(item)  # type: ignore[arg-type]
                except BaseException as exc:  # noqa: BLE001 -- re-raised in the receiver
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def finish(self) -> None:
        """Wait until everything fed is consumed and the thread has ended."""
        self._queue.put(_STOP)
        self._thread.join()
        self._raise_error()


class HashThread(RingReader):
    """``digest.update`` in a helper thread: the digest is the sequential one."""

    def __init__(self, digest: Any, slots: int) -> None:
        super().__init__(digest.update, slots, "ftpc-hash")


class _Ring:
    """Several ``RingReader``s that each see every chunk; a buffer is refilled
    only when all of them are done with it."""

    def __init__(self, readers: list[RingReader]) -> None:
        self.readers = readers

    def before_fill(self) -> None:
        for reader in self.readers:
            reader.before_fill()

    def feed(self, data: memoryview) -> None:
        for reader in self.readers:
            reader.feed(data)

    def finish(self) -> None:
        """Finish every reader (even after one failed), then raise the first error."""
        error: BaseException | None = None
        for reader in self.readers:
            try:
                reader.finish()
            except BaseException as exc:  # noqa: BLE001 -- re-raised below
                error = error or exc
        if error is not None:
            raise error


class Received:
    """How many bytes of a download ``receive_download`` handed on, also when it
    raised: where a stream's retry resumes (``client.get_policy.StreamPolicy``)."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


def receive_download(conn: Connection, rid: int, ready: GetReady, sink: Sink,
                     digest: Any | None, progress: Progress | None, *,
                     threaded_sink: bool = False,
                     received: Received | None = None) -> GetDone:
    """Hand every DATA chunk to ``sink`` (and ``digest``) until ``get.done``.

    With at least ``PIPELINE_MIN`` bytes to come, the hashing runs in a
    ``HashThread``, and with ``threaded_sink`` the sink runs in a ``RingReader``
    of its own (so a slow local write does not hold up the receive); each sees
    every chunk in order, and everything is consumed before this returns.
    Otherwise ``sink`` runs in the calling thread -- called directly when there
    is no digest: a 1 GiB download is a few thousand chunks, and each layer of
    Python between the socket and the sink is paid on every one of them.
    ``received.bytes`` (if given) ends as the bytes handed on, even on error.
    """
    size, offset = ready.size, ready.offset
    expected = size - offset
    got = 0
    ring = None
    feed: Callable[[memoryview], object]
    if expected >= PIPELINE_MIN and (digest is not None or threaded_sink):
        readers: list[RingReader] = []
        if digest is not None:
            readers.append(HashThread(digest, RING_BUFFERS))
        if threaded_sink:
            readers.append(RingReader(sink, RING_BUFFERS, "ftpc-write"))
        ring = _Ring(readers)
        conn.receive_data(RING_BUFFERS, ring.before_fill)
        if threaded_sink:
            feed = ring.feed
        else:
            hash_feed = ring.feed

            def feed(data: memoryview) -> None:
                sink(data)
                hash_feed(data)
    elif digest is None:
        conn.receive_data()
        feed = sink
    else:
        conn.receive_data()
        update = digest.update

        def feed(data: memoryview) -> None:
            sink(data)
            update(data)
    next_event = conn.next_event
    try:
        if progress:
            progress(offset, size, offset)
        while True:
            event = next_event()
            if type(event) is DataChunk:
                data = event.data
                n = len(data)
                if got + n > expected:
                    raise conn.violation(f"more than the {expected} bytes announced")
                feed(data)
                got += n
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
    finally:
        if received is not None:
            received.bytes = got
        conn.receive_control()
        if ring is not None:
            ring.finish()
    if got != expected or event.size != size:
        raise conn.violation(f"download ended after {got} of {expected} bytes")
    return event
