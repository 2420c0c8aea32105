"""One active writer of one partial upload.

An ``Upload`` is handed to a single connection; it is not meant to be used by
two threads at once, but its lock makes that harmless (and lets the store close
its fd safely from another thread).  Writes never fsync: durability is the job
of ``commit``, which runs in a worker thread.  After any write error the offset is
re-read from the file, so it always equals the bytes really held.

The upload does not know who made it: it reports ``commit``, ``release`` and
``abort`` to an ``UploadOwner`` (the ``UploadManager``), so this module imports
nothing of the manager's.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable
from typing import Protocol

from .confine import map_oserror
from .digests import BLAKE3, HEX_RE, SHA256
from .errors import NoSpace, OffsetMismatch, StorageIOError
from .hashing import PrefixHasher
from .models import CommitResult
from .partials import write_all
from .placement import Target

__all__ = ["ALLOCATE_MIN", "Upload", "UploadOwner"]

#: The first background flush of an upload with at least this much still to come
#: allocates the rest of the partial's blocks in one call (``_allocate_rest``).
ALLOCATE_MIN = 16 << 20
_FALLOC_FL_KEEP_SIZE = 1


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc's ``fallocate`` (Linux): ``os.posix_fallocate`` cannot keep the size."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_fallocate = _load_fallocate()


def _allocate_rest(fd: int, start: int, length: int) -> None:
    """Allocate ``length`` bytes of blocks from ``start`` without changing the file's
    size (``FALLOC_FL_KEEP_SIZE``: a resume still starts at the bytes really held).

    Why: ext4's delayed allocation makes every ``write`` reserve blocks page by page
    and every flush allocate them; with the blocks allocated up front, writing
    1 GiB and ``fdatasync``ing it every 16 MiB took 0.41-0.51 s of CPU instead of
    0.58-0.61 s (docs/BENCHMARKS.md).  Best effort: where it fails (no space,
    another file system, not Linux) the writes allocate as before.
    """
    if _fallocate is not None and length > 0:
        _fallocate(fd, _FALLOC_FL_KEEP_SIZE, start, length)


class UploadOwner(Protocol):
    """What an ``Upload`` asks of whoever began it; each is called with the upload's lock held."""

    def commit(self, upload: Upload) -> CommitResult: ...

    def release(self, upload: Upload) -> None: ...

    def discard(self, upload: Upload) -> None: ...


class Upload:
    """Writer of the partial for ``(user, path)``; see :meth:`Store.begin_upload`.

    Attributes: ``user``, ``path`` (normalised target), ``size`` and ``sha256``
    or ``blake3`` (as declared, at most one), ``offset`` (bytes held),
    ``restarted`` (an older partial with a different declaration was
    discarded), ``overwrite``.  ``hasher`` runs the digest to verify (its
    ``algo`` is the one declared, or expected at commit).

    Owns one open descriptor of its partial and the running hash.  Methods and
    fields with one underscore (``_fd``, ``_target``, ``_resync``, ``_close``,
    ``_revoke``, ``_sync_copy``, ``_flush_error``, ``_allocate``) are for the storage package
    only, never for the daemon.
    """

    def __init__(self, owner: UploadOwner, target: Target, *, size: int, sha256: str | None,
                 fd: int, offset: int, restarted: bool, blake3: str | None = None) -> None:
        self.user = target.user
        self.path = target.path
        self.size = size
        self.sha256 = sha256
        self.blake3 = blake3
        self.overwrite = target.overwrite
        self.offset = offset
        self.restarted = restarted
        self._owner = owner
        self._target = target
        self._fd = fd
        self._state = "active"  # -> released | committed | discarded | closed
        self._lock = threading.Lock()
        #: the first error of a background ``fdatasync`` (``flush``): its file
        #: description then reports no error to ``commit``'s own fsync (Linux
        #: reports a writeback error once per open file), so ``commit`` checks this
        self._flush_error: OSError | None = None
        self.hasher = (PrefixHasher(SHA256) if sha256 is not None else
                       PrefixHasher(BLAKE3) if blake3 is not None else None)
        #: the first background flush allocates the rest of the file (False: a stream,
        #: whose declared size is only a reservation, or done)
        self._allocate = True
        #: applied at commit, before the file becomes visible (storage.metadata)
        self.mtime: float | None = None
        self.mode: int | None = None

    def __repr__(self) -> str:
        return (f"<Upload {self.user}:{self.path} {self.offset}/{self.size} {self._state}>")

    @property
    def active(self) -> bool:
        return self._state == "active"

    def fileno(self) -> int:
        if not self.active:
            raise StorageIOError("upload is no longer active", path=self.path, state=self._state)
        return self._fd

    def complete(self) -> bool:
        return self.offset == self.size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` at ``offset``; returns its length.

        Raises ``OffsetMismatch`` (nothing written) if it would pass the declared
        size, ``NoSpace`` on ENOSPC/EDQUOT and ``StorageIOError`` on other errors;
        after an error ``offset`` is the real file length.
        """
        with self._lock:
            return self._write(data)

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """``write`` after checking the client's idea of the offset (if wrong, writes nothing)."""
        with self._lock:
            if offset != self.offset:
                raise OffsetMismatch("offset does not match the bytes held",
                                     expected=self.offset, got=offset)
            return self._write(data)

    def _write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_active()
        length = memoryview(data).nbytes
        end = self.offset + length
        if end > self.size:
            raise OffsetMismatch("data would pass the declared size", expected=self.offset,
                                 got=end, size=self.size)
        try:
            write_all(self._fd, data)
        except OSError as exc:
            self._resync()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace("no space left on the server", path=self.path, offset=self.offset)
            raise StorageIOError(f"write failed: {os.strerror(exc.errno or errno.EIO)}",
                                 path=self.path, offset=self.offset)
        self.offset = end
        return length

    def _resync(self) -> None:
        """After a failed write: offset := real length (never past size), position there."""
        try:
            length = os.fstat(self._fd).st_size
            if length > self.size:
                os.ftruncate(self._fd, self.size)
                length = self.size
            os.lseek(self._fd, length, os.SEEK_SET)
        except OSError as exc:
            raise map_oserror(exc, self.path)
        self.offset = length

    def expect_hash_later(self, algo: str = SHA256) -> None:
        """The ``algo`` digest will be named at ``commit``: hash behind the writer from now
        on.  ``ValueError`` if the upload already runs another digest."""
        if self.hasher is None:
            self.hasher = PrefixHasher(algo)
        elif self.hasher.algo != algo:
            raise ValueError(f"this upload is verified with {self.hasher.algo}, not {algo}")

    def declared(self) -> str | None:
        """The digest to verify against (of ``hasher.algo``), if one is declared."""
        return self.blake3 if self.hasher is not None and self.hasher.algo == BLAKE3 \
            else self.sha256

    def catch_up(self) -> int:
        """``hash_behind`` then ``flush``: both for what is written so far."""
        return self.flush() if self.hash_behind() else 0

    def hash_behind(self) -> int:
        """Hash (when a SHA-256 is expected) what is written so far.

        A job for a worker thread while the writer goes on: it reads the bytes
        back through its own descriptor, so ``commit`` is left with only the
        tail.  Harmless if the upload ended meanwhile.  Returns the offset it
        covered (0 if it did nothing).
        """
        return self._behind(lambda fd, end: self.hasher.advance(fd, end)
                            if self.hasher is not None else None)

    def flush(self) -> int:
        """``fdatasync`` what is written so far, so that ``commit`` has only the
        tail to make durable.  A worker's job, like ``hash_behind``."""
        return self._behind(self._flush_job)

    def _flush_job(self, fd: int, end: int) -> None:
        """The worker's flush: the first one allocates the blocks still to come."""
        if self._allocate:
            self._allocate = False
            if self.size - end >= ALLOCATE_MIN:
                _allocate_rest(fd, end, self.size - end)
        self._sync_copy(fd)

    def _sync_copy(self, fd: int) -> None:
        """``fdatasync(fd)`` (a duplicate of the partial's descriptor), noting a failure
        in ``_flush_error`` before raising it: the duplicate shares the partial's open
        file, so the error is consumed here and ``commit``'s fsync would not see it."""
        try:
            os.fdatasync(fd)
        except OSError as exc:
            if self._flush_error is None:
                self._flush_error = exc
            raise

    def _behind(self, job: Callable[[int, int], object]) -> int:
        with self._lock:
            if not self.active:
                return 0
            fd, end = os.dup(self._fd), self.offset
        try:
            job(fd, end)
        except OSError:
            return 0                  # a flush's error is in _flush_error: commit reports it
        finally:
            os.close(fd)
        return end

    def commit(self, sha256: str | None = None, *, blake3: str | None = None) -> CommitResult:
        """Verify, make durable and move into place.  SLOW: call from a worker thread.

        ``sha256`` (or ``blake3``) names the expected hash now, for an upload that
        declared none at ``begin`` (``ValueError`` if it declared a different one,
        or runs the other digest, or if it is not 64 lowercase hex digits).

        ``IntegrityError`` if incomplete (partial kept, the upload stays active:
        its writer may go on) or the SHA-256 differs (partial discarded).  On
        any other error (``QuotaExceeded``, ``Exists``, ``IsADirectory``,
        ``NotFound``, I/O) the upload is released: its descriptor closed, the
        partial and its reservation kept, so the path is free for a resuming
        ``begin_upload`` or an ``abort`` at once (issue 13, item 2); a later
        ``release()`` is harmless.
        """
        with self._lock:
            self._check_active()
            for algo, value in ((SHA256, sha256), (BLAKE3, blake3)):
                if value is None:
                    continue
                if not HEX_RE.fullmatch(value) or getattr(self, algo) not in (None, value):
                    raise ValueError(f"commit: a malformed or second, different {algo}")
                self.expect_hash_later(algo)
                setattr(self, algo, value)
            return self._owner.commit(self)

    def release(self) -> None:
        """Stop writing but keep the partial and its reservation (until expiry). Idempotent."""
        with self._lock:
            if self.active:
                self._owner.release(self)

    def abort(self) -> None:
        """Discard the partial and its reservation, ending this writer."""
        with self._lock:
            self._check_active()
            self._owner.discard(self)

    def _check_active(self) -> None:
        if not self.active:
            raise StorageIOError("upload is no longer active", path=self.path, state=self._state)

    def _close(self, state: str) -> None:
        """Close the fd (caller holds ``_lock``) and enter a final state."""
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1
        self._state = state

    def _revoke(self) -> None:
        """Close from another thread (store closing, user deleted), waiting for a running write."""
        with self._lock:
            if self.active:
                self._close("closed")
