"""``ObjectUpload``: the daemon's ``Upload`` contract over a multipart blob upload.

The daemon writes DATA bytes into an upload on the reactor thread, asks a
worker to ``flush`` every ``writeback_bytes`` and to ``commit`` at the end
(ftpd/transfers.py).  The local backend's ``Upload`` appends to a partial file;
this one appends to a local spool file per part (fast, local, like the partial)
and leaves every network call to the worker-thread methods:

- ``write`` (reactor): append to the part being filled; a full part joins the
  queue of parts waiting to be sent.  No S3 or PostgreSQL call.
- ``flush`` (worker): hash, upload and record each queued part, in order.  A
  recorded part is durable: any node resumes after it.
- ``commit`` (worker): send the rest, complete the blob, verify the SHA-256
  (running hash if this writer saw every byte from 0, else read back), publish
  in one transaction; the lock is released whatever happens.
- ``release`` (any thread): stop writing; the recorded parts stay resumable.
  The advisory-lock release goes to the store's background thread.

The resume offset another node sees is the sum of the recorded parts: what
sat in this node's spool when it died is resent by the client.

The spool is bounded (docs/OBJSTORE.md, docs/SECURITY.md): an upload holds at
most the part being filled and ``MAX_WAITING_PARTS`` full parts not yet sent
(more means the object store is not keeping up with the client), and all the
node's uploads together at most the store's ``spool_limit`` bytes.  A write
past either bound is ``IO_ERROR`` and ends this writer; the client resumes
later from the recorded parts.
"""

from __future__ import annotations

import errno
import hashlib
import re
import tempfile
import threading
from collections import deque
from typing import IO, TYPE_CHECKING

from .. import faults
from ..errors import IntegrityError, NoSpace, NotFound, OffsetMismatch, StorageIOError
from ..models import CommitResult
from .pending import Pending
from .writer import Part

if TYPE_CHECKING:
    from .store import ObjectStore

__all__ = ["ObjectUpload"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_READ = 1 << 20
#: Full parts one upload may hold in its spool before they are sent.
MAX_WAITING_PARTS = 4


class ObjectUpload:
    """One node's writer of one upload (it holds the upload's advisory lock)."""

    def __init__(self, store: ObjectStore, pending: Pending, token: int, *, overwrite: bool,
                 restarted: bool) -> None:
        self.user = pending.user
        self.path = pending.path
        self.size = pending.size
        self.sha256 = pending.sha256
        self.overwrite = overwrite
        self.restarted = restarted
        #: The daemon's catch-up hashes nothing here: parts are hashed as they are sent.
        self.hasher = None
        self._store = store
        self._pending = pending
        self._token = token
        self._parts: list[Part] = list(pending.parts)
        self.offset = sum(p.size for p in self._parts)
        self._queue: deque[tuple[int, IO[bytes], int]] = deque()
        self._current: IO[bytes] | None = None
        self._current_size = 0
        # Only a writer that sees every byte from 0 can hash as it goes.
        self._hash = hashlib.sha256() if self.offset == 0 else None
        self._hashed_parts = 0
        self._lock = threading.Lock()          # the queue, the current part, the state
        self._send_lock = threading.Lock()     # one sender at a time
        self._state = "active"                 # -> released | committed | discarded
        self._spooled = 0                      # bytes taken from the store's spool budget

    def __repr__(self) -> str:
        return f"<ObjectUpload {self.user}:{self.path} {self.offset}/{self.size} {self._state}>"

    @property
    def active(self) -> bool:
        return self._state == "active"

    @property
    def upload_id(self) -> int:
        return self._pending.id

    def complete(self) -> bool:
        return self.offset == self.size

    def expect_hash_later(self) -> None:
        """Nothing to do: the running hash (or the read-back) covers a later SHA-256."""

    def catch_up(self) -> int:
        return self.flush()

    def backlogged(self) -> bool:
        """Full parts wait for S3: the daemon stops reading this upload until a flush
        sends them, well before ``write`` would refuse (at ``MAX_WAITING_PARTS``)."""
        return len(self._queue) >= MAX_WAITING_PARTS // 2

    def hash_behind(self) -> int:
        return 0

    # ------------------------------------------------------------ reactor side
    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` to the local spool (no network); returns its length."""
        with self._lock:
            self._check_active()
            view = memoryview(data).cast("B")
            length = len(view)
            if self.offset + length > self.size:
                raise OffsetMismatch("data would pass the declared size", expected=self.offset,
                                     got=self.offset + length, size=self.size)
            part_size = self._pending.part_size
            waiting = len(self._queue) + (self._current_size + length) // part_size
            if waiting > MAX_WAITING_PARTS or not self._store.spool_take(length):
                self._spent()
                raise StorageIOError("the upload spool is full: the object store is not "
                                     "keeping up; resume later", path=self.path)
            self._spooled += length
            try:
                while view:
                    if self._current is None:
                        self._current = tempfile.TemporaryFile(  # noqa: SIM115 - kept open
                            dir=self._store.spool_dir, prefix="ftpd-part-")
                        self._current_size = 0
                    take = view[: part_size - self._current_size]
                    self._current.write(take)
                    self._current_size += len(take)
                    self.offset += len(take)
                    view = view[len(take):]
                    if self._current_size == part_size:
                        self._queue_current()
            except OSError as exc:
                self._spent()
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise NoSpace("no space left for the upload spool", path=self.path)
                raise StorageIOError("spool write failed", path=self.path)
            return length

    def _spent(self) -> None:
        """A failed write ends this writer (caller holds ``_lock``); the client resumes
        from the recorded parts."""
        self._state = "released"
        self._drop_files()
        self._store.release_lock_later(self.upload_id)

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        with self._lock:
            if offset != self.offset:
                raise OffsetMismatch("offset does not match the bytes held",
                                     expected=self.offset, got=offset)
        return self.write(data)

    def _queue_current(self) -> None:
        assert self._current is not None
        self._current.flush()
        number = len(self._parts) + len(self._queue) + 1
        self._queue.append((number, self._current, self._current_size))
        self._current = None
        self._current_size = 0

    # ------------------------------------------------------------ worker side
    def flush(self) -> int:
        """Hash, upload and record every queued part, in order.  SLOW: a worker's job.

        Returns the durable offset (what any node would resume from)."""
        blobs, meta = self._store.blobs, self._store.meta
        with self._send_lock:
            while True:
                with self._lock:
                    if not self.active or not self._queue:
                        return sum(p.size for p in self._parts)
                    number, spool, size = self._queue[0]
                if self._hash is not None and number > self._hashed_parts:
                    spool.seek(0)
                    while chunk := spool.read(_READ):
                        self._hash.update(chunk)
                    self._hashed_parts = number
                spool.seek(0)
                etag = blobs.upload_part(self._pending.blob, self._pending.mpu, number, spool)
                faults.crash_point("object.after_part_sent")
                part = Part(number, size, etag)
                meta.record_part(self.upload_id, self._token, part)
                faults.crash_point("object.after_part_recorded")
                with self._lock:
                    self._queue.popleft()
                    self._parts.append(part)
                    self._give_back(size)
                spool.close()

    def commit(self, sha256: str | None = None, *, mtime: float | None = None) -> CommitResult:
        """Send the rest, complete, verify, publish.  SLOW: a worker's job.

        ``IntegrityError`` if incomplete (stays resumable) or the SHA-256 differs
        (the upload is discarded).  On any other error the lock is released and
        the upload stays resumable from its recorded parts.
        """
        with self._lock:
            self._check_active()
            if sha256 is not None:
                if not _SHA256.fullmatch(sha256) or self.sha256 not in (None, sha256):
                    raise ValueError("commit: a malformed or second, different SHA-256")
                self.sha256 = sha256
            if self.offset != self.size:
                raise IntegrityError("upload is incomplete", expected=self.size,
                                     got=self.offset)
            if self._current is not None and self._current_size:
                self._queue_current()
        try:
            digest = self._finish()
            if self.sha256 is not None and digest != self.sha256:
                self._store.blobs.delete(self._pending.blob)
                self._discard()
                raise IntegrityError("SHA-256 of the upload does not match its declaration",
                                     expected=self.sha256, got=digest)
            faults.crash_point("object.after_complete")
            node = self._store.meta.publish(self.upload_id, self._token, digest,
                                            overwrite=self.overwrite, mtime=mtime)
            faults.crash_point("object.after_publish")
        except BaseException:
            self.release()
            raise
        with self._lock:
            self._state = "committed"
        self._store.release_lock_later(self.upload_id)
        # The facade's contract: the declared digest, None when none was declared (the
        # entry keeps the computed one either way, for the hash cache).
        return CommitResult(path=node.path, size=node.size,
                            sha256=digest if self.sha256 is not None else None)

    def _finish(self) -> str:
        blobs, pending = self._store.blobs, self._pending
        self.flush()
        with self._lock:
            if self._queue or not self.active:
                raise StorageIOError("upload is no longer active", path=self.path)
        if self.size == 0:
            blobs.abort(pending.blob, pending.mpu)
            blobs.put(pending.blob, b"")
            return hashlib.sha256(b"").hexdigest()
        try:
            blobs.complete(pending.blob, pending.mpu, [(p.number, p.etag) for p in self._parts])
        except NotFound:
            # Completed by a node that died before publishing: hash it back below.
            if blobs.size(pending.blob) != self.size:
                raise
            self._hash = None
        if self._hash is not None and self._hashed_parts == len(self._parts):
            return self._hash.hexdigest()
        h = hashlib.sha256()
        for chunk in blobs.read(pending.blob, end=self.size):
            h.update(chunk)
        return h.hexdigest()

    def _discard(self) -> None:
        """Give the lock back now (the abort needs it free), then forget the upload."""
        with self._lock:
            self._state = "discarded"
            self._drop_files()
        self._store.meta.locks.release(self.upload_id)
        try:
            self._store.meta.abort_upload(self.user, self.path)
        except (NotFound, StorageIOError):
            pass                    # expiry or the collector gets it

    # ------------------------------------------------------------ any thread
    def release(self) -> None:
        """Stop writing; the recorded parts and the reservation stay.  Idempotent."""
        with self._lock:
            if not self.active:
                return
            self._state = "released"
            self._drop_files()
        self._store.release_lock_later(self.upload_id)

    def abort(self) -> None:
        """Discard the upload and its reservation (a worker's job: PostgreSQL)."""
        with self._lock:
            self._check_active()
        self._discard()

    def _drop_files(self) -> None:
        """Close the spool files (caller holds ``_lock``)."""
        for _, spool, _ in self._queue:
            spool.close()
        self._queue.clear()
        if self._current is not None:
            self._current.close()
            self._current = None
        self._current_size = 0
        self._give_back(self._spooled)

    def _give_back(self, size: int) -> None:
        """Return spool budget (caller holds ``_lock``)."""
        size = min(size, self._spooled)
        self._spooled -= size
        self._store.spool_give(size)

    def _check_active(self) -> None:
        if not self.active:
            raise StorageIOError("upload is no longer active", path=self.path, state=self._state)

    def _revoke(self) -> None:
        self.release()

