"""The staging files of unfinished uploads: naming, opening, writing, removing.

A partial is named ``sha256(target path).hex + ".part"`` and lives in
``staging/<user>/``, outside the home, so it is never visible at its target.
The bytes it holds are always its real length, never a number remembered
elsewhere.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re

from . import faults
from .confine import map_oserror
from .context import StoreContext
from .errors import NoSuchUser
from .reservations import forget

__all__ = ["PART_FLAGS", "check_declaration", "drop_partial", "fsync_dir", "open_partial",
           "part_name", "unlink_quietly", "write_all"]

PART_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def part_name(path: str) -> str:
    """Staging file name of the partial for the normalised target ``path``."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest() + ".part"


def check_declaration(size: object, sha256: object) -> str | None:
    """The declared SHA-256 in lower case (or None); ``ValueError`` for a bad declaration."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("size must be a non-negative integer")
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256.lower()):
        raise ValueError("sha256 must be 64 hexadecimal digits")
    return sha256.lower()


def open_partial(sfd: int, name: str, size: int, *, truncate: bool = False) -> tuple[int, int]:
    """Open (creating) the partial ``name`` for writing at its end; returns ``(fd, length)``.

    A partial longer than ``size`` is cut to ``size``.  Raises ``OSError``.
    """
    fd = os.open(name, PART_FLAGS | (os.O_TRUNC if truncate else 0), 0o600, dir_fd=sfd)
    if truncate:
        return fd, 0
    try:
        length = os.fstat(fd).st_size
        if length > size:
            os.ftruncate(fd, size)
            length = size
        os.lseek(fd, length, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd, length


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` at the fd's position (short writes are continued)."""
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    done, length = 0, view.nbytes
    while done < length:
        written = os.write(fd, view[done:])
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        done += written


def fsync_dir(dir_fd: int) -> None:
    """Make the folder's entries durable (a link or rename into it)."""
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems cannot fsync folders; the link already happened


def unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def drop_partial(ctx: StoreContext, user: str, path: str) -> None:
    """Unlink the partial, then forget its row and reservation (caller holds the user lock).

    In this order so that a crash in between leaves a row whose partial holds
    nothing (resumable from 0), never a partial nobody accounts for."""
    try:
        sfd = ctx.staging_dir_fd(user)
    except NoSuchUser:
        pass
    else:
        try:
            unlink_quietly(sfd, part_name(path))
        except OSError as exc:
            raise map_oserror(exc, path)
        finally:
            os.close(sfd)
    faults.crash_point("drop.after_unlink")
    with ctx.db.write() as conn:
        forget(conn, user, path)
