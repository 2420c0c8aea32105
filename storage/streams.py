"""Uploads of unknown length ("streams"): quota charged as the bytes arrive.

A stream is an ordinary partial (:mod:`storage.uploads`) whose *declared*
size is only a reservation: it starts at the client's ``size_hint`` (or 0)
and grows, in steps, before any byte past it is written, each step checked
against the user's free quota under the user lock.  So an endless stream is
refused with ``QuotaExceeded`` once the quota is used up, never a byte later,
and the disk can fill no faster than quotas allow.  At ``commit`` the
declaration is *sealed* to the bytes really held (the reservation shrinks to
match), and the ordinary crash-safe commit follows.

A stream is never resumed: ``begin_stream`` always starts at offset 0 (an old
partial for the path is cut), because without a size up front nothing tells
a later ``put`` which bytes it already sent.
"""

from __future__ import annotations

import os

from .confine import map_oserror
from .context import StoreContext, user_parent
from .errors import QuotaExceeded
from .placement import replaced_size
from .reservations import check_quota
from .upload import Upload
from .uploads import UploadManager

__all__ = ["STREAM_STEP", "begin_stream", "reserve", "seal"]

#: The reservation grows by this much at a time (fewer catalogue writes),
#: or by what is left of the quota when less is free.
STREAM_STEP = 16 * 1024 * 1024


def begin_stream(manager: UploadManager, user: str, path: str, *, cwd: str = "/",
                 overwrite: bool = False, size_hint: int | None = None) -> Upload:
    """Begin a stream upload at offset 0, reserving ``size_hint`` bytes (or none)."""
    upload = manager.begin(user, path, size_hint or 0, None, cwd=cwd, overwrite=overwrite)
    upload._allocate = False          # a hint, not a size: blocks past the end would stay
    if upload.offset:
        with upload._lock:            # a stream never resumes: start the partial over
            try:
                os.ftruncate(upload._fd, 0)
                os.lseek(upload._fd, 0, os.SEEK_SET)
            except OSError as exc:
                upload._owner.release(upload)
                raise map_oserror(exc, upload.path)
            upload.offset = 0
        upload.restarted = True
    return upload


def _ctx(upload: Upload) -> StoreContext:
    return upload._owner.ctx          # type: ignore[attr-defined, no-any-return]


def _redeclare(ctx: StoreContext, upload: Upload, size: int, *, check: bool) -> None:
    """Set the row's size and reservation to ``size`` (caller holds the user lock)."""
    target = upload._target
    with user_parent(ctx, target.user, target.parts) as pfd:
        replaced = replaced_size(pfd, target)
    need = max(0, size - replaced)
    with ctx.db.write() as conn:
        if check:
            check_quota(conn, upload.user, upload.path, need)
        conn.execute("UPDATE uploads SET size = ?, reserved = ? WHERE user = ? AND path = ?",
                     (size, need, upload.user, upload.path))


def reserve(upload: Upload, end: int) -> None:
    """Make the declaration cover at least ``end`` bytes before they are written.

    Grows by ``STREAM_STEP`` past ``end`` when that fits, else to exactly
    ``end``; ``QuotaExceeded`` (details ``free``, ``needed``) when even that
    does not fit.  A quick catalogue write: fine on the reactor thread, once
    per step.
    """
    if end <= upload.size:
        return
    ctx = _ctx(upload)
    with ctx.user_lock(upload.user):
        try:
            _redeclare(ctx, upload, end + STREAM_STEP, check=True)
            upload.size = end + STREAM_STEP
        except QuotaExceeded:
            _redeclare(ctx, upload, end, check=True)
            upload.size = end


def seal(upload: Upload) -> None:
    """The stream is over: its declared size becomes the bytes held (reservation shrinks)."""
    ctx = _ctx(upload)
    with ctx.user_lock(upload.user), upload._lock:
        _redeclare(ctx, upload, upload.offset, check=False)
        upload.size = upload.offset
