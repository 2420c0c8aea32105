"""One upload from begin to publish, over both layers: the sequence the Store must follow.

``begin_upload`` finds or creates the upload (a fresh blob id and S3
multipart upload, the reservation in PostgreSQL), takes the writer lock and
returns an ``UploadHandle`` whose ``offset`` is where the client resumes.
``write`` spools and uploads parts (each recorded, fenced by the lock);
``commit`` completes the blob, verifies the SHA-256 (running hash, or read
back when resumed) and publishes in one transaction.  Every step is SLOW
(network): worker threads only.
"""

from __future__ import annotations

from ..errors import StorageError, UploadBusy
from .blobs import DEFAULT_PART_SIZE, BlobStore
from .meta import MetaStore
from .namespace import Node
from .pending import Pending
from .writer import BlobWriter, Part, choose_part_size

__all__ = ["UploadHandle", "begin_upload"]


class UploadHandle:
    """The one writer of an upload on this node (holds its lock until closed)."""

    def __init__(self, meta: MetaStore, blobs: BlobStore, pending: Pending, token: int, *,
                 overwrite: bool, spool_dir: str | None) -> None:
        self.meta = meta
        self.pending = pending
        self.token = token
        self.overwrite = overwrite
        self.writer = BlobWriter(blobs, pending.blob, pending.mpu, pending.part_size,
                                 pending.parts, spool_dir=spool_dir, on_part=self._record)
        self._closed = False

    def _record(self, part: Part) -> None:
        self.meta.record_part(self.pending.id, self.token, part)

    @property
    def offset(self) -> int:
        """Bytes accepted so far; at begin, the resume offset (sum of recorded parts)."""
        return self.writer.offset

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writer.write(data)

    def commit(self, mtime: float | None = None) -> Node:
        """Complete, verify, publish; the lock is released whatever happens."""
        try:
            digest = self.writer.finish(self.pending.size, self.pending.sha256)
            return self.meta.publish(self.pending.id, self.token, digest,
                                     overwrite=self.overwrite, mtime=mtime)
        finally:
            self.close()

    def close(self) -> None:
        """Stop writing (the upload stays resumable from its recorded parts)."""
        if self._closed:
            return
        self._closed = True
        self.writer.close()
        self.meta.locks.release(self.pending.id)

    def __enter__(self) -> UploadHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def begin_upload(meta: MetaStore, blobs: BlobStore, user: str, path: str, size: int,
                 sha256: str | None, *, cwd: str = "/", overwrite: bool = False,
                 part_size: int = DEFAULT_PART_SIZE,
                 spool_dir: str | None = None) -> UploadHandle:
    """Start or resume the upload of ``size`` bytes to ``path`` (on any node).

    An unfinished upload of the same path with another declaration is
    aborted first (its parts are for other bytes).  ``UploadBusy`` if a writer
    on any node holds it; ``QuotaExceeded``, ``Exists``, ``IsADirectory`` as
    ``MetaStore.create_upload``; ``StorageIOError`` on an outage.
    """
    pending = meta.get_upload(user, path, cwd)
    sha = sha256.lower() if sha256 else None
    if pending is not None and (pending.size != size or pending.sha256 != sha):
        meta.abort_upload(user, path, cwd)
        pending = None
    if pending is None:
        blob = blobs.new_blob_id()
        mpu = blobs.start_multipart(blob)
        try:
            pending, created = meta.create_upload(
                user, path, size, sha, blob=blob, mpu=mpu, cwd=cwd, overwrite=overwrite,
                part_size=choose_part_size(size, part_size))
        except StorageError:
            _abort_quietly(blobs, blob, mpu)
            raise
        if not created:                       # another node began it meanwhile
            _abort_quietly(blobs, blob, mpu)
    token = meta.locks.acquire(pending.id)
    if token is None:
        raise UploadBusy("an upload to this path is in progress", path=pending.path)
    try:
        return UploadHandle(meta, blobs, pending, token, overwrite=overwrite,
                            spool_dir=spool_dir)
    except BaseException:
        meta.locks.release(pending.id)
        raise


def _abort_quietly(blobs: BlobStore, blob: str, mpu: str) -> None:
    """Best effort: an orphaned multipart upload is the collector's (``abort_stale``)."""
    try:
        blobs.abort(blob, mpu)
    except StorageError:
        pass
