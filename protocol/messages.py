"""Typed control messages: one frozen dataclass per request and per reply.

Each class validates its fields when it is constructed -- and decoding goes
through the constructor -- so a message object that exists is a valid one.
Field rules live next to the fields (``fld(min=..., max_len=...)``); the type
annotations say the JSON type.  Unknown JSON keys are ignored so that a later
minor revision can add optional fields without breaking older peers.

Wire form: a request is ``{"cmd": NAME, "id": N, ...fields}``; a reply is
``{"type": NAME, "id": N, ...fields}``.  Optional fields whose value is null
are left out when encoding.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import BadRequest, UnknownCommand

PROTOCOL_VERSION = 1
#: Largest integer every JSON implementation represents exactly.
MAX_INT = 2**53 - 1
MAX_PATH_CHARS = 4096
SHA256_RE = re.compile(r"[0-9a-f]{64}")
_MISSING = dataclasses.MISSING


def fld(default: Any = _MISSING, *, min: int | None = None, max: int | None = None,
        max_len: int | None = None, min_len: int | None = None,
        pattern: re.Pattern[str] | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with validation rules in its metadata."""
    meta = {"min": min, "max": max, "max_len": max_len, "min_len": min_len,
            "pattern": pattern, "choices": choices}
    return field(default=default, metadata=meta)


def _id() -> Any:
    return fld(min=0, max=MAX_INT)


def _path() -> Any:
    return fld(min_len=1, max_len=MAX_PATH_CHARS)


@dataclass(frozen=True)
class _Rule:
    name: str
    base: type
    optional: bool
    item: type | None          # element class of a tuple[...] field
    meta: dict[str, Any]
    has_default: bool


@dataclass(frozen=True)
class _Schema:
    """What a message class needs at run time, worked out once per class.

    Every message sent or received is validated, so the rules are turned into
    one small closure per field (``checks``) instead of being interpreted
    field by field, rule by rule, on every message.
    """

    rules: tuple[_Rule, ...]
    checks: tuple[tuple[str, Callable[[Any], None]], ...]
    plain: tuple[str, ...]             # fields that go to and from JSON as they are
    nested: tuple[_Rule, ...]          # records and lists of records
    required: tuple[str, ...]          # fields the JSON object must have


_SCHEMAS: dict[type, _Schema] = {}


def _schema(cls: type) -> _Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        rules = _build_rules(cls)
        schema = _SCHEMAS[cls] = _Schema(
            rules=rules,
            checks=tuple((rule.name, _compile_check(cls, rule)) for rule in rules),
            plain=tuple(rule.name for rule in rules if rule.item is None),
            nested=tuple(rule for rule in rules if rule.item is not None),
            required=tuple(rule.name for rule in rules
                           if not rule.has_default and not rule.optional))
    return schema


def _rules(cls: type) -> tuple[_Rule, ...]:
    return _schema(cls).rules


def _build_rules(cls: type) -> tuple[_Rule, ...]:
    hints = typing.get_type_hints(cls)
    built = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        if optional:
            hint = next(a for a in args if a is not type(None))
        item = None
        origin = typing.get_origin(hint)
        if origin is tuple:
            item, hint = typing.get_args(hint)[0], tuple
        elif origin is dict:
            hint = dict
        elif isinstance(hint, type) and issubclass(hint, Message):
            item = hint          # a nested record, e.g. StatOk.entry
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        built.append(_Rule(f.name, hint, optional, item, dict(f.metadata), has_default))
    return tuple(built)


def _compile_check(cls: type, rule: _Rule) -> Callable[[Any], None]:
    """One field's rules as a closure: ``check(value)`` raises ``BadRequest`` or returns."""
    where = f"{getattr(cls, 'cmd', None) or getattr(cls, 'type', cls.__name__)}.{rule.name}"
    base, optional, item = rule.base, rule.optional, rule.item
    meta = rule.meta
    lo, hi = meta.get("min"), meta.get("max")
    max_len, min_len = meta.get("max_len"), meta.get("min_len")
    pattern, choices = meta.get("pattern"), meta.get("choices")
    fullmatch = pattern.fullmatch if pattern is not None else None

    def fail(message: str) -> None:
        raise BadRequest(f"{where} {message}")

    def check_type(value: Any) -> bool:
        """False for None (allowed), True for a value of the right type; raises otherwise."""
        if value is None:
            if not optional:
                fail("is required")
            return False
        if type(value) is not base and not (base is float and type(value) is int):
            fail(f"must be {base.__name__}, not {type(value).__name__}")
        return True

    if base is int or base is float:
        def check(value: Any) -> None:
            if type(value) is not int and not check_type(value):
                return
            if type(value) is float and not math.isfinite(value):
                # 1e400 parses as inf: the encoder could never send it back (allow_nan=False).
                fail("must be a finite number")
            if lo is not None and value < lo:
                fail(f"must be >= {lo}")
            if hi is not None and value > hi:
                fail(f"must be <= {hi}")
    elif base is str:
        def check(value: Any) -> None:
            if type(value) is not str and not check_type(value):
                return
            if max_len is not None and len(value) > max_len:
                fail(f"is longer than {max_len} characters")
            if min_len is not None and len(value) < min_len:
                fail("must not be empty")
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    fail("is not valid Unicode (lone surrogate)")
            if fullmatch is not None and not fullmatch(value):
                fail("is malformed")
            if choices is not None and value not in choices:
                fail(f"must be one of {', '.join(choices)}")
    elif base is dict:
        def check(value: Any) -> None:
            if not check_type(value):
                return
            # Free-form JSON (ErrorReply.details): it must be encodable again, so no
            # infinities, lone surrogates or non-JSON objects.
            try:
                json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError, RecursionError):
                fail("is not encodable as JSON")
    elif base is tuple:
        def check(value: Any) -> None:
            if not check_type(value):
                return
            for element in value:
                if type(element) is not item:
                    fail(f"holds a {type(element).__name__}")
    else:
        def check(value: Any) -> None:
            check_type(value)
    return check


class Message:
    """Base of every control message."""

    def __post_init__(self) -> None:
        schema = _SCHEMAS.get(type(self)) or _schema(type(self))
        for name, check in schema.checks:
            check(getattr(self, name))
        self._check()

    def _check(self) -> None:
        """Cross-field rules; subclasses override."""

    def to_wire(self) -> dict[str, Any]:
        schema = _SCHEMAS.get(type(self)) or _schema(type(self))
        out: dict[str, Any] = {}
        for name in schema.plain:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for rule in schema.nested:
            value = getattr(self, rule.name)
            if value is None:
                continue
            if rule.base is tuple:
                out[rule.name] = [element.to_wire() for element in value]
            else:
                out[rule.name] = value.to_wire()
        return out

    @classmethod
    def from_wire(cls, obj: Any) -> Any:
        if type(obj) is not dict:
            raise BadRequest(f"{cls.__name__} must be a JSON object")
        schema = _SCHEMAS.get(cls) or _schema(cls)
        for name in schema.required:
            if name not in obj:
                raise BadRequest(f"{cls.__name__}: missing field {name!r}")
        kwargs = {name: obj[name] for name in schema.plain if name in obj}
        for rule in schema.nested:
            if rule.name not in obj:
                continue
            value = obj[rule.name]
            if rule.base is tuple:
                if type(value) is not list:
                    raise BadRequest(f"{cls.__name__}.{rule.name} must be a list")
                value = tuple(rule.item.from_wire(element) for element in value)  # type: ignore[union-attr]
            elif value is not None:
                value = rule.item.from_wire(value)  # type: ignore[union-attr]
            kwargs[rule.name] = value
        return cls(**kwargs)


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class Entry(Message):
    """One line of a listing or the answer to ``stat``."""

    name: str = fld(max_len=1024)
    type: str = fld(choices=("file", "dir", "other"))
    size: int = fld(min=0, max=MAX_INT)
    mtime: float = fld(min=0)


@dataclass(frozen=True)
class UploadInfo(Message):
    """An unfinished upload of the logged-in user."""

    path: str = _path()
    size: int = fld(min=0, max=MAX_INT)
    offset: int = fld(min=0, max=MAX_INT)
    updated: float = fld(min=0)
    sha256: str | None = fld(None, pattern=SHA256_RE)


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


def _user() -> Any:
    return fld(min_len=1, max_len=64)


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
    SHA-256 after the last byte, in ``commit``, instead of up front.  With
    ``inline`` the client sends all ``size`` bytes right behind the request,
    without waiting for ``put.ready`` (there is none); the server never resumes
    such an upload and answers ``put.done`` or an error only.
    """

    cmd = "put"
    id: int = _id()
    path: str = _path()
    size: int = fld(min=0, max=MAX_INT)
    sha256: str | None = fld(None, pattern=SHA256_RE)
    overwrite: bool = False
    defer_sha256: bool = False
    inline: bool = False

    def _check(self) -> None:
        if self.defer_sha256 and self.sha256 is not None:
            raise BadRequest("put: give sha256 up front or defer it, not both")
        if self.defer_sha256 and self.inline:
            raise BadRequest("put: an inline upload cannot defer its sha256")


@dataclass(frozen=True)
class Commit(Request):
    """Finish a ``defer_sha256`` upload: verify against ``sha256`` and publish."""

    cmd = "commit"
    id: int = _id()
    sha256: str = fld(pattern=SHA256_RE)


@dataclass(frozen=True)
class Get(Request):
    """Download ``path`` from ``offset``; ``verify`` asks for the file's SHA-256."""

    cmd = "get"
    id: int = _id()
    path: str = _path()
    offset: int = fld(0, min=0, max=MAX_INT)
    verify: bool = True


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
    cmd = "hash"
    id: int = _id()
    path: str = _path()


@dataclass(frozen=True)
class Ping(Request):
    cmd = "ping"
    id: int = _id()
    payload: str | None = fld(None, max_len=1024)


@dataclass(frozen=True)
class Quit(Request):
    cmd = "quit"
    id: int = _id()


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


@dataclass(frozen=True)
class GetReady(Reply):
    """DATA frames for ``size - offset`` bytes follow, then ``get.done``."""

    type = "get.ready"
    id: int = _id()
    path: str = _path()
    size: int = fld(min=0, max=MAX_INT)
    offset: int = fld(min=0, max=MAX_INT)
    sha256: str | None = fld(None, pattern=SHA256_RE)


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
    sha256: str = fld(pattern=SHA256_RE)


@dataclass(frozen=True)
class Pong(Reply):
    type = "ping"
    id: int = _id()
    payload: str | None = fld(None, max_len=1024)


@dataclass(frozen=True)
class QuitOk(Reply):
    type = "quit"
    id: int = _id()


def request_class(cmd: Any) -> type[Request]:
    cls = REQUESTS.get(cmd) if isinstance(cmd, str) else None
    if cls is None:
        raise UnknownCommand(f"unknown command {str(cmd)[:64]!r}")
    return cls
