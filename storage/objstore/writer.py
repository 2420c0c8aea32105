"""Append-only writer of one blob as an S3 multipart upload, resumable by any node.

Bytes are spooled to a local temporary file until a whole part is there
(``part_size``, at least S3's 5 MiB), then that part is uploaded and handed
to ``on_part``, which records it in the metadata database.  The resume offset
is the sum of the recorded parts: a node that resumes someone else's upload
builds a writer from those records, and the client resends at most one
part's worth (what sat in the dead node's spool).  A part uploaded but not
recorded (the node died in between) is harmless: the resumer uploads the same
part number again, and S3 keeps the last upload of a number.

A writer that saw every byte from offset 0 checks the SHA-256 from its running
hash; one that resumed checks it by reading the completed blob back, before
anything points at the blob.

Not thread-safe: one writer per upload, used by one worker at a time (the
metadata layer's advisory lock enforces one writer across nodes).  After any
exception the writer is spent: drop it and resume from ``durable_offset``.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import IntegrityError, NotFound, StorageIOError
from .blobs import DEFAULT_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, BlobStore

__all__ = ["BlobWriter", "Part", "choose_part_size"]

_MIB = 1 << 20


@dataclass(frozen=True)
class Part:
    """One uploaded part: 1-based ``number``, ``size`` in bytes, S3 ``etag``."""

    number: int
    size: int
    etag: str


def choose_part_size(total: int, preferred: int = DEFAULT_PART_SIZE) -> int:
    """``preferred`` (at least 5 MiB), raised so that ``total`` fits in 10,000 parts.

    Fixed when the upload begins and stored with it, so every node resuming it
    cuts the same parts.
    """
    if total < 0:
        raise ValueError("negative size")
    size = max(preferred, MIN_PART_SIZE, -(-total // MAX_PARTS))
    return -(-size // _MIB) * _MIB


class BlobWriter:
    """See the module docstring.  ``parts`` are the recorded parts, numbered 1..n."""

    def __init__(self, blobs: BlobStore, blob_id: str, upload_id: str, part_size: int,
                 parts: Sequence[Part] = (), *, spool_dir: str | None = None,
                 on_part: Callable[[Part], None] | None = None) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part size must be at least {MIN_PART_SIZE} bytes")
        ordered = sorted(parts, key=lambda p: p.number)
        if [p.number for p in ordered] != list(range(1, len(ordered) + 1)):
            raise ValueError("recorded parts must be numbered 1..n without gaps")
        # Only the last part may be short (then the upload was finished, maybe completed).
        if any(p.size < MIN_PART_SIZE for p in ordered[:-1]):
            raise ValueError("a recorded part is smaller than the S3 minimum")
        self.blobs = blobs
        self.blob_id = blob_id
        self.upload_id = upload_id
        self.part_size = part_size
        self.parts: list[Part] = ordered
        self.durable_offset = sum(p.size for p in ordered)
        self._on_part = on_part
        # Closed by close()/finish(), whichever ends the writer.
        self._spool = tempfile.TemporaryFile(dir=spool_dir, prefix="ftpd-part-")  # noqa: SIM115
        self._spooled = 0
        # Only a writer that sees every byte can hash as it goes.
        self._hash = hashlib.sha256() if self.durable_offset == 0 else None
        self._spent = False
        self._done = False

    @property
    def offset(self) -> int:
        """Bytes accepted so far (recorded parts plus the local spool)."""
        return self.durable_offset + self._spooled

    def close(self) -> None:
        """Drop the local spool; recorded parts stay for a resume."""
        self._spent = True
        self._spool.close()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self) -> None:
        if self._spent:
            raise StorageIOError("upload writer is no longer usable; resume the upload")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``; uploads each part as it fills.  SLOW (network): a worker's job."""
        self._check()
        view = memoryview(data).cast("B")
        try:
            while view:
                take = view[: self.part_size - self._spooled]
                self._spool.write(take)
                if self._hash is not None:
                    self._hash.update(take)
                self._spooled += len(take)
                view = view[len(take):]
                if self._spooled == self.part_size:
                    self._send_spool()
        except BaseException:
            self._spent = True
            raise

    def _send_spool(self) -> Part:
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            raise StorageIOError("upload exceeds the object store's part limit")
        self._spool.flush()
        self._spool.seek(0)
        etag = self.blobs.upload_part(self.blob_id, self.upload_id, number, self._spool)
        part = Part(number, self._spooled, etag)
        if self._on_part is not None:
            self._on_part(part)         # recorded: from now on any node can resume past it
        self.parts.append(part)
        self.durable_offset += part.size
        self._spool.seek(0)
        self._spool.truncate()
        self._spooled = 0
        return part

    def finish(self, size: int | None = None, sha256: str | None = None) -> str:
        """Upload the last part, complete the blob and verify it; returns its SHA-256.

        ``size``/``sha256`` are the client's declaration.  A resumed writer
        reads the whole blob back to hash it (SLOW).  On a mismatch the blob is
        deleted (nothing points at it yet) and ``IntegrityError`` raised.
        """
        self._check()
        try:
            total = self.offset
            if size is not None and total != size:
                raise IntegrityError("upload size does not match its declaration",
                                     expected=size, got=total)
            if total == 0:
                # S3 wants at least one part; an empty blob is a plain PUT.
                self.blobs.abort(self.blob_id, self.upload_id)
                self.blobs.put(self.blob_id, b"")
            else:
                if self._spooled:
                    self._send_spool()
                self._complete(total)
            self._done = True
            digest = (self._hash.hexdigest() if self._hash is not None
                      else self._hash_back())
            if sha256 is not None and digest != sha256.lower():
                self.blobs.delete(self.blob_id)
                raise IntegrityError("SHA-256 of the upload does not match its declaration",
                                     expected=sha256.lower(), got=digest)
            return digest
        finally:
            self.close()

    def _complete(self, total: int) -> None:
        try:
            self.blobs.complete(self.blob_id, self.upload_id,
                                [(p.number, p.etag) for p in self.parts])
        except NotFound:
            # Completed already by a node that died before publishing: the blob is
            # there.  Its bytes are checked by the hash below like any other's.
            if self.blobs.size(self.blob_id) != total:
                raise
            self._hash = None

    def _hash_back(self) -> str:
        h = hashlib.sha256()
        for chunk in self.blobs.read(self.blob_id):
            h.update(chunk)
        return h.hexdigest()
