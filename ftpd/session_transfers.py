"""The transfer half of a session: starting, feeding, producing and ending transfers.

``Session`` (ftpd/session.py) inherits this half; it is split out only to
keep each file readable.  The transfer objects themselves
(``UploadTransfer``, ``DownloadProducer``, ``InlinePipeline``) own their
fields and report back by return value or callback; the code here decides
what their progress means for the session: its state, its replies, its
timestamps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from protocol import (
    CancelOk,
    ErrorReply,
    GetDone,
    ProtocolError,
    PutDone,
    Reply,
    Request,
    State,
    encode,
)
from storage import StorageError

from .errors import error_reply, refusal
from .inline import InlinePipeline
from .jobs import Deferred, Outcome, Paged
from .transfers import DownloadProducer, UploadTransfer

if TYPE_CHECKING:
    from .context import SessionContext
    from .transport import PlainTransport

_S = State


class SessionTransfers:
    """Mixin of ``Session``: no fields of its own (the session's slots hold them)."""

    __slots__ = ()

    if TYPE_CHECKING:
        ctx: SessionContext
        transport: PlainTransport
        state: State
        user: str | None
        cwd: str
        upload: UploadTransfer | None
        download: DownloadProducer | None
        pager: Paged | None
        inline: InlinePipeline | None
        discard: int
        last_progress: float
        last_request: float
        output_paused: bool
        job: Deferred | None

        def advance(self, event: str) -> None: ...
        def fatal(self, reply: ErrorReply) -> None: ...
        def close(self, reason: str) -> None: ...
        def log_budget(self) -> Any: ...
        def send(self, reply: Reply) -> None: ...
        def _answer(self, reply: Reply) -> None: ...
        def _apply(self, request_id: int | None, outcome: Outcome) -> None: ...
        def _pump(self) -> None: ...
        def _start_job(self, request_id: int | None, deferred: Deferred) -> None: ...

    def moves_bulk(self) -> bool:
        """Whether an upload or a download is streaming: the reactor serves this
        connection after those with requests waiting, within a time budget
        (``ftpd.turns``)."""
        return self.upload is not None or self.download is not None

    # ------------------------------------------------------------ started by handlers

    def start_upload(self, request: Request, upload: Any) -> Outcome:
        """The upload was begun (its slot taken by the handler)."""
        transfer = self.upload = UploadTransfer(self.ctx, request, upload)
        transfer.on_flushed = self._settle
        self.last_progress = self.ctx.timers.clock()
        self.advance("put")
        if transfer.wants_commit():
            return self._commit(request.id, None)
        transfer.catch_up()                     # a resumed prefix is hashed from now on
        return None

    def commit_upload(self, request: Request) -> Outcome:
        """``commit``: the client names the digest of a ``defer_sha256``/``defer_blake3`` upload."""
        transfer = self.upload
        if transfer is None:
            raise ProtocolError("commit needs an upload declared with defer_sha256",
                                code="BAD_STATE")
        transfer.check_commit(request)
        return self._commit(request.id, request.sha256,     # type: ignore[attr-defined]
                            request.size,                   # type: ignore[attr-defined]
                            request.blake3)                 # type: ignore[attr-defined]

    def cancel_transfer(self, request: Request) -> Outcome:
        transfer = self.upload
        if transfer is not None:
            self._end_upload(released=True, result="cancelled")
            return (refusal(transfer.request.id, "CANCELLED",
                            "stream cancelled; nothing was kept" if transfer.stream else
                            "upload cancelled; the partial stays resumable"),
                    CancelOk(id=request.id))
        if self.download is not None:
            self.download.cancel_id = request.id      # answered at the next frame boundary
        return None

    def start_download(self, producer: DownloadProducer) -> None:
        self.download = producer
        attach = getattr(producer, "attach", None)
        if attach is not None:          # an object-store download pulls chunks on workers
            attach(self.ctx.pool, self._pump, lambda: self.output_paused)
        self.last_progress = self.ctx.timers.clock()
        self.advance("get")

    def start_inline(self, request: Request, refused: ErrorReply | None) -> None:
        """An inline put: read its ``size`` bytes now; store them, or drop them if refused."""
        inline = self.inline
        if inline is None:
            assert self.user is not None
            inline = self.inline = InlinePipeline(self.ctx, self.user, self._inline_progress,
                                                  self.log_budget)
        inline.add(request, self.cwd, refused)
        self.last_progress = self.ctx.timers.clock()
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
            self.last_progress = self.ctx.timers.clock()
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
        self.last_progress = self.ctx.timers.clock()
        if transfer.wants_commit():
            self._apply(transfer.request.id, self._commit(transfer.request.id, None))
        else:
            transfer.catch_up()

    def _commit(self, reply_id: int, sha256: str | None, size: int | None = None,
                blake3: str | None = None) -> Deferred:
        """Verify, fsync and publish the upload on a worker; answer ``reply_id``."""
        transfer = self.upload
        assert transfer is not None
        self.advance("commit")

        def ended(_: Any, error: BaseException | None) -> None:
            # Runs even if the session closed meanwhile: the bookkeeping must happen.
            # A failed commit releases the upload: its partial stays resumable (PROTOCOL.md
            # 7.5), and a writer left registered would answer UPLOAD_BUSY until a restart.
            outcome = "ok" if error is None else f"failed ({getattr(error, 'code', 'ERROR')})"
            self._end_upload(released=error is not None, result=outcome)

        def done(result: Any) -> Reply:
            upload = transfer.upload
            return PutDone(id=reply_id, path=result.path, size=result.size,
                           sha256=result.sha256 if upload.sha256 else None,
                           blake3=getattr(result, "blake3", None)
                           if getattr(upload, "blake3", None) else None)

        return Deferred(transfer.commit_job(sha256, size, blake3), done, always=ended,
                        operation=f"commit of {transfer.upload.path}")

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
        ready = inline.ready_replies()
        if ready:       # one send for a group's replies, not one per file (one client wake-up)
            self.transport.write(ready[0] if len(ready) == 1 else b"".join(ready))
        if inline.idle():
            self.inline = None
            self.last_request = self.ctx.timers.clock()  # server work is not idling

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

    # ------------------------------------------------------------ producing

    def _produce(self) -> bool:
        """Run the download or the pager while the transport takes output.

        Returns True when one of them finished (waiting requests may go on).
        """
        transport = self.transport
        while not self.output_paused and self.state is not _S.CLOSED:
            download = self.download
            if download is not None:
                pos = download.pos
                ended = download.produce(transport)
                if download.pos != pos:
                    self.last_progress = self.ctx.timers.clock()
                if ended is None:
                    return False                # the transport resumes us
                request = download.request
                if ended == "cancelled":
                    self._end_download(ended)
                    self.send(refusal(request.id, "CANCELLED", "download cancelled"))
                    self.send(CancelOk(id=download.cancel_id))    # type: ignore[arg-type]
                elif ended == "ok":
                    self._end_download(ended)
                    self.send(GetDone(id=request.id, path=download.path, size=download.size))
                else:
                    self.close(ended)
                    return False
                return True
            pager = self.pager
            if pager is None or self.job is not None:   # (the job: its next batch)
                return False
            page, pager.held = pager.held or next(pager.pages, None), None
            if page is None:
                self.pager = None
                return True
            if type(page) is Deferred:
                # Read the next batch only once the output has drained to low water.
                if transport.wait_for_low_water():
                    pager.held = page
                    return False
                self._start_job(None, page)
                return False
            transport.write(encode(page))
        return False
