"""One client session: the protocol state machine between a transport and the handlers.

Bytes come in through ``data_received`` (a view into the reactor's shared
buffer) and go to this session's sans-IO ``MessageStream``.  DATA payloads go
straight to the upload or the inline put being received; requests are handled
one at a time, in order, through the handler table.  While a request's
deferred job runs (a password hash, a listing, a commit), while a multi-page
reply is produced, or while inline puts are waiting for their answers,
later requests wait in ``waiting`` and reading stops.

The state lives in ``protocol/state.py``'s table -- including ``COMMITTING``
and ``CLOSING`` -- and in which objects exist (``job``, ``upload``,
``download``, ``pager``, ``inline``), never in flags.  Whether to read is
decided in one place (``_update_reading``), whether the session is over in
another (``_settle``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
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
from protocol.state import SERVING
from storage import StorageError

from .errors import error_reply, is_fatal, refusal
from .inline import InlinePipeline
from .jobs import Deferred, Finish, Outcome, Paged
from .transfers import DownloadProducer, UploadTransfer

if TYPE_CHECKING:
    from .context import SessionContext
    from .timers import Timer
    from .transport import PlainTransport

log = logging.getLogger("ftpd.conn")

#: Seconds a closing session may take to drain its output before it is cut.
FORCE_CLOSE_AFTER = 5.0
_S = State


class Session:
    """Owns one client's protocol state: state, user, working folder, waiting requests,
    the job in progress, the transfer objects and the watchdog.

    It reaches the network only through its transport (``write``, ``send_file``,
    ``pause_reading``/``resume_reading``, ``close``/``abort``) and the daemon only
    through its ``SessionContext`` (config, store, pools, timers, throttle, upload
    slots, handler table).  It may not touch the socket, the selector, another
    session or the ``Server``.
    """

    __slots__ = ("ctx", "transport", "stream", "state", "user", "cwd", "data_frame", "waiting",
                 "job", "upload", "download", "pager", "inline", "discard", "watchdog", "opened",
                 "anonymous_since", "last_request", "last_progress", "close_reason",
                 "output_paused", "peer_eof", "__weakref__")

    def __init__(self, ctx: SessionContext, transport: PlainTransport) -> None:
        cfg = ctx.config
        self.ctx = ctx
        self.transport = transport
        self.stream = MessageStream("server", cfg.max_control_frame, cfg.max_data_frame)
        self.state = _S.GREETED
        self.user: str | None = None
        self.cwd = "/"
        self.data_frame = cfg.max_data_frame
        # Requests (and, behind them, copies of DATA payloads) waiting their turn.
        # (A deque costs half a KiB even empty: made when something has to wait.)
        self.waiting: deque[Request | Rejected | bytes] | None = None
        self.job: Deferred | None = None                  # the request in progress off the loop
        self.upload: UploadTransfer | None = None
        self.download: DownloadProducer | None = None
        self.pager: Iterator[Reply] | None = None
        self.inline: InlinePipeline | None = None
        self.discard = 0            # DATA bytes of a failed upload still in flight: dropped
        self.watchdog: Timer | None = None
        now = time.monotonic()
        self.opened = now
        self.anonymous_since = now      # the login timeout counts from here
        self.last_request = now
        self.last_progress = now        # in CLOSING: when closing began
        self.close_reason = ""
        # Two facts about the peer, not states: the transport's output is above its
        # high-water mark (or the socket is full), and the peer has ended its side.
        self.output_paused = False
        self.peer_eof = False

    @property
    def peer(self) -> str:
        return self.transport.peer

    @property
    def ip(self) -> str:
        return self.transport.ip

    # ------------------------------------------------------------ lifecycle

    def start(self, greeting: bytes) -> None:
        """Start reading and send the (pre-encoded) greeting."""
        self.transport.start()
        self.transport.write(greeting)
        self._arm_watchdog()

    def is_idle(self) -> bool:
        """Nothing in progress: a shutdown may send this session away now."""
        return self.state in SERVING and self.upload is None and self.download is None \
            and self.job is None and self.inline is None

    def fatal(self, reply: ErrorReply) -> None:
        """Send an error that ends the session, then close once it is out."""
        if self.state is _S.CLOSED:
            return
        reason = f"interrupted ({reply.code})"
        if self.upload is not None and self.state is not _S.COMMITTING and \
                not self.upload.ended:
            self._end_upload(released=True, result=reason)
        download = self.download
        if download is not None:
            mid_frame = download.mid_frame()   # then the stream cannot carry an error frame
            self._end_download(reason)
            if mid_frame:
                self.close(reply.code)
                return
        self._drop_inline()
        self.transport.write(encode(reply))
        self.finish(reply.code)

    def finish(self, reason: str) -> None:
        """Read no more requests; close once what is queued has been sent."""
        if self.state in (_S.CLOSING, _S.CLOSED):
            return
        self.close_reason = reason
        self.waiting = None
        self.pager = None
        self.last_progress = time.monotonic()
        self.advance("end")
        self._settle()

    def close(self, reason: str) -> None:
        """Close now, dropping queued output."""
        if self.state is _S.CLOSED:
            return
        self.close_reason = reason
        self.transport.abort()          # calls connection_lost

    # ------------------------------------------------------------ transport callbacks

    def wants_bulk_reads(self) -> bool:
        """Whether file bytes stream in: read whole buffers, several per wake-up."""
        return self.upload is not None or self.inline is not None

    def data_received(self, data: memoryview) -> None:
        try:
            try:
                events = self.stream.feed(data)
            except ProtocolError as exc:
                self.fatal(error_reply(exc, None))
                return
            for event in events:
                state = self.state
                if state is _S.CLOSING or state is _S.CLOSED:
                    break
                if self.waiting:
                    # Behind a waiting request everything waits, DATA included (copied:
                    # the receive buffer is reused).  Reading is off, so this is bounded.
                    self._hold(bytes(event.data) if type(event) is DataChunk else event)
                elif type(event) is DataChunk:
                    self._on_data(event.data)
                elif state is _S.RECEIVING:
                    self._request_inside_inline_data()
                elif self._must_wait(event):            # type: ignore[arg-type]
                    self._hold(event)                   # type: ignore[arg-type]
                else:
                    self._dispatch(event)               # type: ignore[arg-type]
            self._pump()
        except Exception:
            log.exception("connection %s failed; closing it", self.peer)
            self.fatal(refusal(None, "INTERNAL", "internal server error"))

    def eof_received(self) -> None:
        try:
            self.stream.feed_eof()
        except ProtocolError:
            self.close("peer closed inside a frame")
            return
        self.peer_eof = True
        if self.state is _S.UPLOADING or self.state is _S.RECEIVING:
            self.close("peer closed during upload")
            return
        self._pump()

    def pause_writing(self) -> None:
        self.output_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.output_paused = False
        self._pump()

    def connection_lost(self, exc: BaseException | None) -> None:
        """The socket is gone: end whatever is running, once."""
        if self.state is _S.CLOSED:
            return
        committing = self.state is _S.COMMITTING
        self.state = _S.CLOSED
        reason = self.close_reason or (
            f"connection lost: {exc.__class__.__name__}" if exc is not None else "closed")
        self.ctx.timers.cancel(self.watchdog)
        if self.upload is not None and not committing and not self.upload.ended:
            self._end_upload(released=True, result=f"interrupted ({reason})")
        if self.download is not None:
            self._end_download(f"interrupted ({reason})")
        self._drop_inline()
        self.pager = None
        self.waiting = None
        self.ctx.forget(self)
        log.info("close %s user=%s reason=%s seconds=%.1f", self.peer, self.user or "-", reason,
                 time.monotonic() - self.opened)

    # ------------------------------------------------------------ requests

    def _hold(self, event: Request | Rejected | bytes) -> None:
        self.discard = 0
        if self.waiting is None:
            self.waiting = deque()
        self.waiting.append(event)

    def _must_wait(self, request: Request | Rejected) -> bool:
        """Whether ``request`` must wait for earlier work before it is handled."""
        if self.job is not None or self.pager is not None:
            return True
        inline = self.inline
        if inline is None:
            return False
        if type(request) is Put and request.inline:     # type: ignore[attr-defined]
            return inline.full()
        return bool(inline.inflight)         # replies leave in order: after the inline puts

    def _dispatch(self, request: Request | Rejected) -> None:
        self.last_request = time.monotonic()
        self.discard = 0
        if type(request) is Rejected:
            err = request.error
            self._answer(refusal(err.request_id, err.code, err.message))
            return
        cmd = request.cmd
        if next_state(self.state, cmd) is None:
            self._answer(refusal(request.id, refusal_code(self.state, cmd),
                                 f"{cmd} is not allowed now ({self.state.value})"))
            return
        try:
            outcome = self.ctx.handlers[cmd](self, request)
        except (StorageError, ProtocolError) as exc:
            self._answer(error_reply(exc, request.id))
            return
        self._apply(request.id, outcome)

    def _apply(self, request_id: int | None, outcome: Outcome) -> None:
        """Carry out what a handler (or a job's continuation) returned."""
        if outcome is None:
            return
        kind = type(outcome)
        if kind is tuple:
            for part in outcome:                        # type: ignore[union-attr]
                self._apply(request_id, part)
        elif kind is Deferred:
            self._start_job(request_id, outcome)        # type: ignore[arg-type]
        elif kind is Paged:
            self.pager = outcome.pages                  # type: ignore[union-attr]
        elif kind is Finish:
            self.finish(outcome.reason)                 # type: ignore[union-attr]
        else:
            self._answer(outcome)                       # type: ignore[arg-type]

    def _answer(self, reply: Reply) -> None:
        if type(reply) is ErrorReply and is_fatal(reply):     # type: ignore[arg-type]
            self.fatal(reply)                                  # type: ignore[arg-type]
        else:
            self.send(reply)

    def _start_job(self, request_id: int | None, deferred: Deferred) -> None:
        """Run a deferred job; requests wait (and reading stops) until it completes."""
        self.job = deferred

        def complete(result: Any, error: BaseException | None) -> None:
            if deferred.always is not None:
                deferred.always(result, error)
            if self.state is _S.CLOSED:
                if deferred.if_closed is not None:
                    deferred.if_closed(result, error)
                return
            self.job = None
            self.last_request = time.monotonic()  # server-side work does not count as idling
            try:
                outcome = self._continue(request_id, deferred, result, error)
            except Exception:
                log.exception("completion failed on %s", self.peer)
                self.fatal(refusal(None, "INTERNAL", "internal server error"))
                return
            self._apply(request_id, outcome)
            self._pump()

        if deferred.job is None:
            self.ctx.timers.call_later(deferred.delay, lambda: complete(None, None))
        else:
            pool = self.ctx.auth_pool if deferred.cpu else self.ctx.pool
            pool.submit(deferred.job, complete)

    def _continue(self, request_id: int | None, deferred: Deferred, result: Any,
                  error: BaseException | None) -> Outcome:
        if error is not None and deferred.failed is None:
            if not isinstance(error, StorageError | ProtocolError):
                if not deferred.operation:
                    raise error
                log.error("%s failed on %s", deferred.operation, self.peer, exc_info=error)
            return error_reply(error, request_id, operation=deferred.operation)
        try:
            if error is None:
                return deferred.then(result)
            return deferred.failed(error)               # type: ignore[misc]
        except (StorageError, ProtocolError) as exc:
            return error_reply(exc, request_id)

    def _request_inside_inline_data(self) -> None:
        item = self.inline.receiving                    # type: ignore[union-attr]
        assert item is not None
        self.fatal(refusal(None, "BAD_STATE",
                           f"a request arrived with {item.left} bytes of the inline put "
                           f"{item.request.id} still to come"))

    # ------------------------------------------------------------ the engine

    def _pump(self) -> None:
        """Take up waiting requests and run the producers until neither can go on.

        Called only from the top of a callback (transport, worker, timer), so
        it never runs inside itself.
        """
        while self.state is not _S.CLOSED:
            self._take_waiting()
            if not self._produce():
                break
        self._settle()

    def _take_waiting(self) -> None:
        waiting = self.waiting
        while waiting and self.state in SERVING and self.download is None \
                and self.job is None:
            item = waiting[0]
            if type(item) is bytes:
                waiting.popleft()
                self._on_data(memoryview(item))
            elif self.state is _S.RECEIVING:
                self._request_inside_inline_data()
                return
            elif self._must_wait(item):                 # type: ignore[arg-type]
                return
            else:
                waiting.popleft()
                self._dispatch(item)                    # type: ignore[arg-type]
        if not waiting and self.waiting is waiting:
            self.waiting = None

    def _produce(self) -> bool:
        """Run the download or the pager while the transport takes output.

        Returns True when one of them finished (waiting requests may go on).
        """
        transport = self.transport
        while not self.output_paused and self.state is not _S.CLOSED:
            download = self.download
            if download is not None:
                if download.frame_left == 0:
                    if download.deferred:
                        for data in download.deferred:
                            transport.write(data)
                        download.deferred.clear()
                    if download.cancel_id is not None:
                        cancel_id = download.cancel_id
                        self._end_download("cancelled")
                        self.send(refusal(download.request.id, "CANCELLED",
                                          "download cancelled"))
                        self.send(CancelOk(id=cancel_id))
                        return True
                    if download.next_frame() == 0:
                        self._end_download("ok")
                        self.send(GetDone(id=download.request.id, path=download.path,
                                          size=download.size))
                        return True
                    transport.write(data_header(download.frame_left))
                    continue
                try:
                    sent = transport.send_file(download.fd, download.pos, download.frame_left)
                except EOFError:
                    self.close("file shrank during download")
                    return False
                except OSError as exc:
                    self.close(f"read failed: {exc.__class__.__name__}")
                    return False
                if sent == 0:
                    return False                # the transport resumes us
                download.advance(sent)
                self.last_progress = time.monotonic()
                continue
            pager = self.pager
            if pager is None:
                return False
            page = next(pager, None)
            if page is None:
                self.pager = None
                return True
            transport.write(encode(page))
        return False

    def _settle(self) -> None:
        """After any progress: is the session over, and should it read?"""
        state = self.state
        if state is _S.CLOSED:
            return
        if state is _S.CLOSING:
            if self.download is None and self.upload is None and \
                    (self.inline is None or not self.inline.inflight):
                self.transport.close()          # drains, then connection_lost
            else:
                self.transport.pause_reading()
            return
        if self.peer_eof and self.job is None and not self.waiting and self.download is None \
                and self.pager is None and self.upload is None and self.inline is None:
            self.finish("peer closed")
            return
        self._update_reading()

    def _update_reading(self) -> None:
        """The one decision whether to read more.

        During a download the output is paused whenever the socket is full, yet
        a ``cancel`` or a ``ping`` must still be read: there the bound is the
        number of replies held back until the frame ends.
        """
        inline, download = self.inline, self.download
        if self.state in SERVING and self.job is None and not self.waiting \
                and (inline is None or not inline.full()) \
                and (not download.deferred_full() if download is not None
                     else not self.output_paused):
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    # ------------------------------------------------------------ replies

    def send(self, reply: Reply) -> None:
        """Queue a reply; in the middle of a DATA frame it waits for the frame's end."""
        data = encode(reply)
        download = self.download
        if download is not None and download.mid_frame():
            download.deferred.append(data)  # (a ping flood: reading stops at the cap)
        else:
            self.transport.write(data)

    # ------------------------------------------------------------ transfers (handler API)

    def advance(self, event: str) -> None:
        """Apply the state table to an event that succeeded."""
        target = next_state(self.state, event)
        if target is None:
            raise RuntimeError(f"illegal transition {self.state} --{event}-->")
        if target is not self.state:
            self.state = target
            if target is _S.ANONYMOUS:
                self.anonymous_since = time.monotonic()
            # Each state has its own timeout (login, idle, stall, closing).  A watchdog due
            # before the new state's deadline can stay: when it fires it finds nothing
            # expired and re-arms for the real deadline.
            watchdog = self.watchdog
            if watchdog is None or watchdog.cancelled or \
                    watchdog.deadline > self._deadline(time.monotonic())[0]:
                self.ctx.timers.cancel(watchdog)
                self._arm_watchdog()

    def start_upload(self, request: Request, upload: Any) -> Outcome:
        """The upload was begun (its slot taken by the handler)."""
        transfer = self.upload = UploadTransfer(self.ctx, request, upload)
        self.last_progress = time.monotonic()
        self.advance("put")
        if transfer.wants_commit():
            return self._commit(request.id, None)
        transfer.catch_up()                     # a resumed prefix is hashed from now on
        return None

    def commit_upload(self, request: Request) -> Outcome:
        """``commit``: the client names the SHA-256 of a ``defer_sha256`` upload."""
        transfer = self.upload
        if transfer is None:
            raise ProtocolError("commit needs an upload declared with defer_sha256",
                                code="BAD_STATE")
        transfer.check_commit()
        return self._commit(request.id, request.sha256)     # type: ignore[attr-defined]

    def cancel_transfer(self, request: Request) -> Outcome:
        transfer = self.upload
        if transfer is not None:
            self._end_upload(released=True, result="cancelled")
            return (refusal(transfer.request.id, "CANCELLED",
                            "upload cancelled; the partial stays resumable"),
                    CancelOk(id=request.id))
        if self.download is not None:
            self.download.cancel_id = request.id      # answered at the next frame boundary
        return None

    def start_download(self, producer: DownloadProducer) -> None:
        self.download = producer
        self.last_progress = time.monotonic()
        self.advance("get")

    def start_inline(self, request: Request, refused: ErrorReply | None) -> None:
        """An inline put: read its ``size`` bytes now; store them, or drop them if refused."""
        inline = self.inline
        if inline is None:
            assert self.user is not None
            inline = self.inline = InlinePipeline(self.ctx, self.user, self._inline_progress)
        inline.add(request, self.cwd, refused)
        self.last_progress = time.monotonic()
        if inline.receiving is not None:
            self.advance("inline")
        else:
            self._send_inline_replies()

    # ------------------------------------------------------------ transfers (inside)

    def _on_data(self, view: memoryview) -> None:
        if self.state is _S.RECEIVING:
            item = self.inline.receiving                # type: ignore[union-attr]
            if len(view) > item.left:                   # type: ignore[union-attr]
                self.fatal(refusal(None, "BAD_STATE", "more data than the declared "
                                   f"{item.request.size} bytes"))  # type: ignore
                return
            self.last_progress = time.monotonic()
            if self.inline.data(view):                  # type: ignore[union-attr]
                self.advance("done")
                self._send_inline_replies()
            return
        if self.discard:
            if len(view) <= self.discard:
                self.discard -= len(view)
                return
            view = view[self.discard:]
            self.discard = 0
        transfer = self.upload
        if transfer is None or self.state is not _S.UPLOADING:
            self.fatal(refusal(None, "BAD_STATE", "DATA frame outside an upload"))
            return
        rest = transfer.remaining() - len(view)
        if rest < 0:
            self.fatal(refusal(None, "BAD_STATE",
                               f"more data than the declared {transfer.upload.size} bytes"))
            return
        try:
            transfer.write(view)
        except StorageError as exc:
            self._end_upload(released=True, result=f"failed ({exc.code})")
            self._answer(error_reply(exc, transfer.request.id))
            self.discard = rest      # DATA already in flight is dropped
            return
        self.last_progress = time.monotonic()
        if transfer.wants_commit():
            self._apply(transfer.request.id, self._commit(transfer.request.id, None))
        else:
            transfer.catch_up()

    def _commit(self, reply_id: int, sha256: str | None) -> Deferred:
        """Verify, fsync and publish the upload on a worker; answer ``reply_id``."""
        transfer = self.upload
        assert transfer is not None
        self.advance("commit")

        def ended(_: Any, error: BaseException | None) -> None:
            # Runs even if the session closed meanwhile: the bookkeeping must happen.
            outcome = "ok" if error is None else f"failed ({getattr(error, 'code', 'ERROR')})"
            self._end_upload(released=False, result=outcome)

        def done(result: Any) -> Reply:
            return PutDone(id=reply_id, path=result.path, size=result.size,
                           sha256=result.sha256 if transfer.upload.sha256 else None)

        return Deferred(transfer.commit_job(sha256), done, always=ended, operation="commit")

    def _end_upload(self, *, released: bool, result: str) -> None:
        transfer = self.upload
        if transfer is None:
            return
        self.upload = None
        transfer.end(released=released, result=result, user=self.user)
        if self.state is _S.UPLOADING or self.state is _S.COMMITTING:
            self.advance("done")

    def _end_download(self, result: str) -> None:
        download = self.download
        if download is None:
            return
        self.download = None
        download.end(result, self.user)
        if self.state is _S.DOWNLOADING:
            self.advance("done")
        for data in download.deferred:
            self.transport.write(data)
        download.deferred.clear()

    def _send_inline_replies(self) -> None:
        inline = self.inline
        if inline is None:
            return
        for data in inline.ready_replies():
            self.transport.write(data)
        if inline.idle():
            self.inline = None
            self.last_request = time.monotonic()    # server-side work does not count as idling

    def _inline_progress(self) -> None:
        """A group of inline puts was stored (a worker's completion, on the reactor)."""
        if self.state is _S.CLOSED:
            return
        self._send_inline_replies()
        self._pump()

    def _drop_inline(self) -> None:
        if self.inline is not None:
            self.inline.drop()
            self.inline = None

    # ------------------------------------------------------------ timeouts

    def _deadline(self, now: float) -> tuple[float, str]:
        """When this session times out in its current state, and why."""
        cfg = self.ctx.config
        state = self.state
        if state is _S.CLOSING:
            return self.last_progress + FORCE_CLOSE_AFTER, "closing"
        inline = self.inline
        if self.job is not None or (inline is not None and inline.storing_only()):
            return now + 1.0, ""                # work in progress is not the client's fault
        if state is _S.GREETED or state is _S.ANONYMOUS:
            return self.anonymous_since + cfg.login_timeout, "login"
        if self.upload is not None or self.download is not None or state is _S.RECEIVING:
            return self.last_progress + cfg.stall_timeout, "transfer stalled"
        return self.last_request + cfg.idle_timeout, "idle"

    def _arm_watchdog(self) -> None:
        if self.state is _S.CLOSED:
            return
        now = time.monotonic()
        deadline, what = self._deadline(now)
        if now >= deadline and what:
            self.watchdog = None
            if self.state is _S.CLOSING:
                self.close(f"{self.close_reason}; peer did not read")
                return
            log.info("timeout %s user=%s (%s)", self.peer, self.user or "-", what)
            self.fatal(refusal(None, "TIMEOUT", f"{what} timeout"))
            return
        self.watchdog = self.ctx.timers.call_later(deadline - now, self._arm_watchdog)
