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
from collections import deque
from typing import TYPE_CHECKING, Any

from protocol import (
    DataChunk,
    ErrorReply,
    ProtocolError,
    Put,
    Rejected,
    Reply,
    Request,
    State,
    encode,
    next_state,
    refusal_code,
)
from protocol.codec import MessageStream
from protocol.framing import ControlFrame
from protocol.state import SERVING
from storage import StorageError

from . import logs
from .errors import error_reply, is_fatal, refusal
from .jobs import Deferred, Finish, Outcome, Paged
from .session_guard import SessionGuard
from .session_transfers import SessionTransfers

if TYPE_CHECKING:
    from .context import SessionContext
    from .inline import InlinePipeline
    from .timers import Timer
    from .transfers import DownloadProducer, UploadTransfer
    from .transport import PlainTransport

log = logging.getLogger("ftpd.conn")

_S = State


class Session(SessionTransfers, SessionGuard):
    """Owns one client's protocol state: state, user, working folder, waiting requests,
    the job in progress, the transfer objects and the watchdog.

    It reaches the network only through its transport (``write``, ``send_file``,
    ``pause_reading``/``resume_reading``, ``close``/``abort``) and the daemon only
    through its ``SessionContext`` (config, store, pools, timers, throttle, upload
    slots, handler table).  It may not touch the socket, the selector, another
    session or the ``Server``.
    """

    __slots__ = ("ctx", "transport", "stream", "state", "user", "cwd", "data_frame", "digest",
                 "waiting",
                 "job", "upload", "download", "pager", "inline", "discard", "watchdog", "opened",
                 "anonymous_since", "last_request", "last_progress", "close_reason",
                 "output_paused", "peer_eof", "login", "logbudget", "__weakref__")

    def __init__(self, ctx: SessionContext, transport: PlainTransport) -> None:
        cfg = ctx.config
        self.ctx = ctx
        self.transport = transport
        self.stream = MessageStream("server", cfg.max_control_frame, cfg.max_data_frame)
        self.state = _S.GREETED
        self.user: str | None = None
        self.cwd = "/"
        self.data_frame = cfg.max_data_frame
        self.digest = "sha256"          # chosen at hello (protocol.digests)
        # Requests (and, behind them, copies of DATA payloads) waiting their turn.
        # (A deque costs half a KiB even empty: made when something has to wait.)
        # (Read over the output's high-water mark, a request waits undecoded: item 13.)
        self.waiting: deque[Request | Rejected | ControlFrame | bytes] | None = None
        self.job: Deferred | None = None                  # the request in progress off the loop
        self.upload: UploadTransfer | None = None
        self.download: DownloadProducer | None = None
        self.pager: Paged | None = None                 # a multi-frame reply going out
        self.inline: InlinePipeline | None = None
        self.discard = 0            # DATA bytes of a failed upload still in flight: dropped
        self.watchdog: Timer | None = None
        now = ctx.timers.clock()       # the timer heap's clock: one time base, and testable
        self.opened = now
        self.anonymous_since = now      # the login timeout counts from here
        self.last_request = now
        self.last_progress = now        # in CLOSING: when closing began
        self.close_reason = ""
        # Two facts about the peer, not states: the transport's output is above its
        # high-water mark (or the socket is full), and the peer has ended its side.
        self.output_paused = False
        self.peer_eof = False
        self.login: tuple[str, int, int] | None = None    # see SessionGuard
        self.logbudget: Any = None                        # made at the first rate-limited line

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
                self.close(reply.code.lower())
                return
        self._drop_inline()
        self.transport.write(encode(reply))
        self.finish(reply.code.lower())

    def finish(self, reason: str) -> None:
        """Read no more requests; close once what is queued has been sent."""
        if self.state in (_S.CLOSING, _S.CLOSED):
            return
        self.close_reason = reason
        self.waiting = None
        self.pager = None
        self.last_progress = self.ctx.timers.clock()
        self.advance("end")
        self._settle()                  # (a transport that sends at once is closed now)
        if self.state is _S.CLOSING:
            self._tighten_watchdog()    # the rest may drain for FORCE_CLOSE_AFTER

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
                frames = self._frames(data)
            except ProtocolError as exc:
                self.fatal(error_reply(exc, None))
                return
            # Before any request runs (no login yet: nothing to check).
            if self.login is not None and self._checks_login(frames) and self._revoked():
                return
            for frame in frames:
                state = self.state
                if state is _S.CLOSING or state is _S.CLOSED:
                    break
                if self.waiting:
                    # Behind a waiting request everything waits, DATA included (copied:
                    # the receive buffer is reused).  Reading is off, so this is bounded.
                    self._hold(bytes(frame.data) if type(frame) is DataChunk else frame)
                elif type(frame) is DataChunk:
                    self._on_data(frame.data)
                elif self._output_full():       # stop decoding: the rest waits (item 13)
                    self._hold(frame)
                elif (event := self._decode(frame)) is None:
                    break
                else:
                    if state is _S.RECEIVING:
                        self._request_inside_inline_data()
                    elif self._must_wait(event):
                        self._hold(event)
                    else:
                        self._dispatch(event)
            self._pump()
        except Exception:
            log.exception("connection %s failed; closing it", self.peer)
            self.fatal(refusal(None, "INTERNAL", "internal server error"))

    def eof_received(self) -> None:
        try:
            self.stream.feed_eof()
        except ProtocolError as exc:
            # Cut inside a frame: a final BAD_FRAME (PROTOCOL.md 2.5), unless already ending.
            if self.state is _S.CLOSING or self.state is _S.CLOSED:
                self.close("peer closed inside a frame")
            else:
                self.peer_eof = True
                self.fatal(error_reply(exc, None))
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
        reason = self.close_reason.lower() or (   # codes in lower case; class names as is
            f"connection lost: {exc.__class__.__name__}" if exc is not None else "closed")
        self.ctx.timers.cancel(self.watchdog)
        if self.upload is not None and not committing and not self.upload.ended:
            self._end_upload(released=True, result=f"interrupted ({reason})")
        if self.download is not None:
            self._end_download(f"interrupted ({reason})")
        self._drop_inline()
        self.pager = None
        self.waiting = None
        self.end_guards()               # the login, the working folder, the log budget
        self.ctx.forget(self)
        logs.info(log, "close %s user=%s reason=%s seconds=%.1f", self.peer, self.user or "-",
                  reason, self.ctx.timers.clock() - self.opened)

    # ------------------------------------------------------------ requests

    def _hold(self, event: Request | Rejected | bytes) -> None:
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
        self.last_request = self.ctx.timers.clock()
        self.discard = 0
        if type(request) is Rejected:
            err = request.error
            reply = refusal(err.request_id, err.code, err.message)
            if request.inline_put and self.state is not _S.READY:
                self.fatal(reply)       # its DATA could not be told from a transfer's
            else:
                self._answer(reply)
            return
        cmd = request.cmd
        if type(request) is Put and request.inline and self.state is not _S.READY:
            # Its DATA follows at once and cannot be told from a running transfer's (or
            # skipped before login): one fatal BAD_STATE, the DATA is never read (7.7).
            self.fatal(refusal(request.id, "BAD_STATE",
                               f"an inline put is not allowed now ({self.state.value}); "
                               "closing: its DATA cannot be skipped"))
            return
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
            self.pager = outcome                        # type: ignore[assignment]
        elif kind is Finish:
            self.finish(outcome.reason)                 # type: ignore[union-attr]
        else:
            self._answer(outcome)                       # type: ignore[arg-type]

    def _answer(self, reply: Reply | bytes) -> None:
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
            if self.state is _S.CLOSED or self.state is _S.CLOSING:
                # Ending (a fatal error): it was the last frame, nothing more is answered
                # -- not even the put.done of a commit that was running (PROTOCOL.md 2.6).
                if deferred.if_closed is not None:
                    deferred.if_closed(result, error)
                if self.state is _S.CLOSING:
                    self.job = None
                    self._settle()
                return
            self.job = None
            self.last_request = self.ctx.timers.clock()  # server-side work does not count as idling
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
        elif deferred.cpu:
            self.ctx.auth_pool.submit(deferred.job, complete)
        else:                   # at most a share of the file workers per user (item 8)
            self.ctx.jobs.submit(self.user, deferred.job, complete)

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
            if self.waiting is not None:
                self._take_waiting()
            if not self._produce():
                break
        self._settle()

    def _take_waiting(self) -> None:
        waiting, checked = self.waiting, False
        while waiting and self.state in SERVING and self.download is None \
                and self.job is None:
            item = waiting[0]
            if type(item) is bytes:
                waiting.popleft()
                self._on_data(memoryview(item))
                continue
            if self._output_full():
                return                      # answered (and decoded) once output drains
            if type(item) is ControlFrame:
                if (decoded := self._decode(item)) is None:
                    return
                item = waiting[0] = decoded
            if self.state is _S.RECEIVING:
                self._request_inside_inline_data()
                return
            elif self._must_wait(item) or not checked and self._revoked():                 # type: ignore[arg-type]
                return
            else:
                checked = True
                waiting.popleft()
                self._dispatch(item)                    # type: ignore[arg-type]
        if not waiting and self.waiting is waiting:
            self.waiting = None

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
        inline, download, upload = self.inline, self.download, self.upload
        if self.state in SERVING and self.job is None and not self.waiting \
                and (inline is None or not inline.full()) \
                and (upload is None or not upload.backlogged()) \
                and (not download.deferred_full() if download is not None
                     else not self.output_paused):
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    # ------------------------------------------------------------ replies

    def send(self, reply: Reply | bytes) -> None:
        """Queue a reply (or its encoded frame); in the middle of a DATA frame it waits
        for the frame's end."""
        data = reply if type(reply) is bytes else encode(reply)     # type: ignore[arg-type]
        download = self.download
        if download is not None and download.mid_frame():
            download.deferred.append(data)  # (a ping flood: reading stops at the cap)
        else:
            self.transport.write(data)

    # ------------------------------------------------------------ the state table

    def advance(self, event: str) -> None:
        """Apply the state table to an event that succeeded."""
        target = next_state(self.state, event)
        if target is None:
            raise RuntimeError(f"illegal transition {self.state} --{event}-->")
        if target is not self.state:
            self.state = target
            if target is _S.ANONYMOUS:
                self.anonymous_since = self.ctx.timers.clock()
            if target is not _S.CLOSING:    # (``finish`` sees to the closing one)
                self._tighten_watchdog()
