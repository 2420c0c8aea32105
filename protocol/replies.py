"""Typed replies: one frozen dataclass per reply type, registered in ``REPLIES``.

The request side is :mod:`protocol.messages`, which re-exports every name here
(wire form and validation: see its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import BadRequest
from .records import BLAKE3_RE, DIGEST_NAME_RE, MAX_INT, SHA256_RE, Entry, UploadInfo
from .records import id_field as _id
from .records import path_field as _path
from .records import user_field as _user
from .schema import Message, fld

__all__ = [
    "REPLIES", "AbortOk", "CancelOk", "CdOk", "ErrorReply", "GetDone", "GetReady", "Greeting",
    "HashOk", "HelloOk", "LoginOk", "LogoutOk", "LsOk", "MkdirOk", "MvOk", "Pong", "PutDone",
    "PutReady", "PwdOk", "QuitOk", "QuotaOk", "RegisterOk", "Reply", "RmOk", "RmdirOk",
    "StatOk", "UploadsOk", "WhoamiOk",
]


# ---------------------------------------------------------------- replies


REPLIES: dict[str, type[Reply]] = {}


@dataclass(frozen=True)
class Reply(Message):
    type: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.type:
            REPLIES[cls.type] = cls

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, **super().to_wire()}


@dataclass(frozen=True)
class Greeting(Reply):
    """The server's first frame, sent before the client says anything."""

    type = "greeting"
    protocol: int = fld(min=0, max=MAX_INT)
    server: str = fld(max_len=256)
    max_control: int = fld(min=1, max=MAX_INT)
    max_data: int = fld(min=1, max=MAX_INT)
    register: bool = False
    #: the largest ``size`` an inline put may declare; 0: no inline puts
    inline_max: int = fld(0, min=0, max=MAX_INT)


@dataclass(frozen=True)
class ErrorReply(Reply):
    """A failed request.  ``id`` is null when the request's id was unreadable."""

    type = "error"
    id: int | None = fld(None, min=0, max=MAX_INT)
    code: str = fld("INTERNAL", min_len=1, max_len=64)
    message: str = fld("", max_len=4096)
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class HelloOk(Reply):
    type = "hello"
    id: int = _id()
    protocol: int = fld(min=0, max=MAX_INT)
    max_data: int = fld(min=1, max=MAX_INT)
    #: the server takes ``put`` with ``stream: true`` (absent: an older server)
    streams: bool = False
    #: the server keeps ``mtime``/``mode`` of a put and sends them in ``get.ready``
    metadata: bool = False
    #: the digest chosen from the hello's ``digests`` (absent: an older server, SHA-256)
    digest: str = fld("sha256", pattern=DIGEST_NAME_RE)


@dataclass(frozen=True)
class RegisterOk(Reply):
    type = "register"
    id: int = _id()
    user: str = _user()


@dataclass(frozen=True)
class LoginOk(Reply):
    type = "login"
    id: int = _id()
    user: str = _user()
    cwd: str = _path()
    token: str | None = fld(None, max_len=256)


@dataclass(frozen=True)
class LogoutOk(Reply):
    type = "logout"
    id: int = _id()


@dataclass(frozen=True)
class WhoamiOk(Reply):
    type = "whoami"
    id: int = _id()
    user: str | None = fld(None, max_len=64)


@dataclass(frozen=True)
class PwdOk(Reply):
    type = "pwd"
    id: int = _id()
    path: str = _path()


@dataclass(frozen=True)
class CdOk(Reply):
    type = "cd"
    id: int = _id()
    path: str = _path()


@dataclass(frozen=True)
class LsOk(Reply):
    """One page of a listing; ``more`` says another page with the same id follows."""

    type = "ls"
    id: int = _id()
    path: str = _path()
    entries: tuple[Entry, ...] = ()
    more: bool = False


@dataclass(frozen=True)
class StatOk(Reply):
    type = "stat"
    id: int = _id()
    path: str = _path()
    entry: Entry = fld()


@dataclass(frozen=True)
class MkdirOk(Reply):
    type = "mkdir"
    id: int = _id()
    path: str = _path()


@dataclass(frozen=True)
class RmdirOk(Reply):
    type = "rmdir"
    id: int = _id()
    path: str = _path()


@dataclass(frozen=True)
class RmOk(Reply):
    type = "rm"
    id: int = _id()
    path: str = _path()


@dataclass(frozen=True)
class MvOk(Reply):
    type = "mv"
    id: int = _id()
    src: str = _path()
    dst: str = _path()


@dataclass(frozen=True)
class PutReady(Reply):
    """Send DATA frames from ``offset``; ``restarted`` says a stale partial was discarded."""

    type = "put.ready"
    id: int = _id()
    path: str = _path()
    offset: int = fld(min=0, max=MAX_INT)
    restarted: bool = False


@dataclass(frozen=True)
class PutDone(Reply):
    type = "put.done"
    id: int = _id()
    path: str = _path()
    size: int = fld(min=0, max=MAX_INT)
    sha256: str | None = fld(None, pattern=SHA256_RE)
    blake3: str | None = fld(None, pattern=BLAKE3_RE)


@dataclass(frozen=True)
class GetReady(Reply):
    """DATA frames for ``size - offset`` bytes follow, then ``get.done``."""

    type = "get.ready"
    id: int = _id()
    path: str = _path()
    size: int = fld(min=0, max=MAX_INT)
    offset: int = fld(min=0, max=MAX_INT)
    sha256: str | None = fld(None, pattern=SHA256_RE)
    #: the file's modification time and permission bits (0o777 at most)
    mtime: float | None = fld(None, min=0)
    mode: int | None = fld(None, min=0, max=0o777)
    blake3: str | None = fld(None, pattern=BLAKE3_RE)


@dataclass(frozen=True)
class GetDone(Reply):
    type = "get.done"
    id: int = _id()
    path: str = _path()
    size: int = fld(min=0, max=MAX_INT)


@dataclass(frozen=True)
class UploadsOk(Reply):
    type = "uploads"
    id: int = _id()
    uploads: tuple[UploadInfo, ...] = ()
    more: bool = False


@dataclass(frozen=True)
class AbortOk(Reply):
    type = "abort"
    id: int = _id()
    path: str = _path()


@dataclass(frozen=True)
class CancelOk(Reply):
    type = "cancel"
    id: int = _id()


@dataclass(frozen=True)
class QuotaOk(Reply):
    type = "quota"
    id: int = _id()
    used: int = fld(min=0, max=MAX_INT)
    reserved: int = fld(min=0, max=MAX_INT)
    limit: int = fld(min=0, max=MAX_INT)
    free: int = fld(min=0, max=MAX_INT)


@dataclass(frozen=True)
class HashOk(Reply):
    type = "hash"
    id: int = _id()
    path: str = _path()
    size: int = fld(min=0, max=MAX_INT)
    #: the digest the request asked for: ``sha256`` by default, else ``blake3``
    sha256: str | None = fld(None, pattern=SHA256_RE)
    blake3: str | None = fld(None, pattern=BLAKE3_RE)

    def _check(self) -> None:
        if (self.sha256 is None) == (self.blake3 is None):
            raise BadRequest("hash: exactly one digest, sha256 or blake3")


@dataclass(frozen=True)
class Pong(Reply):
    type = "ping"
    id: int = _id()
    payload: str | None = fld(None, max_len=1024)
    worker: int | None = fld(None, min=1, max=256)


@dataclass(frozen=True)
class QuitOk(Reply):
    type = "quit"
    id: int = _id()
