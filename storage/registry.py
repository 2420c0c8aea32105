"""Which targets have a writer right now: one active writer per ``(user, path)``,
across every process serving the data root.

A target is claimed by an ``Upload`` between ``begin`` and its end, or by a
group commit (``store_small``) while it writes the file.  The registry only
answers "is someone writing there?" and closes writers when the store or a user
goes away; it never touches partials or rows.  Its lock is the innermost of the
store's locks (see :mod:`storage.context`).

Across processes (``ftpd serve --workers N``) a claim is also an
open-file-description lock (``fcntl`` ``F_OFD_SETLK``, write lock, never
waiting) on one byte of the shared file ``<root>/run/writers.lock``, at an
offset given by the SHA-256 of ``(user, path)`` (62 bits: two targets share a
byte with odds of 2**-62, and then one of them is merely told ``UPLOAD_BUSY``).
A second process finds the byte locked and answers ``UPLOAD_BUSY``.  The lock
belongs to the process's own open file description and the kernel drops it
when that is closed -- including when the process is killed with SIGKILL -- so
a dead writer never leaves a target locked.  Why a byte of one file, and not a
lock on the partial itself: ``begin`` (restart), the commit (rename into
place) and ``abort`` unlink or move the partial while it is claimed, and one
lock file costs one ``fcntl`` per claim instead of creating and unlinking a
file.  Threads of one process share the description, so the registry's own
dict orders them (and counts claims per byte, so a shared byte is unlocked
only by its last holder).  The file must be opened after a fork, never
inherited: ``Store`` is created in each worker.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

__all__ = ["INLINE", "PENDING", "InlineClaim", "Writer", "WriterRegistry"]

_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)       # Linux 3.15+
_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", None)
#: ``struct flock`` on Linux/x86-64 and arm64: type, whence, start, len, pid (0 for OFD).
_FLOCK = "hhqqi4x"


class Writer(Protocol):
    """Anything that holds a claim: it can be cut off from another thread."""

    def _revoke(self) -> None: ...


class InlineClaim:
    """The claim of a group commit on a path it is writing (nothing to close: the
    group commit owns its descriptors until it returns)."""

    __slots__ = ()

    def _revoke(self) -> None:
        pass


INLINE = InlineClaim()
#: A claim taken before its writer exists (``begin``), or held to remove a partial.
PENDING = InlineClaim()


class WriterRegistry:
    """The claims, keyed by ``(user, normalised path)``; thread-safe.

    ``lock_path``: the shared lock file (None: this process only, for a store
    nobody else can open).
    """

    def __init__(self, lock_path: str | os.PathLike[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._writers: dict[tuple[str, str], tuple[Writer, int]] = {}
        self._bytes: dict[int, int] = {}             # locked offset -> claims on it here
        self._fd = -1
        if lock_path is not None and _OFD_SETLK is not None:
            os.makedirs(os.path.dirname(os.fspath(lock_path)) or ".", mode=0o700,
                        exist_ok=True)
            self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                               0o600)

    @staticmethod
    def _offset(user: str, path: str) -> int:
        digest = hashlib.sha256(f"{user}\0{path}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 2

    def _fcntl(self, command: int, kind: int, offset: int) -> int:
        """One ``struct flock`` call on one byte; returns the reply's ``l_type``."""
        arg = struct.pack(_FLOCK, kind, os.SEEK_SET, offset, 1, 0)
        return struct.unpack(_FLOCK, fcntl.fcntl(self._fd, command, arg))[0]

    def _lock_byte(self, offset: int) -> bool:
        """Lock ``offset`` for this process (the caller holds ``_lock``)."""
        held = self._bytes.get(offset, 0)
        if held == 0:
            try:
                self._fcntl(_OFD_SETLK, fcntl.F_WRLCK, offset)
            except (BlockingIOError, PermissionError):     # EAGAIN / EACCES: held elsewhere
                return False
        self._bytes[offset] = held + 1
        return True

    def _unlock_byte(self, offset: int) -> None:
        held = self._bytes.get(offset, 0) - 1
        if held > 0:
            self._bytes[offset] = held
            return
        self._bytes.pop(offset, None)
        try:
            self._fcntl(_OFD_SETLK, fcntl.F_UNLCK, offset)
        except OSError:
            pass            # only a closed file: its locks are gone with it

    def is_active(self, user: str, path: str) -> bool:
        """Does anyone (this process or another) hold a claim on the target?"""
        with self._lock:
            if (user, path) in self._writers:
                return True
            if self._fd < 0:
                return False
            offset = self._offset(user, path)
            if offset in self._bytes:
                return False     # ours, for another target: nobody else can hold it
            return self._fcntl(_OFD_GETLK, fcntl.F_WRLCK, offset) != fcntl.F_UNLCK

    def try_claim(self, user: str, path: str, writer: Writer) -> bool:
        """Claim the target for ``writer`` unless anyone holds it; True if claimed."""
        with self._lock:
            if (user, path) in self._writers:
                return False
            offset = -1
            if self._fd >= 0:
                offset = self._offset(user, path)
                if not self._lock_byte(offset):
                    return False
            self._writers[(user, path)] = (writer, offset)
            return True

    def claim(self, user: str, path: str, writer: Writer) -> None:
        """Hand a claim taken with ``try_claim`` (e.g. ``PENDING``) to ``writer``; a
        target not claimed yet is claimed as in ``try_claim``, ignoring a refusal
        (callers that need the refusal use ``try_claim``)."""
        with self._lock:
            held = self._writers.get((user, path))
            if held is not None:
                self._writers[(user, path)] = (writer, held[1])
                return
        self.try_claim(user, path, writer)

    def drop(self, user: str, path: str, writer: Writer) -> None:
        """Forget the claim (and let go of its lock) if it is still ``writer``'s."""
        with self._lock:
            held = self._writers.get((user, path))
            if held is None or held[0] is not writer:
                return
            del self._writers[(user, path)]
            if held[1] >= 0:
                self._unlock_byte(held[1])

    @contextmanager
    def holding(self, user: str, path: str) -> Iterator[bool]:
        """Claim the target for the duration of a ``with`` (yields False if busy)."""
        claimed = self.try_claim(user, path, PENDING)
        try:
            yield claimed
        finally:
            if claimed:
                self.drop(user, path, PENDING)

    def revoke(self, user: str | None = None) -> None:
        """Cut off every writer (or one user's) and forget their claims."""
        with self._lock:
            victims = [(key, held[0]) for key, held in self._writers.items()
                       if user is None or key[0] == user]
        for (owner, path), writer in victims:
            writer._revoke()
            self.drop(owner, path, writer)

    def close(self) -> None:
        """Close the lock file (every claim of this process ends with it)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._bytes.clear()
