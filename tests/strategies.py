"""Hypothesis strategies for every wire message, valid by construction.

The field rules are written out here by hand from the protocol spec
(docs/PROTOCOL.md) rather than read from ``protocol.messages`` metadata, so a
rule that silently changes in the code shows up as a failing test.

Reusable by any test file::

    from tests.strategies import requests, replies, messages, REQUEST_STRATEGIES
"""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

import protocol as p

MAX_INT = 2**53 - 1
MAX_PATH = 4096

# ------------------------------------------------------------------ scalars

#: Any Unicode scalar value: everything UTF-8 can encode, so no lone surrogates.
characters = st.characters(codec="utf-8")


def text(min_size: int = 0, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(characters, min_size=min_size, max_size=max_size)


u53 = st.integers(min_value=0, max_value=MAX_INT)
ids = u53
sizes = u53
sha256s = st.text("0123456789abcdef", min_size=64, max_size=64)
maybe_sha256s = st.none() | sha256s
#: Seconds since the epoch: any finite non-negative JSON number (an integer is fine too).
timestamps = st.floats(min_value=0, allow_nan=False, allow_infinity=False) | u53

_posix_names = st.text(string.ascii_letters + string.digits + "._- ", min_size=1, max_size=16)
#: Paths: mostly path-like, sometimes any Unicode at all (the message layer only
#: bounds the length; the server applies the path rules).
paths = st.one_of(
    st.lists(_posix_names, min_size=1, max_size=6).map("/".join),
    st.lists(_posix_names, max_size=6).map(lambda parts: "/" + "/".join(parts)),
    text(min_size=1, max_size=MAX_PATH),
)
user_fields = text(min_size=1, max_size=64)
#: What the server accepts as a user name (storage rule), a subset of user_fields.
user_names = st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,31}\Z")
passwords = text(min_size=1, max_size=1024)
tokens = text(min_size=1, max_size=256)

error_codes = st.sampled_from(sorted(p.ERROR_CODES)) | text(min_size=1, max_size=64)

#: Any JSON value Python's json module round-trips exactly.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    text(max_size=32),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(text(max_size=8), children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(text(max_size=8), json_values, max_size=5)

# ------------------------------------------------------------------ records

entries = st.builds(
    p.Entry,
    name=text(max_size=1024),
    type=st.sampled_from(("file", "dir", "other")),
    size=sizes,
    mtime=timestamps,
)

upload_infos = st.builds(
    p.UploadInfo,
    path=paths,
    size=sizes,
    offset=sizes,
    updated=timestamps,
    sha256=maybe_sha256s,
)

# ------------------------------------------------------------------ requests


def _path_request(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(cls, id=ids, path=paths)


REQUEST_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "hello": st.builds(
        p.Hello,
        id=ids,
        protocol=u53,
        client=text(max_size=256),
        max_data=st.none() | st.integers(min_value=4096, max_value=64 * 1024 * 1024),
    ),
    "register": st.builds(p.Register, id=ids, user=user_fields, password=passwords),
    # Exactly one of password and token; a password needs a user, a token does not.
    "login": st.one_of(
        st.builds(p.Login, id=ids, user=user_fields, password=passwords,
                  want_token=st.booleans()),
        st.builds(p.Login, id=ids, user=st.none() | user_fields, token=tokens,
                  want_token=st.booleans()),
    ),
    "logout": st.builds(p.Logout, id=ids),
    "whoami": st.builds(p.Whoami, id=ids),
    "pwd": st.builds(p.Pwd, id=ids),
    "cd": _path_request(p.Cd),
    "ls": st.builds(p.Ls, id=ids, path=paths) | st.builds(p.Ls, id=ids),
    "stat": _path_request(p.Stat),
    "mkdir": st.builds(p.Mkdir, id=ids, path=paths, parents=st.booleans()),
    "rmdir": _path_request(p.Rmdir),
    "rm": _path_request(p.Rm),
    "mv": st.builds(p.Mv, id=ids, src=paths, dst=paths, overwrite=st.booleans()),
    # A digest up front, or none (then the client may defer it to commit), never both.
    "put": st.one_of(
        st.builds(p.Put, id=ids, path=paths, size=sizes, sha256=maybe_sha256s,
                  overwrite=st.booleans()),
        st.builds(p.Put, id=ids, path=paths, size=sizes, overwrite=st.booleans(),
                  defer_sha256=st.booleans()),
    ),
    "commit": st.builds(p.Commit, id=ids, sha256=sha256s),
    "get": st.builds(p.Get, id=ids, path=paths, offset=sizes, verify=st.booleans()),
    "uploads": st.builds(p.Uploads, id=ids),
    "abort": _path_request(p.Abort),
    "cancel": st.builds(p.Cancel, id=ids),
    "quota": st.builds(p.Quota, id=ids),
    "hash": _path_request(p.Hash),
    "ping": st.builds(p.Ping, id=ids, payload=st.none() | text(max_size=1024)),
    "quit": st.builds(p.Quit, id=ids),
}

# ------------------------------------------------------------------ replies

REPLY_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "greeting": st.builds(
        p.Greeting,
        protocol=u53,
        server=text(max_size=256),
        max_control=st.integers(min_value=1, max_value=MAX_INT),
        max_data=st.integers(min_value=1, max_value=MAX_INT),
        register=st.booleans(),
    ),
    "error": st.builds(
        p.ErrorReply,
        id=st.none() | ids,
        code=error_codes,
        message=text(max_size=4096),
        details=st.none() | json_objects,
    ),
    "hello": st.builds(p.HelloOk, id=ids, protocol=u53,
                       max_data=st.integers(min_value=1, max_value=MAX_INT)),
    "register": st.builds(p.RegisterOk, id=ids, user=user_fields),
    "login": st.builds(p.LoginOk, id=ids, user=user_fields, cwd=paths,
                       token=st.none() | text(max_size=256)),
    "logout": st.builds(p.LogoutOk, id=ids),
    "whoami": st.builds(p.WhoamiOk, id=ids, user=st.none() | text(max_size=64)),
    "pwd": st.builds(p.PwdOk, id=ids, path=paths),
    "cd": st.builds(p.CdOk, id=ids, path=paths),
    "ls": st.builds(p.LsOk, id=ids, path=paths,
                    entries=st.lists(entries, max_size=5).map(tuple), more=st.booleans()),
    "stat": st.builds(p.StatOk, id=ids, path=paths, entry=entries),
    "mkdir": st.builds(p.MkdirOk, id=ids, path=paths),
    "rmdir": st.builds(p.RmdirOk, id=ids, path=paths),
    "rm": st.builds(p.RmOk, id=ids, path=paths),
    "mv": st.builds(p.MvOk, id=ids, src=paths, dst=paths),
    "put.ready": st.builds(p.PutReady, id=ids, path=paths, offset=sizes,
                           restarted=st.booleans()),
    "put.done": st.builds(p.PutDone, id=ids, path=paths, size=sizes, sha256=maybe_sha256s),
    "get.ready": st.builds(p.GetReady, id=ids, path=paths, size=sizes, offset=sizes,
                           sha256=maybe_sha256s),
    "get.done": st.builds(p.GetDone, id=ids, path=paths, size=sizes),
    "uploads": st.builds(p.UploadsOk, id=ids,
                         uploads=st.lists(upload_infos, max_size=5).map(tuple),
                         more=st.booleans()),
    "abort": st.builds(p.AbortOk, id=ids, path=paths),
    "cancel": st.builds(p.CancelOk, id=ids),
    "quota": st.builds(p.QuotaOk, id=ids, used=sizes, reserved=sizes, limit=sizes, free=sizes),
    "hash": st.builds(p.HashOk, id=ids, path=paths, size=sizes, sha256=sha256s),
    "ping": st.builds(p.Pong, id=ids, payload=st.none() | text(max_size=1024)),
    "quit": st.builds(p.QuitOk, id=ids),
}

RECORD_STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    p.Entry: entries,
    p.UploadInfo: upload_infos,
}

requests = st.one_of(list(REQUEST_STRATEGIES.values()))
replies = st.one_of(list(REPLY_STRATEGIES.values()))
messages = requests | replies


def messages_for(role: str) -> st.SearchStrategy[Any]:
    """What a peer in ``role`` receives: requests for the server, replies for the client."""
    return requests if role == "server" else replies


# ------------------------------------------------------------------ streams

#: Raw file bytes for one DATA frame (a frame is never empty).
data_payloads = st.binary(min_size=1, max_size=2048)


class Data(bytes):
    """Marks a DATA frame's payload in a generated stream."""


def stream_items(role: str, max_size: int = 12) -> st.SearchStrategy[list[Any]]:
    """A list of messages for ``role`` interleaved with DATA frame payloads."""
    return st.lists(messages_for(role) | data_payloads.map(Data), max_size=max_size)


def encode_items(items: list[Any]) -> bytes:
    return b"".join(
        p.encode_data(item) if isinstance(item, Data) else p.encode(item) for item in items
    )
