"""The inline-put pipeline: small files read whole, stored in groups, answered in order.

An inline put (``put`` with ``inline: true``) is read into memory at once,
request and DATA; while earlier ones are being stored on a worker (in groups,
``Store.store_small_files``: one sync pass for all of them) further inline
puts are read and queued.  Their replies leave strictly in request order.  At
most ``inline_window_files`` files / ``inline_window_bytes`` bytes wait per
connection; past that the session stops reading (backpressure).

The pipeline owns its puts, their bytes, the groups on workers and (while it
stores anything) one upload slot of the user.  It reports back through the
``on_progress`` callback (some replies may be ready) and never touches the
session: the session takes the ready replies with ``ready_replies``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protocol import PutDone, Request, encode
from storage import SmallFile, StorageError
from storage.paths import join_user_path, split_user_path

from .errors import error_reply
from .errors import refusal as make_refusal
from .workers import SyncJob

if TYPE_CHECKING:
    from .context import SessionContext
    from .lograte import LogBudget

log = logging.getLogger("ftpd.conn")


class InlinePut:
    """One inline put: its bytes while they arrive, then its encoded final reply."""

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


class InlinePipeline:
    """Inline puts of one session: read, grouped onto workers, answered in order.

    It may use the store, the pool and the upload slots from the context; it
    may not touch the session, whose ``on_progress`` it calls (on the reactor
    thread) when a group's outcome is known.
    """

    __slots__ = ("ctx", "user", "on_progress", "receiving", "inflight", "inflight_bytes",
                 "batch", "batch_bytes", "batches_running", "storing", "slot", "log_budget")

    def __init__(self, ctx: SessionContext, user: str, on_progress: Callable[[], None],
                 log_budget: Callable[[], LogBudget] | None = None) -> None:
        self.ctx = ctx
        self.user = user
        self.on_progress = on_progress
        # The connection's budget of repeated lines: refused puts are rate-limited.
        self.log_budget = log_budget
        self.receiving: InlinePut | None = None   # the put whose DATA is arriving
        self.inflight: list[InlinePut] = []       # puts not answered yet, in order
        self.inflight_bytes = 0                   # their buffered bytes
        self.batch: list[InlinePut] = []          # received, not yet handed to a worker
        self.batch_bytes = 0                      # their declared sizes
        self.batches_running = 0
        self.storing: dict[str, int] = {}         # targets of the groups being stored
        self.slot = False                         # holds one of the user's upload slots

    # ------------------------------------------------------------ questions

    def full(self) -> bool:
        cfg = self.ctx.config
        return len(self.inflight) >= cfg.inline_window_files \
            or self.inflight_bytes >= cfg.inline_window_bytes

    def storing_only(self) -> bool:
        """Only the workers are busy (no put is half read): not the client's fault."""
        return bool(self.inflight) and self.receiving is None

    def idle(self) -> bool:
        return not self.inflight and self.receiving is None and not self.batch \
            and self.batches_running == 0

    # ------------------------------------------------------------ reading

    def add(self, request: Request, cwd: str, refusal: Any) -> InlinePut:
        """A new inline put (``refusal``: its error reply; its bytes are then dropped)."""
        if refusal is None and not self.slot:
            if self.ctx.uploads.take(self.user):
                self.slot = True
            else:
                refusal = make_refusal(
                    request.id, "TOO_MANY_UPLOADS",
                    f"at most {self.ctx.config.max_uploads_per_user} uploads at once per user")
        item = InlinePut(request, cwd, encode(refusal) if refusal is not None else None)
        self.inflight.append(item)
        if refusal is None:
            self.inflight_bytes += item.left
        if item.left == 0:
            self._received(item)
        else:
            self.receiving = item
        return item

    def data(self, view: memoryview) -> bool:
        """Bytes of the put being received; returns True when it is complete."""
        item = self.receiving
        assert item is not None
        if item.buf is not None:
            item.buf += view
        item.left -= len(view)
        if item.left:
            return False
        self.receiving = None
        self._received(item)
        return True

    def _received(self, item: InlinePut) -> None:
        if item.reply is None:
            self.batch.append(item)
            self.batch_bytes += item.request.size      # type: ignore[attr-defined]
            self._start_batches()

    # ------------------------------------------------------------ storing

    def _start_batches(self) -> None:
        """Hand received puts to workers, a group at a time (group commit).

        A group that is not full starts only when none is running: while one is
        stored, the puts that arrive wait and go together when it ends (or as
        soon as they fill a group).  A lone put is stored at once; a pipelined
        stream makes few, full groups instead of a group per put that arrived
        while the workers were busy (measured: 55 of 91 groups held one file
        for 1000 x 64 KiB, each paying a group's transactions and syncs).
        """
        cfg = self.ctx.config
        store, user = self.ctx.store, self.user
        enough = max(1, cfg.inline_window_bytes // max(1, cfg.inline_batches))
        while self.batch and self.batches_running < cfg.inline_batches:
            if self.batches_running and len(self.batch) < cfg.inline_batch_files \
                    and self.batch_bytes < enough:
                return         # not a full group yet: a running group's end starts it
            # A group never overlaps a running one on a target: puts of one file stay
            # in request order (the store orders those inside one group itself).
            items = []
            size = 0
            for item in self.batch[:cfg.inline_batch_files]:
                if item.target in self.storing:
                    break
                items.append(item)
                size += item.request.size                        # type: ignore[attr-defined]
            if not items:
                return
            if self.batches_running and len(items) < cfg.inline_batch_files \
                    and size < enough:
                return         # cut short by a target being stored: its end starts it
            del self.batch[:len(items)]
            self.batch_bytes -= size
            for item in items:
                self.storing[item.target] = self.storing.get(item.target, 0) + 1
            files = [SmallFile(path=it.request.path, data=it.buf,   # type: ignore[arg-type]
                               sha256=it.request.sha256,             # type: ignore[attr-defined]
                               overwrite=it.request.overwrite,       # type: ignore[attr-defined]
                               mtime=it.request.mtime,               # type: ignore[attr-defined]
                               mode=it.request.mode,                 # type: ignore[attr-defined]
                               blake3=it.request.blake3,             # type: ignore[attr-defined]
                               cwd=it.cwd) for it in items]
            self.batches_running += 1
            # (the disk lane: a listing must not wait behind these fsyncs)
            self.ctx.jobs.submit(user, SyncJob(lambda files=files:
                                               store.store_small_files(user, files)),
                                 lambda result, error, items=items:
                                 self._batch_done(items, result, error))

    def _batch_done(self, items: list[InlinePut], results: Any,
                    error: BaseException | None) -> None:
        # Runs even if the session closed meanwhile: the bookkeeping must happen.
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
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, StorageError):
                    log.error("storing inline put %s failed", req.path,  # type: ignore
                              exc_info=outcome)
                reply = error_reply(outcome, req.id, operation="commit", fatal_allowed=False)
                result = f"failed ({reply.code})"
            else:
                reply = PutDone(id=req.id, path=outcome.path, size=outcome.size,
                                sha256=outcome.sha256, blake3=outcome.blake3)
                result = "ok"
            item.reply = encode(reply)
            if result != "ok" and self.log_budget is not None and \
                    not self.log_budget().allow(f"inline put {result}", now):
                continue                    # one connection cannot flood the log
            log.info("upload user=%s path=%s bytes=%d seconds=%.3f inline result=%s", self.user,
                     item.target or req.path, req.size,  # type: ignore[attr-defined]
                     now - item.started, result)
        self._start_batches()
        self.release_if_idle()          # (a dropped pipeline: nobody takes replies any more)
        self.on_progress()

    # ------------------------------------------------------------ answering

    def ready_replies(self) -> list[bytes]:
        """The encoded replies that are next in line, in request order."""
        inflight = self.inflight
        ready = []
        while inflight and inflight[0].reply is not None:
            ready.append(inflight.pop(0).reply)
        self.release_if_idle()
        return ready                                      # type: ignore[return-value]

    def drop(self) -> None:
        """The session ends: puts not answered yet never will be.

        Groups already on a worker finish (their files may become visible,
        unacknowledged), and their completion frees the slot.
        """
        self.receiving = None
        self.inflight.clear()
        self.batch.clear()
        self.batch_bytes = 0
        self.release_if_idle()

    def release_if_idle(self) -> None:
        if self.slot and self.idle():
            self.slot = False
            self.ctx.uploads.free(self.user)
