"""MessageStream: sticky packets, partial reads, totality and Rejected events."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol as p
from tests.strategies import (
    Data,
    data_payloads,
    encode_items,
    json_values,
    requests,
    stream_items,
)

roles = st.sampled_from(["server", "client"])
#: Generated replies (listings) can exceed the 64 KiB default; the limit is not under test here.
BIG = 1024 * 1024


def role_and_items(max_size: int = 8) -> st.SearchStrategy[tuple[str, list[Any]]]:
    """(role, items that role receives); no flatmap, which costs a validation per draw."""
    return st.one_of([st.tuples(st.just(role), stream_items(role, max_size))
                      for role in ("server", "client")])


class Collector:
    """Turns a stream's events back into items, re-joining DATA chunks per frame."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.pending = bytearray()

    def add(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, p.DataChunk):
                assert len(event.data) > 0
                self.pending += bytes(event.data)      # a view into the fed buffer: copy now
                if event.frame_end:
                    self.items.append(Data(self.pending))
                    self.pending.clear()
            else:
                assert not self.pending, "control frame inside a DATA frame"
                self.items.append(event)


def split(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted(min(c, len(blob)) for c in cuts)
    edges = [0, *points, len(blob)]
    return [blob[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def decode_all(role: str, chunks: list[bytes], reuse_buffer: bool = False) -> list[Any]:
    stream = p.MessageStream(role, max_control=BIG)
    out = Collector()
    if reuse_buffer:
        # Like recv_into(): one buffer, overwritten after every feed.
        buf = bytearray(max((len(c) for c in chunks), default=0))
        view = memoryview(buf)
        for chunk in chunks:
            view[:len(chunk)] = chunk
            out.add(stream.feed(view[:len(chunk)]))
            view[:] = b"\xff" * len(buf)
    else:
        for chunk in chunks:
            out.add(stream.feed(chunk))
    stream.feed_eof()
    assert not out.pending
    return out.items


# ------------------------------------------------------------------ sticky packets


def chunkings(blob: bytes, cuts: list[int]) -> dict[str, tuple[list[bytes], bool]]:
    """Ways recv() may hand the same bytes over: name -> (chunks, via a reused buffer)."""
    arbitrary = split(blob, cuts)
    with_empties = [piece for chunk in arbitrary for piece in (b"", chunk)] + [b""]
    return {
        "all at once": ([blob], False),
        "byte by byte": ([blob[i:i + 1] for i in range(len(blob))], False),
        "arbitrary points": (arbitrary, False),
        "with empty chunks": (with_empties, False),
        "reused receive buffer": (arbitrary, True),
    }


# One generated stream is decoded under every chunking: generating the stream is
# the expensive part, and the promise is the same for each.
@given(role_and_items(max_size=6), st.data())
def test_stream_split_at_arbitrary_points_yields_exactly_the_same_sequence(role_items, data):
    role, items = role_items
    blob = encode_items(items)
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=25))
    for name, (chunks, reuse) in chunkings(blob, cuts).items():
        assert decode_all(role, chunks, reuse_buffer=reuse) == items, name


def test_stream_role_must_be_server_or_client():
    with pytest.raises(ValueError):
        p.MessageStream("peer")  # type: ignore[arg-type]


# ------------------------------------------------------------------ totality


def feed_checked(stream: p.MessageStream, chunks: list[bytes]) -> None:
    """Feed until the end or the first ProtocolError; nothing else may escape."""
    limit = max(p.HEADER_SIZE, stream.frames.max_control)
    try:
        for chunk in chunks:
            for event in stream.feed(chunk):
                assert isinstance(event, p.Request | p.Reply | p.DataChunk | p.Rejected)
            assert stream.frames.buffered <= limit
        stream.feed_eof()
    except p.ProtocolError:
        assert stream.frames.buffered <= limit


@given(roles, st.binary(max_size=1000), st.integers(1, 300), st.integers(1, 300), st.data())
def test_stream_returns_events_or_raises_protocol_error_on_any_bytes(role, blob, mc, md, data):
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=10))
    feed_checked(p.MessageStream(role, max_control=mc, max_data=md), split(blob, cuts))


@st.composite
def corrupted_streams(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid stream with bytes flipped, dropped or inserted, headers included."""
    role, items = draw(role_and_items(max_size=4))
    blob = bytearray(encode_items(items))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "drop", "insert", "header"]))
        pos = draw(st.integers(0, len(blob)))
        if kind == "flip" and pos < len(blob):
            blob[pos] = draw(st.integers(0, 255))
        elif kind == "drop":
            del blob[pos:pos + draw(st.integers(1, 8))]
        elif kind == "insert":
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            blob[pos:pos] = struct.pack(">IB", draw(st.integers(0, 2**32 - 1)),
                                        draw(st.integers(0, 255)))
    return role, bytes(blob)


@given(corrupted_streams(), st.data())
def test_stream_returns_events_or_raises_protocol_error_on_corrupted_frames(corrupted, data):
    role, blob = corrupted
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=10))
    feed_checked(p.MessageStream(role, max_control=4096, max_data=4096), split(blob, cuts))


@given(roles, st.binary(max_size=64))
def test_stream_keeps_raising_after_a_frame_error(role, then):
    stream = p.MessageStream(role)
    with pytest.raises(p.BadFrame) as first:
        stream.feed(struct.pack(">IB", 0, 1))
    with pytest.raises(p.BadFrame) as again:
        stream.feed(then)
    assert again.value is first.value


# ------------------------------------------------------------------ Rejected


def control(obj: Any) -> bytes:
    return p.encode_control(json.dumps(obj).encode())


p_ids = st.integers(0, 2**53 - 1)
#: (request object, id the Rejected event must carry)
bad_requests = st.one_of(
    p_ids.map(lambda i: ({"cmd": "nope", "id": i}, i)),
    p_ids.map(lambda i: ({"cmd": "put", "id": i, "path": "a", "size": -1}, i)),
    p_ids.map(lambda i: ({"cmd": "rm", "id": i}, i)),
    p_ids.map(lambda i: ({"cmd": "mkdir", "id": i, "path": "a", "parents": 1}, i)),
    p_ids.map(lambda i: ({"id": i}, i)),
    st.one_of(st.just(-1), st.just(2**53), st.just(True), st.just("7"), st.just(1.5),
              st.just(None)).map(lambda bad: ({"cmd": "ping", "id": bad}, None)),
    json_values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)).map(
        lambda v: ({"cmd": "quit", "id": v}, None)),
)


@given(st.lists(requests, max_size=3), bad_requests, st.lists(requests | data_payloads.map(Data),
                                                              max_size=3))
def test_bad_request_mid_stream_is_rejected_in_order_and_the_rest_still_decodes(
        before, bad, after):
    obj, expected_id = bad
    blob = encode_items(before) + control(obj) + encode_items(after)
    events = decode_all("server", [blob])
    assert events[:len(before)] == before
    rejected = events[len(before)]
    assert isinstance(rejected, p.Rejected)
    assert rejected.error.request_id == expected_id
    assert rejected.error.code in ("BAD_REQUEST", "UNKNOWN_COMMAND")
    assert not rejected.error.fatal
    assert events[len(before) + 1:] == after


@pytest.mark.parametrize("payload", [b"not json", b"[1]", b'"x"', b"\xff", b"{"],
                         ids=["text", "array", "string", "bad-utf8", "truncated"])
def test_control_frame_that_is_not_a_json_object_raises_fatal_bad_message(payload):
    stream = p.MessageStream("server")
    with pytest.raises(p.BadMessage) as info:
        stream.feed(p.encode(p.Ping(id=1)) + p.encode_control(payload))
    assert info.value.fatal


@pytest.mark.parametrize("obj", [{"type": "pong", "id": 1}, {"type": "ls", "id": 1},
                                 {"id": 1}, {"type": "put.ready", "id": 1, "path": "a",
                                             "offset": -1}])
def test_malformed_reply_raises_fatal_bad_message_on_the_client(obj):
    with pytest.raises(p.BadMessage) as info:
        p.MessageStream("client").feed(control(obj))
    assert info.value.request_id == 1
    assert info.value.fatal
