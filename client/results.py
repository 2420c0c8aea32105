"""What the client's methods return: small frozen dataclasses.

They hold only what a caller needs (no request ids, no paging flags), and
``dataclasses.asdict`` turns each into the JSON that ``ftpc --json`` prints.
Listing records reuse the protocol's own ``Entry`` and ``UploadInfo``.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.messages import Entry, UploadInfo

__all__ = ["Entry", "GetResult", "HashResult", "Listing", "MoveResult", "PutResult",
           "QuotaInfo", "Session", "StatResult", "UploadInfo"]


@dataclass(frozen=True)
class Session:
    """A successful login: who, where, and the session token if one was asked for."""

    user: str
    cwd: str
    token: str | None = None


@dataclass(frozen=True)
class Listing:
    """Every page of an ``ls`` reply, collected."""

    path: str
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class StatResult:
    path: str
    entry: Entry


@dataclass(frozen=True)
class MoveResult:
    src: str
    dst: str


@dataclass(frozen=True)
class QuotaInfo:
    """Bytes: stored, reserved by unfinished uploads, the limit, and what is left."""

    used: int
    reserved: int
    limit: int
    free: int


@dataclass(frozen=True)
class HashResult:
    """``sha256`` by default; ``blake3`` (and no ``sha256``) when that was asked for."""

    path: str
    size: int
    sha256: str | None
    blake3: str | None = None


@dataclass(frozen=True)
class PutResult:
    """A committed upload.

    ``resumed_from`` is the server's offset when the upload began (bytes that did
    not have to be sent again; 0 after a restart); ``restarted`` says a stale
    partial that did not match the local file was discarded, by the server at
    ``put`` or at a deferred upload's ``commit``; ``attempts`` counts the puts the
    server accepted (one per connection, plus one for a restart or a parked commit).
    ``sha256`` is the verified digest (None without verification), or ``blake3``
    where the session negotiated BLAKE3 (issue 17).
    """

    path: str
    size: int
    sha256: str | None
    resumed_from: int
    restarted: bool
    local: str = ""
    attempts: int = 1
    blake3: str | None = None


@dataclass(frozen=True)
class GetResult:
    """A finished download; ``local`` is None for ``get_stream``.

    ``sha256`` is the verified digest (None when verification was off), or
    ``blake3`` where the session negotiated BLAKE3 (issue 17);
    ``resumed_from`` is the length of the ``.part`` file (or stream offset) reused.
    """

    path: str
    size: int
    sha256: str | None
    resumed_from: int
    local: str | None = None
    restarted: bool = False
    attempts: int = 1
    blake3: str | None = None
