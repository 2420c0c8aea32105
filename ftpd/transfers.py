"""Transfers: a resumable upload being received, a download being produced.

Each object owns its own fields and reports back by return value; neither
touches the session.  The session decides what a transfer's end means for
the connection (its state, its replies, its log line's user).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from protocol import MAX_INT, ProtocolError, Request, data_header
from storage import IntegrityError

from .workers import LongJob

if TYPE_CHECKING:
    from .context import SessionContext

log = logging.getLogger("ftpd.conn")

#: Replies held back while a DATA frame is half sent, before reading pauses.
MAX_DEFERRED = 64


class UploadTransfer:
    """A resumable upload: the store's ``Upload`` plus the reactor-side catch-up.

    While bytes arrive, a worker hashes them and another flushes them to disk
    (at most one job of each in flight), so that the commit after the last
    byte only has the tail left.  ``commit_job`` is the slow part, for a
    worker.  ``end`` releases (or not) the store's upload, frees the slot and
    logs the transfer.
    """

    __slots__ = ("ctx", "request", "upload", "start", "started", "hash_mark", "flush_mark",
                 "hashing", "flushing", "ended", "on_flushed")

    def __init__(self, ctx: SessionContext, request: Request, upload: Any) -> None:
        self.ctx = ctx
        self.request = request
        self.upload = upload
        self.start = upload.offset
        self.started = time.monotonic()
        # A hash covers the whole file, so hashing starts at 0 even for a resumed upload.
        self.hash_mark = 0
        self.flush_mark = upload.offset
        self.hashing = False            # a worker is hashing this upload's bytes
        self.flushing = False           # a worker is flushing them to disk
        self.ended = False
        #: Called on the reactor after each background flush (the session reads again).
        self.on_flushed: Any = None
        if request.defer_sha256:        # type: ignore[attr-defined]
            upload.expect_hash_later()
        elif getattr(request, "defer_blake3", None):
            upload.expect_hash_later("blake3")   # (only a store that lists BLAKE3)
        upload.mtime = request.mtime    # type: ignore[attr-defined]
        upload.mode = request.mode      # type: ignore[attr-defined]

    @property
    def stream(self) -> bool:
        """An upload of unknown length: quota is reserved as bytes arrive, never resumed."""
        return bool(self.request.stream)                # type: ignore[attr-defined]

    @property
    def deferred_hash(self) -> bool:
        """The client names the digest in a ``commit`` after the last byte."""
        return self._deferred() is not None

    def _deferred(self) -> str | None:
        """The digest the put deferred to ``commit``: "sha256", "blake3" or None."""
        request = self.request
        if request.defer_sha256:                        # type: ignore[attr-defined]
            return "sha256"
        return "blake3" if getattr(request, "defer_blake3", None) else None

    def remaining(self) -> int:
        """Bytes the client may still send (a stream: no limit but the quota)."""
        if self.stream:
            return MAX_INT - self.upload.offset
        return self.upload.size - self.upload.offset

    def write(self, view: memoryview) -> None:
        """Write DATA bytes (a view valid only now); raises ``StorageError`` on failure
        (``QuotaExceeded`` when a stream's next bytes do not fit)."""
        if self.stream:
            self.ctx.store.reserve_stream(self.upload, self.upload.offset + len(view))
        self.upload.write(view)

    def wants_commit(self) -> bool:
        """Every byte is in and the hash was declared up front: commit now."""
        return self.upload.complete() and not self.deferred_hash

    def check_commit(self, request: Request) -> None:
        """Whether a ``commit`` request may commit now; raises the refusal if not."""
        upload = self.upload
        if not self.deferred_hash:
            raise ProtocolError("commit needs an upload declared with defer_sha256",
                                code="BAD_STATE")
        deferred = self._deferred()
        named = "sha256" if getattr(request, "sha256", None) is not None else "blake3"
        if named != deferred:
            raise ProtocolError(f"commit names a {named} digest; the put deferred a {deferred}",
                                code="BAD_REQUEST", expected=deferred)
        if self.stream:
            if getattr(request, "size", None) is None:
                raise ProtocolError("commit of a stream needs its size", code="BAD_REQUEST")
            return
        if not upload.complete():
            raise ProtocolError(f"commit after {upload.offset} of {upload.size} bytes",
                                code="OFFSET_MISMATCH", expected=upload.size, got=upload.offset)

    def catch_up(self) -> None:
        """Hash and flush what has arrived, on workers, while more arrives.

        Two independent jobs, at most one of each in flight: the hash must not
        wait for the disk, or it falls behind the writer (a flush of 16 MiB
        takes about as long as hashing it) and the commit is left with a long
        tail to hash.  Each job covers what was written when it started.  Once
        every byte is in (a deferred upload waiting for its ``commit``), the
        rest is caught up at once, while the client finishes its own hash.
        """
        upload = self.upload
        step = 1 if upload.complete() else self.ctx.config.writeback_bytes
        pool = self.ctx.pool
        if not self.hashing and upload.hasher is not None and \
                upload.offset - self.hash_mark >= step:
            self.hashing = True
            self.hash_mark = upload.offset
            pool.submit(LongJob(upload.hash_behind), self._hashed)
        if not self.flushing and (upload.offset - self.flush_mark >= step or
                                  self.backlogged()):
            self.flushing = True
            self.flush_mark = upload.offset
            pool.submit(LongJob(upload.flush), self._flushed)

    def _hashed(self, _: Any, error: BaseException | None) -> None:
        self.hashing = False
        if error is not None:
            log.warning("background hash of %s failed: %s", self.upload.path, error)
        elif not self.ended and self.upload.complete():
            self.catch_up()                 # the bytes that came in meanwhile

    def _flushed(self, _: Any, error: BaseException | None) -> None:
        self.flushing = False
        if error is not None:
            log.warning("background flush of %s failed: %s", self.upload.path, error)
        elif not self.ended and self.backlogged():
            self.catch_up()                 # the parts that filled up meanwhile
        if self.on_flushed is not None:
            self.on_flushed()

    def backlogged(self) -> bool:
        """Bytes wait for a flush before more may be read (the object backend's spool:
        its parts wait for S3); the session stops reading meanwhile."""
        waiting = getattr(self.upload, "backlogged", None)
        return waiting is not None and waiting()

    def commit_job(self, sha256: str | None, size: int | None = None,
                   blake3: str | None = None) -> Any:
        """The worker's part of the commit: check ``size`` (the client's count, from
        ``commit``), seal a stream, verify against the digest ``commit`` named (none:
        the declared one), fsync, publish (a long job: the hash's tail and the fsync)."""
        upload = self.upload
        store = self.ctx.store
        stream = self.stream
        self.ended = True                   # no more catch-up: the commit does the rest

        def job() -> Any:
            held = upload.offset
            if size is not None and size != held:
                upload.abort()
                raise IntegrityError(f"commit names {size} bytes, the server received {held};"
                                     " the partial upload was discarded",
                                     path=upload.path, expected=size, got=held)
            if stream:
                store.seal_stream(upload)
            if blake3 is not None:          # (only a store that lists BLAKE3 gets it)
                return upload.commit(blake3=blake3)
            return upload.commit(sha256)
        return LongJob(job)

    def end(self, *, released: bool, result: str, user: str | None) -> None:
        """Release the store's upload (or not: committed), free the slot, log the outcome."""
        upload = self.upload
        self.ended = True
        if released:
            try:
                if self.stream:
                    if upload.active:
                        upload.abort()      # a stream is never resumed: nothing to keep
                else:
                    upload.release()
            except Exception:
                log.exception("releasing upload %s failed", upload.path)
        self.ctx.uploads.free(upload.user)
        elapsed = max(1e-9, time.monotonic() - self.started)
        moved = upload.offset - self.start
        log.info("upload user=%s path=%s bytes=%d seconds=%.3f rate=%.1fMB/s result=%s",
                 user, upload.path, moved, elapsed, moved / elapsed / 1e6, result)


class FramedDownload:
    """What every download has: its request, the position, the DATA frame being sent.

    ``deferred`` holds replies (pongs) that arrived while a frame was half
    sent: the stream cannot carry a control frame until the frame ends.
    ``cancel_id`` is set by a ``cancel``, answered at the next frame boundary.
    Subclasses say only how a frame's body goes out (``_send_body``): from a
    file descriptor (``DownloadProducer``) or from pulled chunks of a blob
    (``ftpd.blob_download``).
    """

    __slots__ = ("request", "path", "size", "pos", "start", "frame_left", "frame_size",
                 "deferred", "cancel_id", "started")

    def __init__(self, request: Request, path: str, size: int, offset: int,
                 frame_size: int) -> None:
        self.request = request
        self.path = path
        self.size = size
        self.pos = offset
        self.start = offset
        self.frame_left = 0
        self.frame_size = frame_size
        self.deferred: list[bytes] = []
        self.cancel_id: int | None = None
        self.started = time.monotonic()

    def mid_frame(self) -> bool:
        return self.frame_left > 0

    def deferred_full(self) -> bool:
        return len(self.deferred) >= MAX_DEFERRED

    def next_frame(self) -> int:
        """Open the next frame; returns its length (0 at the end of the file)."""
        self.frame_left = min(self.frame_size, self.size - self.pos)
        return self.frame_left

    def produce(self, transport: Any) -> str | None:
        """Send frames while the transport takes them.

        Returns None when the transport (or the source) cannot give more now
        (the session is resumed later), or how the download ended: ``"ok"``
        (every byte is out), ``"cancelled"`` (at a frame boundary, after a
        ``cancel``), or a reason to close the connection (the source shrank or
        failed mid-frame).  Replies held back during a frame go out at its end.
        """
        while True:
            if self.frame_left == 0:
                if self.deferred:
                    for data in self.deferred:
                        transport.write(data)
                    self.deferred.clear()
                if self.cancel_id is not None:
                    return "cancelled"
                if self.next_frame() == 0:
                    return "ok"
                self._send_header(transport, data_header(self.frame_left))
                continue
            outcome = self._send_body(transport)
            if outcome is not True:
                return outcome

    def _send_header(self, transport: Any, header: bytes) -> None:
        """Send a frame's header (its body follows in the same call of ``produce``)."""
        transport.write(header)

    def _send_body(self, transport: Any) -> bool | str | None:
        """Send some of the current frame's body (advancing ``pos``/``frame_left``):
        True to go on, None to wait, or a reason the download ends."""
        raise NotImplementedError

    def _log_end(self, result: str, user: str | None) -> None:
        moved = self.pos - self.start
        elapsed = max(1e-9, time.monotonic() - self.started)
        log.info("download user=%s path=%s bytes=%d seconds=%.3f rate=%.1fMB/s result=%s",
                 user, self.path, moved, elapsed, moved / elapsed / 1e6, result)


class DownloadProducer(FramedDownload):
    """A file streaming out as DATA frames from an open descriptor, through the
    transport's ``send_file`` (sendfile in clear text, pread under TLS)."""

    __slots__ = ("fd",)

    def __init__(self, request: Request, path: str, fd: int, size: int, offset: int,
                 frame_size: int) -> None:
        super().__init__(request, path, size, offset, frame_size)
        self.fd = fd

    def _send_header(self, transport: Any, header: bytes) -> None:
        """The header is held back (``write_more``) and leaves in one segment with the
        start of the body: one packet, and one wake-up of the reader, fewer per frame."""
        transport.write_more(header)

    def _send_body(self, transport: Any) -> bool | str | None:
        try:
            sent = transport.send_file(self.fd, self.pos, self.frame_left)
        except EOFError:
            return "file shrank during download"
        except OSError as exc:
            return f"read failed: {exc.__class__.__name__}"
        if sent == 0:
            return None
        self.pos += sent
        self.frame_left -= sent
        return True

    def end(self, result: str, user: str | None) -> None:
        """Close the file and log the transfer."""
        try:
            os.close(self.fd)
        except OSError:
            pass
        self._log_end(result, user)
