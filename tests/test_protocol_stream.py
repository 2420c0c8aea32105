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


#: Cut points, taken modulo the stream's length + 1 (a strategy built once is much
#: cheaper than one built per example from the stream's length).
cut_points = st.lists(st.integers(0, 2**20), max_size=25)


def split(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted(c % (len(blob) + 1) for c in cuts)
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
@given(role_and_items(max_size=6), cut_points)
def test_stream_split_at_arbitrary_points_yields_exactly_the_same_sequence(role_items, cuts):
    role, items = role_items
    blob = encode_items(items)
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


@given(roles, st.binary(max_size=400), st.integers(1, 300), st.integers(1, 300), cut_points)
def test_stream_returns_events_or_raises_protocol_error_on_any_bytes(role, blob, mc, md, cuts):
    feed_checked(p.MessageStream(role, max_control=mc, max_data=md), split(blob, cuts))


#: (kind, position, byte, count, bytes, length, type): one corruption of a valid stream.
mutations = st.tuples(st.sampled_from(["flip", "drop", "insert", "header"]), st.integers(0, 2**20),
                      st.integers(0, 255), st.integers(1, 8), st.binary(min_size=1, max_size=8),
                      st.integers(0, 2**32 - 1), st.integers(0, 255))


def corrupt(blob: bytes, changes: list[tuple]) -> bytes:
    """Flip, drop or insert bytes, or insert a random frame header, anywhere."""
    out = bytearray(blob)
    for kind, pos, byte, count, junk, length, ftype in changes:
        pos %= len(out) + 1
        if kind == "flip" and pos < len(out):
            out[pos] = byte
        elif kind == "drop":
            del out[pos:pos + count]
        elif kind == "insert":
            out[pos:pos] = junk
        else:
            out[pos:pos] = struct.pack(">IB", length, ftype)
    return bytes(out)


@given(role_and_items(max_size=3), st.lists(mutations, min_size=1, max_size=3), cut_points)
def test_stream_returns_events_or_raises_protocol_error_on_corrupted_frames(role_items, changes,
                                                                            cuts):
    role, items = role_items
    blob = corrupt(encode_items(items), changes)
    feed_checked(p.MessageStream(role, max_control=4096, max_data=4096), split(blob, cuts))


@pytest.mark.parametrize("role", ["server", "client"])
def test_stream_keeps_raising_after_a_frame_error(role):
    stream = p.MessageStream(role)
    with pytest.raises(p.BadFrame) as first:
        stream.feed(struct.pack(">IB", 0, 1))
    for then in (p.encode(p.Ping(id=1)), p.encode(p.Pong(id=1)), b""):
        with pytest.raises(p.BadFrame) as again:
            stream.feed(then)
        assert again.value is first.value
    with pytest.raises(p.BadFrame):
        stream.feed_eof()


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


@given(st.lists(requests, max_size=2), bad_requests,
       st.lists(requests | data_payloads.map(Data), max_size=2))
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


def test_the_first_fatal_error_in_the_stream_wins_however_the_bytes_are_split():

    bad_json = p.encode_control(b"not json")
    bad_header = (1 << 30).to_bytes(4, "big") + b"\x01"
    stream = bad_json + bad_header
    for cut in range(len(stream) + 1):
        decoder = p.MessageStream("server")
        with pytest.raises(p.BadMessage):
            decoder.feed(stream[:cut])
            decoder.feed(stream[cut:])
