"""From frames to typed messages and back.

``encode`` turns any message into a complete CONTROL frame.  ``decode_request``
and ``decode_reply`` parse one control payload, strictly: UTF-8 only, JSON
objects only, no NaN/Infinity, no duplicate ``cmd``/``type`` games, nesting and
number sizes bounded by the frame limit and Python's own guards.

``MessageStream`` glues a ``FrameDecoder`` to the parser for one role.  Errors
in a single request (wrong field type, unknown command) do not desynchronise
the stream, so they come out as ``Rejected`` events in order with the rest;
errors that do (bad frames, non-JSON) are raised.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .errors import BadMessage, BadRequest, ProtocolError
from .framing import (
    DEFAULT_MAX_CONTROL,
    DEFAULT_MAX_DATA,
    ControlFrame,
    DataChunk,
    FrameDecoder,
    encode_control,
)
from .messages import MAX_INT, REPLIES, Message, Reply, Request, request_class


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"cmd":"rm","cmd":"ls"} means different things to different parsers: refuse it.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key in JSON object")
    return obj


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode(message: Message) -> bytes:
    """A complete CONTROL frame carrying ``message``."""
    return encode_control(_ENCODER.encode(message.to_wire()).encode("utf-8"))


def parse_object(payload: bytes) -> dict[str, Any]:
    """UTF-8 JSON object, or ``BadMessage``."""
    try:
        text = payload.decode("utf-8")
        obj = _DECODER.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, NaN and integers too long to parse.
        raise BadMessage(f"control frame is not valid JSON: {str(exc)[:200]}")
    if type(obj) is not dict:
        raise BadMessage("control frame must hold a JSON object")
    return obj


def _request_id(obj: dict[str, Any]) -> int | None:
    rid = obj.get("id")
    return rid if type(rid) is int and 0 <= rid <= MAX_INT else None


#: Request payloads up to this size are remembered with what they decoded to.
DECODED_MAX_PAYLOAD = 256
#: How many (cleared when full, so hostile variety costs one dict insert per frame).
DECODED_CACHE_SIZE = 512
#: Fields whose values are never kept beyond their request (passwords, tokens).
_SECRET_FIELDS = frozenset({"password", "token", "new_password", "old_password"})

_decoded: dict[bytes, Request] = {}
_keepable: dict[type, bool] = {}


def _keepable_class(cls: type) -> bool:
    """Whether a request of ``cls`` may be remembered: it carries no secret."""
    known = _keepable.get(cls)
    if known is None:
        known = _keepable[cls] = not (_SECRET_FIELDS & set(getattr(cls, "__dataclass_fields__",
                                                                   ("password",))))
    return known


def decode_request(payload: bytes) -> Request:
    """The request in ``payload``; raises ``BadMessage`` (not a JSON object) or a
    ``ProtocolError`` carrying the request id (not a valid request).

    Requests are immutable, and a reconnecting client sends the same ``hello`` and
    ``quit`` bytes every time: a small payload that decoded to a request without
    secrets is remembered, and the same bytes again give the same object without
    parsing and validating them again (about 15 us each, issue 17).  Only valid
    requests are kept, never one carrying a password or a token."""
    if type(payload) is bytes:
        known = _decoded.get(payload)           # (the common case, without a call)
        if known is not None:
            return known
    return _remembered(_decoded, payload, _decode_request, _keepable_request)


def _keepable_request(request: Request) -> bool:
    return _keepable_class(type(request))


def _remembered(cache: dict[bytes, Any], payload: bytes, decode: Callable[[bytes], Any],
                keep: Callable[[Any], bool]) -> Any:
    """``decode(payload)`` for bytes the caller did not find in ``cache``, kept there
    when they are small and decoded to a message ``keep`` allows (bounded: cleared
    when full, so hostile variety costs one dict insert per frame)."""
    known = decode(payload)
    if type(payload) is bytes and len(payload) <= DECODED_MAX_PAYLOAD and keep(known):
        if len(cache) >= DECODED_CACHE_SIZE:
            cache.clear()
        cache[payload] = known
    return known


def _decode_request(payload: bytes) -> Request:
    obj = parse_object(payload)
    rid = _request_id(obj)
    try:
        return request_class(obj.get("cmd")).from_wire(obj)
    except ProtocolError as exc:
        exc.request_id = rid
        # A refused inline put is still followed by its DATA (Rejected.inline_put).
        exc.inline_put = obj.get("cmd") == "put" and obj.get("inline") is True  # type: ignore
        raise
    except RecursionError:
        raise BadRequest("request nested too deeply", request_id=rid)


#: The replies of a connection's set-up and end, which a reconnecting client receives
#: byte for byte the same every time (all fields scalar: nothing a caller can mutate).
_KEPT_REPLIES = frozenset({"greeting", "hello", "login", "quit"})
_decoded_replies: dict[bytes, Reply] = {}


def decode_reply(payload: bytes) -> Reply:
    """The reply in ``payload``; ``BadMessage`` if it is not a valid one.

    As ``decode_request``: a small greeting, hello, login or quit reply that
    decoded once is remembered (bounded), so a client that reconnects does not
    parse and validate the same bytes again -- never a login reply that carries
    a token."""
    if type(payload) is bytes:
        known = _decoded_replies.get(payload)   # (the common case, without a call)
        if known is not None:
            return known
    return _remembered(_decoded_replies, payload, _decode_reply, _keepable_reply)


def _keepable_reply(reply: Reply) -> bool:
    return reply.type in _KEPT_REPLIES and getattr(reply, "token", None) is None


def _decode_reply(payload: bytes) -> Reply:
    obj = parse_object(payload)
    cls = REPLIES.get(obj.get("type")) if isinstance(obj.get("type"), str) else None
    if cls is None:
        raise BadMessage(f"unknown reply type {str(obj.get('type'))[:64]!r}",
                         request_id=_request_id(obj))
    try:
        return cls.from_wire(obj)
    except BadRequest as exc:
        # A malformed reply means the server is broken: not recoverable.
        raise BadMessage(f"malformed {cls.type} reply: {exc.message}",
                         request_id=_request_id(obj))


@dataclass(frozen=True, slots=True)
class Rejected:
    """A request frame that parsed as JSON but is not a valid request.

    ``inline_put``: the frame said ``"cmd": "put"`` and ``"inline": true``, so
    DATA the receiver cannot attribute to anything may follow it.
    """

    error: ProtocolError
    inline_put: bool = False


Event = Request | Reply | DataChunk | Rejected


class MessageStream:
    """Bytes in, typed events out, for one side of a connection.

    ``role="server"`` decodes requests (what a server receives); ``"client"``
    decodes replies.  DATA payloads come out as ``DataChunk`` views into the fed
    buffer (see ``FrameDecoder``).
    """

    def __init__(self, role: Literal["server", "client"],
                 max_control: int = DEFAULT_MAX_CONTROL,
                 max_data: int = DEFAULT_MAX_DATA) -> None:
        if role not in ("server", "client"):
            raise ValueError(role)
        self.role = role
        self.frames = FrameDecoder(max_control, max_data)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Events for ``data``; raises the first fatal error in stream order.

        (A non-JSON control frame followed, in the same chunk, by a broken frame
        header is a BAD_MESSAGE, just as when the two arrive in separate reads.)
        """
        frames, error = self.frames.feed_until_error(data)
        events: list[Event] = []
        for frame in frames:
            if type(frame) is ControlFrame:
                events.append(self._decode(frame.payload))
            else:
                events.append(frame)
        if error is not None:
            raise error
        return events

    def feed_eof(self) -> None:
        self.frames.feed_eof()

    def _decode(self, payload: bytes) -> Request | Reply | Rejected:
        if self.role == "client":
            return decode_reply(payload)
        try:
            return decode_request(payload)
        except BadRequest as exc:
            return Rejected(exc, getattr(exc, "inline_put", False))


__all__ = ["DataChunk", "Event", "MessageStream", "Rejected", "decode_reply",
           "decode_request", "encode", "parse_object"]
