"""``ftpc put - NAME``: upload a pipe of unknown length without spooling it.

With a server whose hello reply says ``streams`` (docs/PROTOCOL.md 7.8) the
bytes go out as they are read, hashed on the way, and ``commit`` names their
SHA-256 (BLAKE3 where hello chose it) and count at the end; the server charges
quota as they arrive and publishes nothing unless both match.  A stream cannot
resume (the bytes read are gone), so it is one attempt: a failure discards it
on the server too.
Without that capability the input is spooled to a private temporary file and
put as an ordinary file, as before.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, BinaryIO

from protocol import data_header
from protocol.digests import BLAKE3, new_hasher
from protocol.messages import Commit, Put, PutReady

from .errors import IntegrityError
from .results import PutResult
from .transfer import Progress, _commit_reply, digest_fields, named_digest

if TYPE_CHECKING:
    from .client import Client

__all__ = ["put_stream"]

STDIN_LABEL = "-"


def put_stream(client: Client, source: BinaryIO, remote: str, *, overwrite: bool = False,
               progress: Progress | None = None, size_hint: int | None = None,
               **put_options: object) -> PutResult:
    """Upload everything ``source`` yields to ``remote``; verified, never visible early.

    ``put_options`` go to ``Client.put`` when the server cannot take a stream
    and the input is spooled instead.
    """
    conn = client._require()
    if not conn.supports("streams"):
        return _spooled(client, source, remote, overwrite=overwrite, progress=progress,
                        **put_options)
    algo = conn.digest()
    rid = conn.next_id()
    ready = conn.call(Put(id=rid, path=remote, stream=True, defer_sha256=algo != BLAKE3,
                          defer_blake3=(algo == BLAKE3) or None,
                          overwrite=overwrite, size_hint=size_hint),
                      PutReady)
    if ready.offset != 0:
        raise conn.violation(f"put.ready offset {ready.offset} for a stream")
    digest = new_hasher(algo)
    sent = 0
    # read1: whatever a pipe has now (up to a frame), without waiting to fill it.
    read = getattr(source, "read1", source.read)
    frame = conn.send_max_data
    try:
        while True:
            chunk = read(frame)
            if not chunk:
                break
            if conn.pending():
                # Only an error can come now (QUOTA_EXCEEDED...): it ended the stream.
                conn.raise_if_error(conn.next_event(), rid)
                raise conn.violation("unexpected reply in the middle of a stream")
            conn.send(data_header(len(chunk)) + chunk)
            digest.update(chunk)
            sent += len(chunk)
            if progress:
                progress(sent, sent, 0)
        cid = conn.next_id()
        conn.send_message(Commit(id=cid, **digest_fields(algo, digest.hexdigest()), size=sent))
    except IntegrityError:
        raise
    except BaseException as exc:
        if getattr(exc, "code", None) is None or isinstance(exc, KeyboardInterrupt):
            conn.close()                    # frames may be in flight: start afresh
        raise
    done = _commit_reply(conn, rid, cid)
    got = named_digest(done, algo)
    if done.size != sent or got != digest.hexdigest():
        raise IntegrityError("INTEGRITY", f"the server stored {done.size} bytes with {algo} "
                             f"{got}, not the {sent} bytes sent")
    return PutResult(done.path, done.size, done.sha256, 0, False, STDIN_LABEL, 1, done.blake3)


def _spooled(client: Client, source: BinaryIO, remote: str, **options: object) -> PutResult:
    """An older server: copy the input to a private temporary file, put that."""
    fd, path = tempfile.mkstemp(prefix="ftpc-stdin-")
    try:
        with os.fdopen(fd, "wb") as spool:
            shutil.copyfileobj(source, spool, 1 << 20)
        result = client.put(path, remote, **options)      # type: ignore[arg-type]
    finally:
        os.unlink(path)
    return PutResult(result.path, result.size, result.sha256, result.resumed_from,
                     result.restarted, STDIN_LABEL, result.attempts, result.blake3)
