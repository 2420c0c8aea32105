"""Local file helpers: streaming hashes, change detection, durable rename.

Files can be far larger than memory, so hashing reads fixed 1 MiB blocks into
one reused buffer.  A file's "identity" (size and mtime_ns, plus the inode so
a replaced file counts as changed) is what tells an upload that the bytes it
declared are no longer the bytes on disk.
"""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO, NamedTuple

BLOCK = 1024 * 1024
PART_SUFFIX = ".part"


class Identity(NamedTuple):
    size: int
    mtime_ns: int
    ino: int


def identity(fileobj: BinaryIO) -> Identity:
    st = os.fstat(fileobj.fileno())
    return Identity(st.st_size, st.st_mtime_ns, st.st_ino)


def hash_file(fileobj: BinaryIO, length: int | None = None) -> hashlib._Hash:
    """SHA-256 of the first ``length`` bytes (all if None), read from the start.

    Returns the hash object so a download can keep feeding it after the prefix.
    """
    digest = hashlib.sha256()
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


def write_all(fd: int, data: memoryview) -> None:
    """``os.write`` until every byte is down (short writes are legal)."""
    while data:
        n = os.write(fd, data)
        data = data[n:]


def part_path(local: str) -> str:
    return local + PART_SUFFIX


def commit(part: str, local: str) -> None:
    """Rename a finished, fsynced ``.part`` into place and make the rename durable."""
    os.replace(part, local)
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
