"""Typed control messages: one frozen dataclass per request and per reply.

Each class validates its fields when it is constructed -- and decoding goes
through the constructor -- so a message object that exists is a valid one.
Field rules live next to the fields (``fld(min=..., max_len=...)``); the type
annotations say the JSON type; the engine that enforces them is
:mod:`protocol.schema`.  Unknown JSON keys are ignored so that a later
minor revision can add optional fields without breaking older peers.  The
replies live in :mod:`protocol.replies` and the shared records and limits in
:mod:`protocol.records`; this module re-exports both, so ``protocol.messages``
is still the whole catalogue.

Wire form: a request is ``{"cmd": NAME, "id": N, ...fields}``; a reply is
``{"type": NAME, "id": N, ...fields}``.  Optional fields whose value is null
are left out when encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .digests import DIGESTS as _DIGESTS
from .errors import BadRequest, UnknownCommand
from .records import (
    BLAKE3_RE,
    DIGEST_NAME_RE,
    MAX_INT,
    MAX_MODE,
    MAX_PATH_CHARS,
    PROTOCOL_VERSION,
    SHA256_RE,
    Entry,
    UploadInfo,
)
from .records import id_field as _id
from .records import path_field as _path
from .records import user_field as _user
from .replies import (
    REPLIES,
    AbortOk,
    CancelOk,
    CdOk,
    ErrorReply,
    GetDone,
    GetReady,
    Greeting,
    HashOk,
    HelloOk,
    LoginOk,
    LogoutOk,
    LsOk,
    MkdirOk,
    MvOk,
    Pong,
    PutDone,
    PutReady,
    PwdOk,
    QuitOk,
    QuotaOk,
    RegisterOk,
    Reply,
    RmdirOk,
    RmOk,
    StatOk,
    UploadsOk,
    WhoamiOk,
)
from .schema import Message, fld

__all__ = [
    "MAX_INT", "MAX_MODE", "MAX_PATH_CHARS", "PROTOCOL_VERSION", "REPLIES", "REQUESTS",
    "BLAKE3_RE", "DIGEST_NAME_RE", "SHA256_RE", "Abort",
    "AbortOk", "Cancel", "CancelOk", "Cd", "CdOk", "Commit", "Entry", "ErrorReply", "Get",
    "GetDone", "GetReady", "Greeting", "Hash", "HashOk", "Hello", "HelloOk", "Login", "LoginOk",
    "Logout", "LogoutOk", "Ls", "LsOk", "Message", "Mkdir", "MkdirOk", "Mv", "MvOk", "Ping",
    "Pong", "Put", "PutDone", "PutReady", "Pwd", "PwdOk", "Quit", "QuitOk", "Quota", "QuotaOk",
    "Register", "RegisterOk", "Reply", "Request", "Rm", "RmOk", "Rmdir", "RmdirOk", "Stat",
    "StatOk", "UploadInfo", "Uploads", "UploadsOk", "Whoami", "WhoamiOk", "request_class",
]


# ---------------------------------------------------------------- requests


REQUESTS: dict[str, type[Request]] = {}


@dataclass(frozen=True)
class Request(Message):
    cmd: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.cmd:
            REQUESTS[cls.cmd] = cls

    def to_wire(self) -> dict[str, Any]:
        return {"cmd": self.cmd, **super().to_wire()}


def _password() -> Any:
    return fld(None, min_len=1, max_len=1024)


@dataclass(frozen=True)
class Hello(Request):
    cmd = "hello"
    id: int = _id()
    protocol: int = fld(min=0, max=MAX_INT)
    client: str = fld("", max_len=256)
    #: Largest DATA frame the client accepts; the server sends no larger.
    max_data: int | None = fld(None, min=4096, max=64 * 1024 * 1024)
    #: the digests the client can verify with (protocol.digests); absent: SHA-256 only
    digests: tuple[str, ...] | None = fld(None, max=16, pattern=DIGEST_NAME_RE)


@dataclass(frozen=True)
class Register(Request):
    cmd = "register"
    id: int = _id()
    user: str = _user()
    password: str = fld(min_len=1, max_len=1024)


@dataclass(frozen=True)
class Login(Request):
    """Log in with ``user`` + ``password``, or with a session ``token`` alone."""

    cmd = "login"
    id: int = _id()
    user: str | None = fld(None, min_len=1, max_len=64)
    password: str | None = _password()
    token: str | None = fld(None, min_len=1, max_len=256)
    want_token: bool = False

    def _check(self) -> None:
        if (self.password is None) == (self.token is None):
            raise BadRequest("login needs exactly one of password and token")
        if self.password is not None and self.user is None:
            raise BadRequest("login with a password needs a user")


@dataclass(frozen=True)
class Logout(Request):
    cmd = "logout"
    id: int = _id()


@dataclass(frozen=True)
class Whoami(Request):
    cmd = "whoami"
    id: int = _id()


@dataclass(frozen=True)
class Pwd(Request):
    cmd = "pwd"
    id: int = _id()


@dataclass(frozen=True)
class Cd(Request):
    cmd = "cd"
    id: int = _id()
    path: str = _path()


@dataclass(frozen=True)
class Ls(Request):
    cmd = "ls"
    id: int = _id()
    path: str = fld(".", min_len=1, max_len=MAX_PATH_CHARS)


@dataclass(frozen=True)
class Stat(Request):
    cmd = "stat"
    id: int = _id()
    path: str = _path()


@dataclass(frozen=True)
class Mkdir(Request):
    cmd = "mkdir"
    id: int = _id()
    path: str = _path()
    parents: bool = False


@dataclass(frozen=True)
class Rmdir(Request):
    cmd = "rmdir"
    id: int = _id()
    path: str = _path()


@dataclass(frozen=True)
class Rm(Request):
    cmd = "rm"
    id: int = _id()
    path: str = _path()


@dataclass(frozen=True)
class Mv(Request):
    cmd = "mv"
    id: int = _id()
    src: str = _path()
    dst: str = _path()
    overwrite: bool = False


@dataclass(frozen=True)
class Put(Request):
    """Begin or resume an upload of ``size`` bytes to ``path``.

    With ``defer_sha256`` the client hashes while it sends and names the
    SHA-256 after the last byte, in ``commit``, instead of up front.  ``blake3``
    and ``defer_blake3`` are the same for BLAKE3, in a session whose ``hello``
    chose it; a put declares one digest at most.  With
    ``inline`` the client sends all ``size`` bytes right behind the request,
    without waiting for ``put.ready`` (there is none); the server never resumes
    such an upload and answers ``put.done`` or an error only.  With ``stream``
    the size is unknown (``size`` absent, ``defer_sha256`` required): the
    client names it in ``commit``; quota is charged as bytes arrive, from
    ``size_hint`` if given.  ``mtime`` and ``mode`` are applied to the file
    before it becomes visible.
    """

    cmd = "put"
    id: int = _id()
    path: str = _path()
    size: int | None = fld(None, min=0, max=MAX_INT)
    sha256: str | None = fld(None, pattern=SHA256_RE)
    overwrite: bool = False
    defer_sha256: bool = False
    inline: bool = False
    blake3: str | None = fld(None, pattern=BLAKE3_RE)
    defer_blake3: bool | None = None  # omitted unless true, like stream
    stream: bool | None = None        # omitted unless true: older servers see no change
    size_hint: int | None = fld(None, min=0, max=MAX_INT)
    mtime: float | None = fld(None, min=0, max=MAX_INT)
    mode: int | None = fld(None, min=0, max=MAX_MODE)

    @property
    def deferred(self) -> str | None:
        """The digest named later, in ``commit`` (``sha256``/``blake3``), or None."""
        return "sha256" if self.defer_sha256 else "blake3" if self.defer_blake3 else None

    @property
    def declared(self) -> str | None:
        """The digest declared up front (``sha256``/``blake3``), or None."""
        return "sha256" if self.sha256 is not None else \
            "blake3" if self.blake3 is not None else None

    def _check(self) -> None:
        given = [self.sha256 is not None, self.blake3 is not None, self.defer_sha256,
                 bool(self.defer_blake3)]
        if sum(given) > 1:
            raise BadRequest("put: declare one digest, up front or deferred, not several")
        if self.deferred and self.inline:
            raise BadRequest("put: an inline upload cannot defer its digest")
        if self.stream:
            if self.size is not None:
                raise BadRequest("put: a stream has no size up front (name it in commit)")
            if not self.deferred:
                raise BadRequest("put: a stream needs defer_sha256 (its digest comes last)")
        else:
            if self.size is None:
                raise BadRequest("put: missing field 'size'")
            if self.size_hint is not None:
                raise BadRequest("put: size_hint is only for a stream")


@dataclass(frozen=True)
class Commit(Request):
    """Finish a deferred upload: verify against ``sha256`` (``defer_sha256``) or
    ``blake3`` (``defer_blake3``) and publish.  Exactly one of the two."""

    cmd = "commit"
    id: int = _id()
    sha256: str | None = fld(None, pattern=SHA256_RE)
    #: the bytes sent in all; required for a ``stream`` upload, checked if given
    size: int | None = fld(None, min=0, max=MAX_INT)
    blake3: str | None = fld(None, pattern=BLAKE3_RE)

    def _check(self) -> None:
        if (self.sha256 is None) == (self.blake3 is None):
            raise BadRequest("commit: name exactly one digest, sha256 or blake3")


@dataclass(frozen=True)
class Get(Request):
    """Download ``path`` from ``offset``; ``verify`` asks for the file's digest:
    SHA-256, or the one ``digest`` names (BLAKE3, where ``hello`` chose it)."""

    cmd = "get"
    id: int = _id()
    path: str = _path()
    offset: int = fld(0, min=0, max=MAX_INT)
    verify: bool = True
    digest: str | None = fld(None, choices=_DIGESTS)


@dataclass(frozen=True)
class Uploads(Request):
    cmd = "uploads"
    id: int = _id()


@dataclass(frozen=True)
class Abort(Request):
    """Discard the unfinished upload to ``path`` and release its reservation."""

    cmd = "abort"
    id: int = _id()
    path: str = _path()


@dataclass(frozen=True)
class Cancel(Request):
    """Stop the transfer running on this connection; an upload stays resumable."""

    cmd = "cancel"
    id: int = _id()


@dataclass(frozen=True)
class Quota(Request):
    cmd = "quota"
    id: int = _id()


@dataclass(frozen=True)
class Hash(Request):
    """The file's SHA-256, or the digest ``digest`` names (BLAKE3 where negotiated)."""

    cmd = "hash"
    id: int = _id()
    path: str = _path()
    digest: str | None = fld(None, choices=_DIGESTS)


@dataclass(frozen=True)
class Ping(Request):
    cmd = "ping"
    id: int = _id()
    payload: str | None = fld(None, max_len=1024)


@dataclass(frozen=True)
class Quit(Request):
    cmd = "quit"
    id: int = _id()


def request_class(cmd: Any) -> type[Request]:
    cls = REQUESTS.get(cmd) if isinstance(cmd, str) else None
    if cls is None:
        raise UnknownCommand(f"unknown command {str(cmd)[:64]!r}")
    return cls
