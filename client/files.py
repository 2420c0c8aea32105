"""Local file helpers: streaming hashes, change detection, rename into place.

Files can be far larger than memory, so hashing reads fixed 1 MiB blocks into
one reused buffer.  A file's "identity" (size and mtime_ns, plus the inode so
a replaced file counts as changed) is what tells an upload that the bytes it
declared are no longer the bytes on disk.  ``BackgroundHash`` hashes a file in
a thread while the caller sends it (``hashlib`` and ``preadv`` release the GIL).
"""

from __future__ import annotations

import os
import stat as stat_module
import threading
from typing import Any, BinaryIO, NamedTuple

from protocol.digests import SHA256, new_hasher

BLOCK = 1024 * 1024
PART_SUFFIX = ".part"


class Identity(NamedTuple):
    size: int
    mtime_ns: int
    ino: int


def identity(fileobj: BinaryIO) -> Identity:
    st = os.fstat(fileobj.fileno())
    return Identity(st.st_size, st.st_mtime_ns, st.st_ino)


def hash_file(fileobj: BinaryIO, length: int | None = None, algo: str = SHA256) -> Any:
    """SHA-256 (or the ``algo`` digest) of the first ``length`` bytes (all if None),
    read from the start.

    Returns the hash object so a download can keep feeding it after the prefix.
    """
    digest = new_hasher(algo)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    fileobj.seek(0)
    left = length
    while left is None or left > 0:
        want = BLOCK if left is None else min(BLOCK, left)
        n = fileobj.readinto(view[:want])  # type: ignore[attr-defined]
        if not n:
            break
        digest.update(view[:n])
        if left is not None:
            left -= n
    return digest


_preadv = getattr(os, "preadv", None)


def _read_at(fd: int, view: memoryview, offset: int) -> int:
    """``pread`` into ``view``; reads fewer bytes only at the end of the file."""
    if _preadv is not None:
        return _preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)
    view[:len(data)] = data
    return len(data)


class BackgroundHash:
    """SHA-256 (or the ``algo`` digest) of the first ``length`` bytes of ``fd``,
    computed in a thread.

    Reads with ``pread`` (the file position is not touched, so the caller can
    ``sendfile`` from the same descriptor meanwhile) into one 1 MiB buffer.
    A file shorter than ``length`` hashes what is there: callers compare the
    file's identity before and after to know the digest is the file's.  Below
    ``THREAD_MIN`` bytes no thread is started: ``result()`` hashes there and then.
    """

    THREAD_MIN = BLOCK

    def __init__(self, fd: int, length: int, algo: str = SHA256) -> None:
        self._fd = fd
        self.algo = algo
        self._length = length
        self._stop = threading.Event()
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if length >= self.THREAD_MIN:
            self._thread = threading.Thread(target=self._run, name="ftpc-hash", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            digest = new_hasher(self.algo)
            view = memoryview(bytearray(min(BLOCK, max(1, self._length))))
            pos, end = 0, self._length
            while pos < end and not self._stop.is_set():
                n = _read_at(self._fd, view[:min(len(view), end - pos)], pos)
                if not n:
                    break
                digest.update(view[:n])
                pos += n
            if not self._stop.is_set():
                self._digest = digest.hexdigest()
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller in result()
            self._error = exc

    def result(self, timeout: float | None = None) -> str | None:
        """Wait for the digest (hex); None if ``timeout`` seconds were not enough.
        Raises what the hashing raised (an ``OSError``)."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return None
        elif self._digest is None and self._error is None:
            self._run()
        if self._error is not None:
            raise self._error
        if self._digest is None:
            raise RuntimeError("the hash was stopped")
        return self._digest

    def stop(self) -> None:
        """Stop early (at the next block) and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def write_all(fd: int, data: memoryview) -> None:
    """``os.write`` until every byte is down (short writes are legal)."""
    while data:
        n = os.write(fd, data)
        data = data[n:]


def part_path(local: str) -> str:
    return local + PART_SUFFIX


def commit(part: str, local: str, *, fsync: bool = False) -> None:
    """Rename a finished ``.part`` into place (atomic: readers see the old file or
    the new one).  With ``fsync`` (the ``.part`` itself was fsynced by the caller)
    the rename is made durable too, by fsyncing the folder."""
    os.replace(part, local)
    if not fsync:
        return
    folder = os.path.dirname(os.path.abspath(local))
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


STDIO = "-"


def writes_in_place(local: str) -> bool:
    """Whether a download must be written straight into ``local`` instead of
    through ``.part`` and a rename: ``-`` (stdout), an existing file that is not
    a regular file (a device, a FIFO, a socket) or a link into ``/dev`` or
    ``/proc`` (``/dev/stdout``).  Renaming over those would replace them."""
    if local == STDIO:
        return True
    try:
        st = os.stat(local)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    if not stat_module.S_ISREG(st.st_mode):
        return True
    real = os.path.realpath(local)
    return os.path.islink(local) and real.startswith(("/dev/", "/proc/"))


def open_in_place(local: str) -> tuple[int, bool]:
    """A descriptor to write a download into, and whether to close it after.

    A regular file reached through ``/dev/stdout`` is truncated (like ``cp``);
    devices and FIFOs are opened as they are.
    """
    if local == STDIO:
        return 1, False
    st = os.stat(local)
    flags = os.O_WRONLY | (os.O_TRUNC if stat_module.S_ISREG(st.st_mode) else 0)
    return os.open(local, flags), True


def rename_target(local: str) -> str:
    """The path to rename a finished download onto: a symlink's target, so the
    link itself survives (``cp`` and ``curl -o`` write through links too)."""
    return os.path.realpath(local) if os.path.islink(local) else local
