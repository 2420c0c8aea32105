"""One client connection: non-blocking transport plus the session state machine.

Reading: the reactor's shared receive buffer is filled with ``recv_into`` and
fed to this connection's sans-IO ``MessageStream``.  DATA payloads come out as
views into that buffer and go straight to the partial file; requests are
handled one at a time, in order; while one is in progress (a password hash on
a worker, a login delay, a commit) reading stops and later requests wait.

Inline puts (``put`` with ``inline: true``) are pipelined: the request and
its DATA are read into memory at once, and while earlier ones are being stored
on a worker (in groups, ``Store.store_small_files``) further inline puts are
read and queued.  Their replies leave strictly in request order; any other
request waits until every earlier inline put has been answered.  At most
``inline_window_files`` files / ``inline_window_bytes`` bytes wait per
connection; past that, reading stops (backpressure).

Writing: output is sent at once when the socket takes it, and only the rest is
queued; EVENT_WRITE is asked for only while something waits.  Producers (a
download's ``sendfile``, a paged listing) run only while the queue is below the
high-water mark, and reading stops while it is above it, so a client that does
not read cannot make the daemon hold more than about ``high_water`` bytes.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from protocol import (
    CancelOk,
    DataChunk,
    ErrorReply,
    GetDone,
    ProtocolError,
    Put,
    PutDone,
    Rejected,
    Reply,
    Request,
    State,
    data_header,
    encode,
    next_state,
    refusal_code,
)
from protocol.codec import MessageStream
from protocol.errors import ERROR_CODES, FATAL_CODES
from storage import SmallFile, StorageError
from storage.paths import join_user_path, split_user_path

if TYPE_CHECKING:
    from .server import Server
    from .timers import Timer

log = logging.getLogger("ftpd.conn")

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
SEND_BUDGET = 4 << 20          # bytes one connection may send per wake-up: fairness
FORCE_CLOSE_AFTER = 5.0        # seconds a closing connection may take to drain its output
MAX_DEFERRED = 64              # replies held back mid-frame before reading pauses
UPLOAD_RECVS_PER_WAKEUP = 4    # full receive buffers one upload may take per wake-up


class Download:
    """A file streaming out as DATA frames, body bytes by ``os.sendfile``."""

    __slots__ = ("request", "path", "fd", "size", "pos", "start", "frame_left", "deferred",
                 "cancel_id", "started", "frame_size")

    def __init__(self, request: Request, path: str, fd: int, size: int, offset: int,
                 frame_size: int) -> None:
        self.request = request
        self.path = path
        self.fd = fd
        self.size = size
        self.pos = offset
        self.start = offset
        self.frame_left = 0
        self.frame_size = frame_size
        self.deferred: list[bytes] = []      # replies held back until the frame ends
        self.cancel_id: int | None = None
        self.started = time.monotonic()


class InlinePut:
    """An inline put: its bytes while they arrive, then its encoded final reply."""

    __slots__ = ("request", "cwd", "target", "buf", "left", "reply", "started")

    def __init__(self, request: Request, cwd: str, refusal: bytes | None) -> None:
        self.request = request
        self.cwd = cwd
        try:       # the normalised target, so that two puts of one file never overlap
            self.target = join_user_path(split_user_path(request.path, cwd))  # type: ignore
        except StorageError:
            self.target = ""                      # the store refuses it (BAD_PATH)
        self.buf: bytearray | None = bytearray() if refusal is None else None
        self.left: int = request.size             # type: ignore[attr-defined]
        self.reply = refusal                      # None until the outcome is known
        self.started = time.monotonic()


class Connection:
    __slots__ = (
        "server", "sock", "fd", "peer", "ip", "stream", "state", "out", "out_size", "mask",
        "user", "cwd", "pending", "busy", "upload", "put_request", "committing", "download",
        "pager", "draining", "closing", "closed", "eof", "opened", "last_request",
        "last_progress", "watchdog", "force_timer", "data_frame", "closing_reason",
        "transfer_started", "upload_start", "pumping", "anonymous_since", "hashing",
        "hash_mark", "flushing", "flush_mark", "receiving", "inflight", "inflight_bytes",
        "batch", "batches_running", "inline_slot", "resuming", "storing", "__weakref__",
    )

    def __init__(self, server: Server, sock: socket.socket, peer: tuple[Any, ...]) -> None:
        cfg = server.config
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = f"{peer[0]}:{peer[1]}"
        self.ip: str = peer[0]
        self.stream = MessageStream("server", cfg.max_control_frame, cfg.max_data_frame)
        self.state = State.GREETED
        self.out: list[bytes | memoryview] = []
        self.out_size = 0
        self.mask = 0
        self.user: str | None = None
        self.cwd = "/"
        # Requests (and, behind them, copies of DATA payloads) waiting their turn.
        # (A deque costs half a KiB even empty: made when something has to wait.)
        self.pending: deque[Request | Rejected | bytes] | None = None
        self.busy = False
        self.upload: Any = None                   # storage.Upload while uploading
        self.put_request: Request | None = None
        self.committing = False
        self.download: Download | None = None
        self.pager: Iterator[Reply] | None = None
        self.draining = False
        self.closing = False
        self.closed = False
        self.eof = False
        now = time.monotonic()
        self.opened = now
        self.anonymous_since = now      # the login timeout counts from here
        self.last_request = now
        self.last_progress = now
        self.transfer_started = now
        self.watchdog: Timer | None = None
        self.force_timer: Timer | None = None
        self.data_frame = cfg.max_data_frame
        self.closing_reason = "done"
        self.upload_start = 0
        self.hashing = False            # a worker is hashing this upload's bytes
        self.hash_mark = 0              # the offset the last hash job started from
        self.flushing = False           # a worker is flushing this upload's bytes to disk
        self.flush_mark = 0             # the offset the last flush job started from
        self.pumping = False
        self.resuming = False
        self.receiving: InlinePut | None = None   # the inline put whose DATA is arriving
        self.inflight: list[InlinePut] = []       # inline puts not answered yet, in order
        self.inflight_bytes = 0                   # their buffered bytes
        self.batch: list[InlinePut] = []          # received, not yet handed to a worker
        self.batches_running = 0
        self.storing: dict[str, int] = {}          # targets of the groups being stored
        self.inline_slot = False                  # the pipeline holds one upload slot

    # ------------------------------------------------------------ lifecycle

    def start(self, greeting: bytes) -> None:
        """Register with the selector and send the (pre-encoded) greeting."""
        self.server.selector.register(self.sock, READ, self)
        self.mask = READ
        self._enqueue(greeting)
        self._pump()
        self._arm_watchdog()

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.state = State.CLOSED
        timers = self.server.timers
        timers.cancel(self.watchdog)
        timers.cancel(self.force_timer)
        if self.upload is not None and not self.committing:
            self._end_upload(released=True, result=f"interrupted ({reason})")
        if self.download is not None:
            self._end_download(f"interrupted ({reason})")
        self._drop_inline()
        self.pager = None
        self.pending = None
        self.out.clear()
        if self.mask:                      # registered: a paused connection is not
            try:
                self.server.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self.mask = 0
        try:
            self.sock.close()
        except OSError:
            pass
        self.server.forget(self)
        log.info("close %s user=%s reason=%s seconds=%.1f", self.peer, self.user or "-", reason,
                 time.monotonic() - self.opened)

    def fatal(self, code: str, message: str, request_id: int | None = None,
              details: dict[str, Any] | None = None) -> None:
        """Send an error that ends the connection, then close once it is out."""
        if self.closed:
            return
        if self.upload is not None and not self.committing:
            self._end_upload(released=True, result=f"interrupted ({code})")
        if self.download is not None:
            # Mid-frame the stream cannot carry a control frame any more.
            aborted_mid_frame = self.download.frame_left > 0
            self._end_download(f"interrupted ({code})")
            if aborted_mid_frame:
                self.close(code)
                return
        # Inline puts not answered yet never will be: the stream ends with this error.
        # Groups already on a worker finish (their files may become visible, unacknowledged).
        self._drop_inline()
        self.pending = None
        self.pager = None
        self._enqueue(encode(ErrorReply(id=request_id, code=code, message=message,
                                        details=details)))
        self.close_when_flushed(code)

    def close_when_flushed(self, reason: str) -> None:
        """Read no more requests; close once what is queued has been sent."""
        self.closing = True
        self.closing_reason = reason
        self._pump()            # usually sends it all and closes (at the latest, after the batch)

    # ------------------------------------------------------------ selector events

    def on_event(self, mask: int) -> None:
        try:
            if mask & READ and not self.closed:
                self.on_readable()
            if mask & WRITE and not self.closed:
                self._pump()
        except Exception:
            log.exception("connection %s failed; closing it", self.peer)
            self.fatal("INTERNAL", "internal server error")

    def on_readable(self) -> None:
        # An upload streams: after a full buffer there is likely more, and one more
        # recv is cheaper than a trip through select.  Bounded, for fairness.
        streaming = self.upload is not None or self.receiving is not None
        for _ in range(UPLOAD_RECVS_PER_WAKEUP if streaming else 1):
            n = self._receive()
            if n < self.server.recv_size or not streaming or self.mask & READ == 0:
                return
            streaming = self.upload is not None or self.receiving is not None

    def _receive(self) -> int:
        """One recv, fed to the protocol; returns the byte count (0: nothing more now)."""
        server = self.server
        limit = server.recv_size if self.upload is not None or self.receiving is not None \
            or self.inflight else server.control_recv_size
        try:
            n = self.sock.recv_into(server.recv_view, limit)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self.close(f"recv failed: {exc.__class__.__name__}")
            return 0
        if n == 0:
            self._on_eof()
            return 0
        self._process(server.recv_view[:n])
        return n

    def _process(self, data: memoryview) -> None:
        try:
            events = self.stream.feed(data)
        except ProtocolError as exc:
            self.fatal(exc.code, exc.message)
            return
        if not events:
            return
        # Replies to requests that arrived together leave together: hold the
        # output until the whole batch is handled, then send it in one go.
        self.pumping = True
        try:
            for event in events:
                if self.closed or self.closing:
                    break
                if self.pending:
                    # Behind a waiting request everything waits, DATA included (copied:
                    # the receive buffer is reused).  Reading is off, so this is bounded.
                    self._hold(bytes(event.data) if type(event) is DataChunk else event)
                elif type(event) is DataChunk:
                    self._on_data(event.data)
                elif self.receiving is not None:
                    self._request_inside_inline_data()
                elif self._must_wait(event):              # type: ignore[arg-type]
                    self.draining = False
                    self._hold(event)
                else:
                    self.draining = False
                    self._dispatch(event)            # type: ignore[arg-type]
        finally:
            self.pumping = False
        self._pump()

    def _hold(self, event: Request | Rejected | bytes) -> None:
        if self.pending is None:
            self.pending = deque()
        self.pending.append(event)
        self._set_reading(False)

    def _must_wait(self, request: Request | Rejected) -> bool:
        """Whether ``request`` must wait for earlier work before it is handled."""
        if self.busy or self.pager is not None:
            return True
        if type(request) is Put and request.inline:     # type: ignore[attr-defined]
            return self._pipeline_full()
        return bool(self.inflight)          # replies leave in order: after the inline puts

    def _pipeline_full(self) -> bool:
        cfg = self.server.config
        return len(self.inflight) >= cfg.inline_window_files \
            or self.inflight_bytes >= cfg.inline_window_bytes

    def _request_inside_inline_data(self) -> None:
        item = self.receiving
        assert item is not None
        self.fatal("BAD_STATE", f"a request arrived with {item.left} bytes of the inline put "
                                f"{item.request.id} still to come")

    def _on_eof(self) -> None:
        try:
            self.stream.feed_eof()
        except ProtocolError:
            self.close("peer closed inside a frame")
            return
        self.eof = True
        if (self.upload is not None and not self.committing) or self.receiving is not None:
            self.close("peer closed during upload")
            return
        self._set_reading(False)
        self._maybe_finish_closing()
        if not self.closed and not (self.busy or self.pending or self.download or self.out
                                    or self.inflight):
            self.close("peer closed")

    # ------------------------------------------------------------ requests

    def _dispatch(self, request: Request | Rejected) -> None:
        self.last_request = time.monotonic()
        if type(request) is Rejected:
            err = request.error
            self.reply_error(err.request_id, err.code, err.message)
            return
        cmd = request.cmd
        if next_state(self.state, cmd) is None:
            code = refusal_code(self.state, cmd)
            self.reply_error(request.id, code, f"{cmd} is not allowed now ({self.state.value})")
            return
        handler = self.server.handlers[cmd]
        try:
            handler(self, request)
        except StorageError as exc:
            self.reply_storage_error(request.id, exc)
        except ProtocolError as exc:
            self.reply_error(request.id, exc.code, exc.message, exc.details or None)

    def advance(self, event: str) -> None:
        """Apply the state table to an event that succeeded."""
        target = next_state(self.state, event)
        if target is None:
            raise RuntimeError(f"illegal transition {self.state} --{event}-->")
        if target is not self.state:
            self.state = target
            if target is State.ANONYMOUS:
                self.anonymous_since = time.monotonic()
            # Each state has its own timeout (login, idle, stall).  A watchdog due
            # before the new state's deadline can stay: when it fires it finds
            # nothing expired and re-arms for the real deadline.
            watchdog = self.watchdog
            if watchdog is None or watchdog.cancelled or \
                    watchdog.deadline > self._watchdog_deadline(time.monotonic())[0]:
                self.server.timers.cancel(watchdog)
                self._arm_watchdog()

    def begin_async(self) -> None:
        """A request is now in progress off the loop: stop reading until it ends."""
        self.busy = True
        self._set_reading(False)

    def end_async(self) -> None:
        """The request in progress finished: take up the ones that waited."""
        self.busy = False
        self.last_request = time.monotonic()    # server-side work does not count as idling
        self._resume()

    def _resume(self) -> None:
        if self.resuming:
            return                  # an outer call's loop goes on with the queue
        self.resuming = True
        try:
            self._take_pending()
        finally:
            self.resuming = False
        if self.closed or self.closing:
            return
        if not (self.busy or self.pending):
            if self.eof:
                if not (self.download or self.pager or self.out or self.inflight):
                    self.close("peer closed")
                return
            self._set_reading(self.out_size <= self.server.config.high_water
                              and not self._pipeline_full())

    def _take_pending(self) -> None:
        pending = self.pending
        if pending is None:
            return
        while pending and not self.closed and not self.closing \
                and self.pager is None and self.download is None:
            item = pending[0]
            if type(item) is bytes:
                pending.popleft()
                self._on_data(memoryview(item))
            elif self.receiving is not None:
                self._request_inside_inline_data()
            elif self._must_wait(item):         # type: ignore[arg-type]
                return
            else:
                pending.popleft()
                self.draining = False
                self._dispatch(item)            # type: ignore[arg-type]
        if not pending and self.pending is pending:
            self.pending = None

    def submit(self, request_id: int | None, job: Callable[[], Any],
               done: Callable[[Any, BaseException | None], None],
               if_closed: Callable[[Any, BaseException | None], None] | None = None,
               cpu: bool = False) -> None:
        """Run ``job`` on a worker, then ``done`` here -- or ``if_closed`` if the
        connection closed meanwhile.

        If ``done`` raises a storage or protocol error, it becomes the error
        reply to ``request_id`` and the connection takes up its next request.
        ``cpu`` jobs (password hashing) go to their own pool.
        """
        self.begin_async()

        def finish(result: Any, error: BaseException | None) -> None:
            if self.closed:
                if if_closed is not None:
                    if_closed(result, error)
                return
            try:
                done(result, error)
            except StorageError as exc:
                self.reply_storage_error(request_id, exc)
                self.end_async()
            except ProtocolError as exc:
                self.reply_error(request_id, exc.code, exc.message, exc.details or None)
                self.end_async()
            except Exception:
                log.exception("completion failed on %s", self.peer)
                self.fatal("INTERNAL", "internal server error")

        (self.server.auth_pool if cpu else self.server.pool).submit(job, finish)

    # ------------------------------------------------------------ replies

    def send(self, reply: Reply) -> None:
        data = encode(reply)
        download = self.download
        if download is not None and download.frame_left > 0:
            download.deferred.append(data)
            if len(download.deferred) >= MAX_DEFERRED:
                self._set_reading(False)   # a ping flood waits until the frame ends
        else:
            self._enqueue(data)
            self._pump()

    def reply_error(self, request_id: int | None, code: str, message: str,
                    details: dict[str, Any] | None = None) -> None:
        if code not in ERROR_CODES:
            code = "IO_ERROR"
        if code in FATAL_CODES:
            self.fatal(code, message, request_id, details)
            return
        self.send(ErrorReply(id=request_id, code=code, message=message, details=details or None))

    def reply_storage_error(self, request_id: int | None, exc: StorageError) -> None:
        details = {k: v for k, v in (exc.details or {}).items()
                   if isinstance(v, int | str | float | bool)}
        self.reply_error(request_id, exc.code, exc.message, details)

    def start_pager(self, pages: Iterator[Reply]) -> None:
        """Send a multi-frame reply, one page at a time, under the water marks."""
        self.pager = pages
        self._pump()

    # ------------------------------------------------------------ uploads

    def start_upload(self, request: Request, upload: Any) -> None:
        """The upload was begun (its slot taken by the caller: ``Server.take_upload_slot``)."""
        self.upload = upload
        self.put_request = request
        self.upload_start = upload.offset
        if request.defer_sha256:
            upload.expect_hash_later()
        # A hash covers the whole file, so hashing starts at 0 even for a resumed upload.
        self.hash_mark = 0
        self.flush_mark = upload.offset
        self.transfer_started = self.last_progress = time.monotonic()
        self.advance("put")
        if upload.complete() and not request.defer_sha256:
            self._commit()
        else:
            self._catch_up(upload)          # a resumed prefix is hashed from now on

    def commit_deferred(self, commit: Request) -> None:
        """``commit``: the client names the SHA-256 of a ``defer_sha256`` upload."""
        upload, put = self.upload, self.put_request
        if upload is None or put is None or not put.defer_sha256 or self.committing:
            raise ProtocolError("commit needs an upload declared with defer_sha256",
                                code="BAD_STATE")
        if not upload.complete():
            raise ProtocolError(f"commit after {upload.offset} of {upload.size} bytes",
                                code="OFFSET_MISMATCH", expected=upload.size, got=upload.offset)
        self._commit(commit.id, commit.sha256)

    def _on_data(self, view: memoryview) -> None:
        item = self.receiving
        if item is not None:
            self._on_inline_data(item, view)
            return
        if self.draining:
            return
        upload = self.upload
        if upload is None or self.committing:
            self.fatal("BAD_STATE", "DATA frame outside an upload")
            return
        if upload.offset + len(view) > upload.size:
            self.fatal("BAD_STATE", f"more data than the declared {upload.size} bytes")
            return
        try:
            upload.write(view)
        except StorageError as exc:
            request = self.put_request
            self._end_upload(released=True, result=f"failed ({exc.code})")
            self.reply_storage_error(request.id if request else None, exc)
            self.draining = True      # DATA already in flight is dropped until the next request
            return
        self.last_progress = time.monotonic()
        if upload.complete() and not self.put_request.defer_sha256:
            self._commit()
        else:
            self._catch_up(upload)

    def _catch_up(self, upload: Any) -> None:
        """Hash and flush what has arrived, on workers, while more arrives.

        Two independent jobs, at most one of each in flight: the hash must not
        wait for the disk, or it falls behind the writer (a flush of 16 MiB
        takes about as long as hashing it) and the commit is left with a long
        tail to hash.  Each job covers what was written when it started.  Once
        every byte is in (a deferred upload waiting for its ``commit``), the
        rest is caught up at once, while the client finishes its own hash.
        """
        step = 1 if upload.complete() else self.server.config.writeback_bytes
        if not self.hashing and upload.hasher is not None and \
                upload.offset - self.hash_mark >= step:
            self.hashing = True
            self.hash_mark = upload.offset

            def hashed(_: Any, error: BaseException | None) -> None:
                self.hashing = False
                if error is not None:
                    log.warning("background hash of %s failed: %s", upload.path, error)
                elif self.upload is upload and upload.complete() and not self.committing:
                    self._catch_up(upload)      # the bytes that came in meanwhile

            self.server.pool.submit(upload.hash_behind, hashed)
        if not self.flushing and upload.offset - self.flush_mark >= step:
            self.flushing = True
            self.flush_mark = upload.offset

            def flushed(_: Any, error: BaseException | None) -> None:
                self.flushing = False
                if error is not None:
                    log.warning("background flush of %s failed: %s", upload.path, error)

            self.server.pool.submit(upload.flush, flushed)

    def _commit(self, reply_id: int | None = None, sha256: str | None = None) -> None:
        """Verify, fsync and publish the upload on a worker (the slow part).

        The outcome answers ``reply_id`` -- the put's id, or a deferred upload's
        commit's id -- and ``sha256`` is the hash a commit named.
        """
        upload = self.upload
        request = self.put_request
        assert upload is not None and request is not None
        rid = request.id if reply_id is None else reply_id
        self.committing = True
        self.begin_async()

        def done(result: Any, error: BaseException | None) -> None:
            # Runs even if the connection closed meanwhile: the bookkeeping must happen.
            self.committing = False
            outcome = "ok" if error is None else f"failed ({getattr(error, 'code', 'ERROR')})"
            self._end_upload(released=False, result=outcome)
            if self.closed:
                return
            if error is None:
                self.send(PutDone(id=rid, path=result.path, size=result.size,
                                  sha256=result.sha256 if upload.sha256 else None))
            elif isinstance(error, StorageError):
                self.reply_storage_error(rid, error)
            else:
                log.error("commit of %s failed", upload.path, exc_info=error)
                self.reply_error(rid, "IO_ERROR", f"commit failed: {error}")
            self.end_async()
            self._maybe_finish_closing()

        self.server.pool.submit(lambda: upload.commit(sha256), done)

    def cancel_upload(self, cancel: Request) -> None:
        request = self.put_request
        self._end_upload(released=True, result="cancelled")
        self.reply_error(request.id if request else None, "CANCELLED",
                         "upload cancelled; the partial stays resumable")

    def _end_upload(self, *, released: bool, result: str) -> None:
        upload = self.upload
        if upload is None:
            return
        if released:
            try:
                upload.release()
            except Exception:
                log.exception("releasing upload %s failed", upload.path)
        self.server.free_upload_slot(upload.user)
        elapsed = max(1e-9, time.monotonic() - self.transfer_started)
        moved = upload.offset - self.upload_start
        log.info("upload user=%s path=%s bytes=%d seconds=%.3f rate=%.1fMB/s result=%s",
                 self.user, upload.path, moved, elapsed, moved / elapsed / 1e6, result)
        self.upload = None
        self.put_request = None
        if self.state is State.UPLOADING:
            self.advance("done")

    # ------------------------------------------------------------ inline puts

    def start_inline(self, request: Request, refusal: ErrorReply | None) -> None:
        """An inline put: read its ``size`` bytes now; store them, or drop them if refused."""
        if refusal is None and not self.inline_slot:
            if self.server.take_upload_slot(self.user):      # type: ignore[arg-type]
                self.inline_slot = True
            else:
                refusal = ErrorReply(
                    id=request.id, code="TOO_MANY_UPLOADS",
                    message=f"at most {self.server.config.max_uploads_per_user} uploads at "
                            "once per user")
        item = InlinePut(request, self.cwd, encode(refusal) if refusal is not None else None)
        self.inflight.append(item)
        if refusal is None:
            self.inflight_bytes += item.left
        self.transfer_started = self.last_progress = time.monotonic()
        if item.left == 0:
            self._inline_received(item)
        else:
            self.receiving = item
            self.advance("inline")

    def _on_inline_data(self, item: InlinePut, view: memoryview) -> None:
        n = len(view)
        if n > item.left:
            self.fatal("BAD_STATE", f"more data than the declared {item.request.size} bytes")
            return
        if item.buf is not None:
            item.buf += view
        item.left -= n
        self.last_progress = time.monotonic()
        if item.left == 0:
            self.receiving = None
            self.advance("done")
            self._inline_received(item)

    def _inline_received(self, item: InlinePut) -> None:
        if item.reply is None:
            self.batch.append(item)
            self._start_batches()
        else:
            self._flush_inline()
        if self._pipeline_full():
            self._set_reading(False)

    def _start_batches(self) -> None:
        """Hand received inline puts to workers, a group at a time (group commit)."""
        cfg = self.server.config
        store, user = self.server.store, self.user
        while self.batch and self.batches_running < cfg.inline_batches:
            # A group never overlaps a running one on a target: puts of one file stay
            # in request order (the store orders those inside one group itself).
            items = []
            for item in self.batch[:cfg.inline_batch_files]:
                if item.target in self.storing:
                    break
                items.append(item)
            if not items:
                return
            del self.batch[:len(items)]
            for item in items:
                self.storing[item.target] = self.storing.get(item.target, 0) + 1
            files = [SmallFile(path=it.request.path, data=it.buf,   # type: ignore[arg-type]
                               sha256=it.request.sha256,             # type: ignore[attr-defined]
                               overwrite=it.request.overwrite,       # type: ignore[attr-defined]
                               cwd=it.cwd) for it in items]
            self.batches_running += 1
            assert user is not None
            self.server.pool.submit(lambda files=files: store.store_small_files(user, files),
                                    lambda result, error, items=items:
                                    self._batch_done(items, result, error))

    def _batch_done(self, items: list[InlinePut], results: Any,
                    error: BaseException | None) -> None:
        # Runs even if the connection closed meanwhile: the bookkeeping must happen.
        self.batches_running -= 1
        now = time.monotonic()
        for item in items:
            left = self.storing.pop(item.target) - 1
            if left:
                self.storing[item.target] = left
        for k, item in enumerate(items):
            req = item.request
            outcome = error if error is not None else results[k]
            self.inflight_bytes -= req.size                 # type: ignore[attr-defined]
            item.buf = None
            if isinstance(outcome, StorageError):
                details = {key: v for key, v in (outcome.details or {}).items()
                           if isinstance(v, int | str | float | bool)}
                code = outcome.code if outcome.code in ERROR_CODES \
                    and outcome.code not in FATAL_CODES else "IO_ERROR"
                reply: Reply = ErrorReply(id=req.id, code=code, message=outcome.message,
                                          details=details or None)
                result = f"failed ({code})"
            elif isinstance(outcome, BaseException):
                log.error("storing inline put %s failed", req.path,  # type: ignore[attr-defined]
                          exc_info=outcome)
                reply = ErrorReply(id=req.id, code="IO_ERROR",
                                   message=f"commit failed: {outcome}")
                result = "failed (IO_ERROR)"
            else:
                reply = PutDone(id=req.id, path=outcome.path, size=outcome.size,
                                sha256=outcome.sha256)
                result = "ok"
            item.reply = encode(reply)
            log.info("upload user=%s path=%s bytes=%d seconds=%.3f inline result=%s", self.user,
                     item.target or req.path, req.size,  # type: ignore[attr-defined]
                     now - item.started, result)
        if self.closed:
            self._release_inline_slot()
            return
        self._start_batches()
        self._flush_inline()

    def _flush_inline(self) -> None:
        """Send the inline puts' replies that are next in line; then take up waiting work."""
        sent = False
        inflight = self.inflight
        while inflight and inflight[0].reply is not None:
            self._enqueue(inflight.pop(0).reply)        # type: ignore[arg-type]
            sent = True
        if not inflight:
            self._release_inline_slot()
            self.last_request = time.monotonic()    # server-side work does not count as idling
        if sent:
            self._pump()
        self._resume()
        self._maybe_finish_closing()

    def _drop_inline(self) -> None:
        self.receiving = None
        self.inflight.clear()
        self.batch.clear()
        self._release_inline_slot()

    def _release_inline_slot(self) -> None:
        if self.inline_slot and not self.inflight and self.receiving is None \
                and not self.batch and self.batches_running == 0:
            self.inline_slot = False
            self.server.free_upload_slot(self.user)         # type: ignore[arg-type]

    # ------------------------------------------------------------ downloads

    def start_download(self, download: Download) -> None:
        self.download = download
        self.transfer_started = self.last_progress = time.monotonic()
        self.advance("get")
        self._pump()

    def cancel_download(self, cancel: Request) -> None:
        assert self.download is not None
        self.download.cancel_id = cancel.id
        self._pump()

    def _end_download(self, result: str) -> None:
        download = self.download
        if download is None:
            return
        self.download = None
        try:
            os.close(download.fd)
        except OSError:
            pass
        moved = download.pos - download.start
        elapsed = max(1e-9, time.monotonic() - download.started)
        log.info("download user=%s path=%s bytes=%d seconds=%.3f rate=%.1fMB/s result=%s",
                 self.user, download.path, moved, elapsed, moved / elapsed / 1e6, result)
        if self.state is State.DOWNLOADING:
            self.advance("done")
        if download.deferred:
            for data in download.deferred:
                self._enqueue(data)

    def _download_step(self, download: Download) -> int:
        """Advance the download; returns bytes sent, 0 at a frame boundary, -1 when blocked."""
        if download.frame_left == 0:
            if download.deferred:
                for data in download.deferred:
                    self._enqueue(data)
                download.deferred.clear()
            if download.cancel_id is not None:
                cancel_id = download.cancel_id
                request = download.request
                self._end_download("cancelled")
                self.send(ErrorReply(id=request.id, code="CANCELLED", message="download cancelled"))
                self.send(CancelOk(id=cancel_id))
                self._resume()
                return 0
            remaining = download.size - download.pos
            if remaining == 0:
                request = download.request
                self._end_download("ok")
                self.send(GetDone(id=request.id, path=download.path, size=download.size))
                self._resume()
                return 0
            download.frame_left = min(download.frame_size, remaining)
            self._enqueue(data_header(download.frame_left))
            return 0
        if not self.server.config.use_sendfile:
            chunk = os.pread(download.fd, min(download.frame_left, 256 * 1024), download.pos)
            if not chunk:
                self.close("file shrank during download")
                return -1
            self._enqueue(chunk)
            download.pos += len(chunk)
            download.frame_left -= len(chunk)
            return 0
        try:
            sent = os.sendfile(self.fd, download.fd, download.pos, download.frame_left)
        except (BlockingIOError, InterruptedError):
            return -1
        except OSError as exc:
            # The peer vanished mid-frame (EPIPE, ECONNRESET) or the file failed: the
            # frame cannot be finished, so the connection ends (as _send_queued does).
            self.close(f"send failed: {exc.__class__.__name__}")
            return -1
        if sent == 0:
            # The file shrank under us; the frame promised bytes it cannot carry.
            self.close("file shrank during download")
            return -1
        download.pos += sent
        download.frame_left -= sent
        self.last_progress = time.monotonic()
        return sent

    # ------------------------------------------------------------ output machinery

    def _enqueue(self, data: bytes | memoryview) -> None:
        self.out.append(data)
        self.out_size += len(data)

    def _pump(self) -> None:
        """Send what is queued, then let producers add more while under the high-water mark."""
        if self.pumping:
            return                          # the outer call's loop will send it
        self.pumping = True
        try:
            self._pump_once()
        finally:
            self.pumping = False

    def _pump_once(self) -> None:
        high = self.server.config.high_water
        budget = SEND_BUDGET
        blocked = False
        while not self.closed and budget > 0:
            if self.out:
                sent = self._send_queued()
                if sent < 0:
                    return                  # connection closed
                if self.out:
                    blocked = True
                    break
                budget -= sent
                continue
            download = self.download
            if download is not None:
                sent = self._download_step(download)
                if sent < 0:
                    blocked = True
                    break
                budget -= sent
                continue
            if self.pager is not None and self.out_size < high:
                page = next(self.pager, None)
                if page is None:
                    self.pager = None
                    self._resume()
                else:
                    self._enqueue(encode(page))
                continue
            break
        if self.closed:
            return
        if budget <= 0 and (self.out or self.download is not None or self.pager is not None):
            blocked = True                 # yield to other connections; come back when writable
        self._set_writing(blocked)
        if self.out_size > high:
            self._set_reading(False)
        elif self.out_size <= self.server.config.low_water and not (
                self.busy or self.pending or self.closing or self.eof or self._pipeline_full()
                or (self.download is not None and len(self.download.deferred) >= MAX_DEFERRED)):
            self._set_reading(True)
        self._maybe_finish_closing()

    def _send_queued(self) -> int:
        out = self.out
        if len(out) > 1 and all(len(chunk) < 65536 for chunk in out):
            out[:] = [b"".join(out)]    # coalesce small replies into one send
        chunk = out[0]
        try:
            sent = self.sock.send(chunk)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self.close(f"send failed: {exc.__class__.__name__}")
            return -1
        self.out_size -= sent
        if sent == len(chunk):
            out.pop(0)
        else:
            out[0] = memoryview(chunk)[sent:]
        return sent

    def _maybe_finish_closing(self) -> None:
        if not self.closing or self.closed:
            return
        if not self.out and self.download is None and not self.committing \
                and not self.inflight:
            self.close(self.closing_reason)
            return
        # Still sending (or committing): read nothing more, and do not wait
        # forever for a peer that does not read.
        self._set_reading(False)
        if self.force_timer is None:
            reason = self.closing_reason
            self.force_timer = self.server.timers.call_later(
                FORCE_CLOSE_AFTER, lambda: self.close(f"{reason}; peer did not read"))

    def _set_reading(self, on: bool) -> None:
        if on and (self.closing or self.eof):
            on = False
        self._update_mask((self.mask | READ) if on else (self.mask & ~READ))

    def _set_writing(self, on: bool) -> None:
        self._update_mask((self.mask | WRITE) if on else (self.mask & ~WRITE))

    def _update_mask(self, mask: int) -> None:
        if mask == self.mask or self.closed:
            return
        selector = self.server.selector
        if self.mask == 0:
            selector.register(self.sock, mask, self)
        elif mask == 0:
            selector.unregister(self.sock)
        else:
            selector.modify(self.sock, mask, self)
        self.mask = mask

    # ------------------------------------------------------------ timeouts

    def _watchdog_deadline(self, now: float) -> tuple[float, str]:
        """When this connection times out in its current state, and why."""
        cfg = self.server.config
        if self.busy or self.committing or (self.inflight and self.receiving is None):
            return now + 1.0, ""                # work in progress is not the client's fault
        if self.state in (State.GREETED, State.ANONYMOUS):
            return self.anonymous_since + cfg.login_timeout, "login"
        if self.upload is not None or self.download is not None or self.receiving is not None:
            return self.last_progress + cfg.stall_timeout, "transfer stalled"
        return self.last_request + cfg.idle_timeout, "idle"

    def _arm_watchdog(self) -> None:
        if self.closed:
            return
        now = time.monotonic()
        deadline, what = self._watchdog_deadline(now)
        if now >= deadline and what:
            log.info("timeout %s user=%s (%s)", self.peer, self.user or "-", what)
            self.watchdog = None
            self.fatal("TIMEOUT", f"{what} timeout")
            return
        self.watchdog = self.server.timers.call_later(deadline - now, self._arm_watchdog)
