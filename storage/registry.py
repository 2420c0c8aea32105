"""Which targets have a writer right now: one active writer per ``(user, path)``,
across every process serving the data root.

A target is claimed by an ``Upload`` between ``begin`` and its end, or by a
group commit (``store_small``) while it writes the file.  The registry only
answers "is someone writing there?" and closes writers when the store or a user
goes away; it never touches partials or rows.  Its lock is the innermost of the
store's locks (see :mod:`storage.context`).

Across processes (``ftpd serve --workers N``) a claim is also an exclusive
``flock`` on a small lock file ``<root>/run/writers/<sha256(user, path)>.lock``,
taken with ``LOCK_NB``: a second process finds it held and answers
``UPLOAD_BUSY``.  A ``flock`` belongs to the open file description and the
kernel drops it when the last descriptor goes -- including when the process is
killed with SIGKILL -- so a dead writer never leaves a target locked.  A lock
file is unlinked by its holder on release; a process that locked a file and
then finds its name gone or pointing at another inode retries (the classic
lock-file protocol), so unlinking never lets two holders in.  Why a separate
file and not the partial itself: ``begin`` (restart), the commit (rename into
place) and ``abort`` unlink or move the partial while it is claimed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

__all__ = ["INLINE", "InlineClaim", "PENDING", "Writer", "WriterRegistry"]

#: Lock-file attempts before giving up (each retry means a holder unlinked it meanwhile).
_ATTEMPTS = 16


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

    ``lock_dir``: where the cross-process lock files go (None: this process only,
    for a store nobody else can open).
    """

    def __init__(self, lock_dir: str | os.PathLike[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._writers: dict[tuple[str, str], tuple[Writer, int]] = {}
        self._dir = os.fspath(lock_dir) if lock_dir is not None else None
        if self._dir is not None:
            os.makedirs(self._dir, mode=0o700, exist_ok=True)

    def _file(self, user: str, path: str) -> str:
        assert self._dir is not None
        digest = hashlib.sha256(f"{user}\0{path}".encode()).hexdigest()
        return os.path.join(self._dir, digest + ".lock")

    def _lock_file(self, name: str) -> int | None:
        """The descriptor holding the lock on ``name``, or None if another holds it."""
        for _ in range(_ATTEMPTS):
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(name, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)        # its holder unlinked it after we opened it: try the new one
        return None

    def _unlock_file(self, user: str, path: str, fd: int) -> None:
        if fd < 0:
            return
        try:
            os.unlink(self._file(user, path))     # while still held: see the module text
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)

    def is_active(self, user: str, path: str) -> bool:
        """Does anyone (this process or another) hold a claim on the target?"""
        with self._lock:
            if (user, path) in self._writers:
                return True
        if self._dir is None:
            return False
        name = self._file(user, path)
        try:
            fd = os.open(name, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)        # a probe that got the lock lets it go at once
        return False

    def try_claim(self, user: str, path: str, writer: Writer) -> bool:
        """Claim the target for ``writer`` unless anyone holds it; True if claimed."""
        with self._lock:
            if (user, path) in self._writers:
                return False
            fd = -1
            if self._dir is not None:
                locked = self._lock_file(self._file(user, path))
                if locked is None:
                    return False
                fd = locked
            self._writers[(user, path)] = (writer, fd)
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
            self._unlock_file(user, path, held[1])

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
