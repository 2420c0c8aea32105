"""The guarding half of a session: its login's slot and revocation, lazy decoding
under output pressure, and its budget of repeated log lines (issue 13).

``Session`` (ftpd/session.py) inherits this mixin; it holds no fields of its
own (the session's slots ``login`` and ``logbudget`` hold them).

* Item 16: a login takes one of ``ctx.user_slots`` (``max_connections_per_user``),
  given back at logout or close.
* Item 6: the login's ``(user, uid, generation)`` is checked before every request
  and by ``ctx.logins``' one-second sweep (ftpd/revocation.py); a login that no
  longer stands ends the session with ``LOGIN_REVOKED``.
* Item 13: requests are decoded one at a time as they are handled; while the
  output is over its high-water mark, the rest of a read waits as raw frames.
* Item 14: ``log_budget`` rate-limits repeated lines per connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from protocol import BadRequest, ProtocolError, Rejected, Request, State
from protocol.codec import decode_request
from protocol.framing import ControlFrame

from .errors import error_reply, refusal
from .lograte import LogBudget
from .walks import close_workdir

if TYPE_CHECKING:
    from protocol import ErrorReply
    from protocol.codec import MessageStream

    from .context import SessionContext
    from .timers import Timer
    from .transfers import DownloadProducer, UploadTransfer

log = logging.getLogger("ftpd.conn")
_S = State
#: Seconds a closing session may take to drain its output before it is cut.
FORCE_CLOSE_AFTER = 5.0


def decode_request_frame(payload: bytes) -> Request | Rejected:
    """A request, or ``Rejected`` for a bad one (as ``MessageStream`` decodes it);
    raises ``ProtocolError`` (fatal) for a payload that is not a JSON object."""
    try:
        return decode_request(payload)
    except BadRequest as exc:
        return Rejected(exc, getattr(exc, "inline_put", False))


class SessionGuard:
    """Mixin of ``Session``: no fields of its own."""

    __slots__ = ()

    if TYPE_CHECKING:
        ctx: SessionContext
        state: State
        user: str | None
        cwd: str
        peer: str
        stream: MessageStream
        login: tuple[str, int, int] | None
        logbudget: LogBudget | None
        watchdog: Timer | None
        output_paused: bool
        download: DownloadProducer | None
        upload: UploadTransfer | None

        def fatal(self, reply: ErrorReply) -> None: ...

    # ------------------------------------------------------------ the login (items 6, 16)

    def begin_login(self, user: str, uid: int, generation: int) -> bool:
        """Take one of the user's session slots and watch the login for revocation;
        False (nothing taken) when the user has ``max_connections_per_user`` sessions."""
        if not self.ctx.user_slots.acquire(user):
            return False
        self.login = (user, uid, generation)
        self.ctx.logins.watch(self.login, self)
        return True

    def end_login(self) -> None:
        """Logout or close: give the slot back, stop watching (idempotent)."""
        login = self.login
        if login is not None:
            self.login = None
            self.ctx.user_slots.release(login[0])
            self.ctx.logins.unwatch(login, self)

    def end_guards(self) -> None:
        """The connection is gone: the login, the working folder held open, the log
        budget's last "suppressed" line."""
        self.end_login()
        close_workdir(self.cwd)
        if self.logbudget is not None:
            self.logbudget.close()

    def _revoked(self) -> bool:
        """The check before requests run (one indexed read, once per read from the
        socket or per batch of waiting requests, so a pipelined batch pays it once):
        True, and the session is ending, if the login no longer stands."""
        if self.login is None or self.ctx.logins.valid(self.login):
            return False
        self.revoke()
        return True

    def _checks_login(self, frames: list[Any]) -> bool:
        """Whether this read needs the login check: it does unless it only carries
        DATA for a running upload and does not complete it -- such bytes run no
        request, and the once-a-second sweep covers a session streaming them
        (``ftpd/revocation.py``).  Measured with four uploads streaming: the check
        on every 1 MiB read was 8 % of the reactor's time (issue 17)."""
        upload = self.upload
        if upload is None:
            return True
        size = 0
        for frame in frames:
            if type(frame) is ControlFrame:
                return True
            size += len(frame.data)
        return size >= upload.remaining()       # the last bytes commit: checked first

    def revoke(self) -> None:
        """The login no longer stands (new password, disabled, deleted): end the session.

        ``fatal`` releases a running upload without committing it."""
        if self.state is _S.CLOSED or self.state is _S.CLOSING:
            return
        log.info("login revoked %s user=%s", self.peer, self.user)
        self.end_login()
        self.fatal(refusal(None, "LOGIN_REVOKED",
                           "this login was revoked (new password, account disabled or "
                           "deleted); log in again"))

    # ------------------------------------------------------------ decoding (item 13)

    def _frames(self, data: memoryview) -> list[Any]:
        """The frames in ``data``; raises the first fatal error in stream order (a
        control frame that is not JSON before a broken frame header is BAD_MESSAGE)."""
        frames, error = self.stream.frames.feed_until_error(data)
        if error is not None:
            for frame in frames:
                if type(frame) is ControlFrame:
                    decode_request_frame(frame.payload)     # a BAD_MESSAGE before it wins
            raise error
        return frames

    def _decode(self, frame: ControlFrame) -> Request | Rejected | None:
        """A request frame decoded; None (and the session ends) if it is not JSON."""
        try:
            return decode_request(frame.payload)    # (decode_request_frame, inlined)
        except BadRequest as exc:
            return Rejected(exc, getattr(exc, "inline_put", False))
        except ProtocolError as exc:
            self.fatal(error_reply(exc, None))
            return None

    def _output_full(self) -> bool:
        """The output is over its high-water mark (outside a download, whose socket is
        full whenever it streams: there the cap is the replies held back per frame)."""
        return self.output_paused and self.download is None

    # ------------------------------------------------------------ log lines (item 14)

    def log_budget(self) -> LogBudget:
        """This connection's budget of repeated log lines."""
        if self.logbudget is None:
            self.logbudget = LogBudget(log, self.peer)
        return self.logbudget

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

    def _tighten_watchdog(self) -> None:
        """Each state has its own timeout (login, idle, stall, closing): re-arm the
        watchdog if the current state's deadline comes before it.  A watchdog due
        before it can stay: when it fires it finds nothing expired and re-arms."""
        watchdog = self.watchdog
        if watchdog is None or watchdog.cancelled or \
                watchdog.deadline > self._deadline(self.ctx.timers.clock())[0]:
            self.ctx.timers.cancel(watchdog)
            self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        if self.state is _S.CLOSED:
            return
        now = self.ctx.timers.clock()
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
