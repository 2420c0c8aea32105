"""File metadata an upload carries: modification time and permission bits.

Applied to the partial's descriptor *before* its fsync and before it is
linked into place, so the file is never visible with the wrong time or mode,
a crash never leaves it half-applied, and the hash cache (keyed by
``mtime_ns``) records the final stat.

Permission bits: only ``0o777`` are kept (never setuid, setgid or sticky),
masked by ``FILE_UMASK``, and the owner's read and write bits are always set
(the daemon must be able to read and rewrite every file it stores).  Files
without a ``mode`` keep the daemon's private default, ``0o600``.
"""

from __future__ import annotations

import os

__all__ = ["FILE_UMASK", "apply_metadata", "effective_mode"]

#: Bits a client's ``mode`` can never set on the server: group and other write.
FILE_UMASK = 0o022


def effective_mode(mode: int) -> int:
    """What a requested ``mode`` becomes on the server."""
    return (mode & 0o777 & ~FILE_UMASK) | 0o600


def apply_metadata(fd: int, mtime: float | None, mode: int | None) -> None:
    """``utime``/``fchmod`` the open file ``fd``; ``None`` leaves that one alone.

    Raises ``OSError`` (the caller maps it); an ``mtime`` the file system cannot
    hold is clamped by the kernel, one Python cannot convert is ignored.
    """
    if mode is not None:
        os.fchmod(fd, effective_mode(mode))
    if mtime is not None:
        try:
            ns = int(mtime * 1e9)
            os.utime(fd, ns=(ns, ns))
        except OverflowError:
            pass
