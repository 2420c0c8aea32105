"""Many files over one connection: inline puts for the small, ``PutPolicy`` for the rest."""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_module
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from protocol.messages import PutDone

from .errors import ConnectionLost, FtpError, IntegrityError
from .files import identity
from .inline import InlineFile, InlinePipe
from .results import PutResult

if TYPE_CHECKING:
    from .client import Client

OnResult = Callable[[str, "PutResult | BaseException"], None]


def put_many(client: Client, items: Sequence[tuple[str, str | None]], *, overwrite: bool,
             verify: bool, window: int, on_result: OnResult | None,
             put_big: Callable[[str, str], PutResult] | None = None,
             ) -> list[PutResult | BaseException]:
    """See ``Client.put_many``.  ``put_big`` uploads a file too big for an inline
    put (default: ``client.put`` with the same ``overwrite`` and ``verify``)."""
    results: list[PutResult | BaseException | None] = [None] * len(items)
    if put_big is None:
        def put_big(local: str, remote: str) -> PutResult:
            return client.put(local, remote, overwrite=overwrite, verify=verify)

    def settle(index: int, local: str, outcome: PutResult | BaseException) -> None:
        results[index] = outcome
        if on_result is not None:
            on_result(local, outcome)

    def done(f: InlineFile, outcome: PutDone | FtpError) -> None:
        if isinstance(outcome, PutDone):
            settle(f.index, f.local, PutResult(outcome.path, outcome.size, outcome.sha256,
                                               0, False, f.local, 1))
        else:
            settle(f.index, f.local, outcome)

    conn = client._require()
    limit = conn.greeting.inline_max if conn.greeting is not None else 0
    pipe = InlinePipe(conn, window, overwrite, done)
    try:
        for index, (local, remote) in enumerate(items):
            remote_path = remote or os.path.basename(local.rstrip(os.sep))
            try:
                small = read_small(local, limit)
            except (OSError, IntegrityError) as exc:
                settle(index, local, exc)
                continue
            if small is None:                  # too big for an inline put
                pipe.drain()
                try:
                    settle(index, local, put_big(local, remote_path))
                except ConnectionLost:
                    raise
                except (FtpError, OSError) as exc:
                    settle(index, local, exc)
                continue
            sha256 = hashlib.sha256(small).hexdigest() if verify else None
            pipe.send(InlineFile(index, local, remote_path, small, sha256))
        pipe.drain()
    except ConnectionLost as exc:
        for index, (local, _) in enumerate(items):
            if results[index] is None:
                settle(index, local, exc)
    return results  # type: ignore[return-value]


def read_small(local: str, limit: int) -> bytes | None:
    """The whole content of a regular file of at most ``limit`` bytes, else None.

    ``IntegrityError`` if the file changes while it is read.
    """
    with open(local, "rb") as fileobj:
        st = os.fstat(fileobj.fileno())
        if not stat_module.S_ISREG(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file", local)
        if st.st_size > limit:
            return None
        before = identity(fileobj)
        data = fileobj.read(limit + 1)
        if len(data) != before.size or identity(fileobj) != before:
            raise IntegrityError("INTEGRITY", f"local file {local!r} changed while it was "
                                 "being read; it was not uploaded, try again once it is stable")
        return data
