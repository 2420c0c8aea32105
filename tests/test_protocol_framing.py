"""FrameDecoder: length-prefixed frames, limits, errors, EOF, totality."""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import protocol as p
from protocol.framing import ABSOLUTE_MAX_FRAME

CONTROL, DATA = int(p.FrameType.CONTROL), int(p.FrameType.DATA)
frame_types = st.sampled_from([CONTROL, DATA])
small_limits = st.integers(min_value=1, max_value=64)


def header(length: int, ftype: int) -> bytes:
    return struct.pack(">IB", length, ftype)


def decoder_with_limit(ftype: int, limit: int) -> p.FrameDecoder:
    if ftype == CONTROL:
        return p.FrameDecoder(max_control=limit)
    return p.FrameDecoder(max_data=limit)


#: (type, payload) pairs of valid frames; control payloads need not be JSON here.
raw_frames = st.lists(st.tuples(frame_types, st.binary(min_size=1, max_size=64)), max_size=8)


def encode_frames(frames: list[tuple[int, bytes]]) -> bytes:
    return b"".join(p.encode_control(body) if t == CONTROL else p.encode_data(body)
                    for t, body in frames)


def boundaries(frames: list[tuple[int, bytes]]) -> set[int]:
    """Offsets in the encoded stream where one frame ends and the next begins."""
    out, pos = {0}, 0
    for _, body in frames:
        pos += p.HEADER_SIZE + len(body)
        out.add(pos)
    return out


def collect(decoded: list[p.ControlFrame | p.DataChunk],
            pending: bytearray, out: list[tuple[int, bytes]]) -> None:
    """Re-join DATA chunks per frame (copying them at once: they are views)."""
    for frame in decoded:
        if isinstance(frame, p.ControlFrame):
            assert not pending, "control frame inside a DATA frame"
            out.append((CONTROL, frame.payload))
        else:
            assert len(frame.data) > 0
            pending += bytes(frame.data)
            if frame.frame_end:
                out.append((DATA, bytes(pending)))
                pending.clear()


def split(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted(min(c, len(blob)) for c in cuts)
    edges = [0, *points, len(blob)]
    return [blob[a:b] for a, b in zip(edges, edges[1:], strict=False)]


# ------------------------------------------------------------------ layout


def test_header_is_u32_big_endian_length_then_type_byte():
    assert p.HEADER_SIZE == 5
    assert p.encode_control(b"{}") == b"\x00\x00\x00\x02\x01{}"
    assert p.encode_data(b"abc") == b"\x00\x00\x00\x03\x02abc"
    assert p.data_header(0x01020304) == b"\x01\x02\x03\x04\x02"


def test_default_limits_are_64_kib_control_and_1_mib_data():
    assert p.DEFAULT_MAX_CONTROL == 64 * 1024
    assert p.DEFAULT_MAX_DATA == 1024 * 1024
    decoder = p.FrameDecoder()
    assert (decoder.max_control, decoder.max_data) == (64 * 1024, 1024 * 1024)


@pytest.mark.parametrize("length", [0, -1, 2**32])
def test_data_header_refuses_lengths_a_frame_cannot_have(length):
    with pytest.raises(ValueError):
        p.data_header(length)


@pytest.mark.parametrize("limits", [(0, 1), (1, 0), (ABSOLUTE_MAX_FRAME + 1, 1),
                                    (1, ABSOLUTE_MAX_FRAME + 1)])
def test_decoder_refuses_limits_outside_1_to_the_absolute_maximum(limits):
    with pytest.raises(ValueError):
        p.FrameDecoder(*limits)


@given(raw_frames, st.data())
def test_frames_split_at_arbitrary_points_decode_identically(frames, data):
    blob = encode_frames(frames)
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20))
    decoder, pending, out = p.FrameDecoder(), bytearray(), []
    for chunk in split(blob, cuts):
        collect(decoder.feed(chunk), pending, out)
    assert out == frames
    assert not decoder.in_frame


# ------------------------------------------------------------------ limits


@given(frame_types, st.integers(1, 2**20), st.data())
def test_length_over_the_limit_is_refused_right_after_the_header(ftype, limit, data):
    length = data.draw(st.integers(limit + 1, 2**32 - 1))
    decoder = decoder_with_limit(ftype, limit)
    head = header(length, ftype)
    assert decoder.feed(head[:4]) == []          # not yet: the type byte decides the limit
    with pytest.raises(p.FrameTooLarge) as info:
        decoder.feed(head[4:])                   # exactly the 5 header bytes, no body
    assert info.value.code == "FRAME_TOO_LARGE"
    assert info.value.fatal


@given(frame_types, st.integers(1, 2**20))
def test_length_equal_to_the_limit_is_accepted(ftype, limit):
    decoder = decoder_with_limit(ftype, limit)
    assert decoder.feed(header(limit, ftype)) == []
    assert decoder.in_frame


@given(frame_types, st.binary(max_size=10))
def test_empty_frame_is_bad_frame(ftype, trailing):
    with pytest.raises(p.BadFrame) as info:
        p.FrameDecoder().feed(header(0, ftype) + trailing)
    assert info.value.code == "BAD_FRAME"


@given(st.integers(0, 255).filter(lambda t: t not in (CONTROL, DATA)), st.integers(0, 2**32 - 1))
def test_unknown_frame_type_is_bad_frame(ftype, length):
    with pytest.raises(p.BadFrame):
        p.FrameDecoder().feed(header(length, ftype))


bad_headers = st.one_of(
    frame_types.map(lambda t: header(0, t)),
    frame_types.map(lambda t: header(2**32 - 1, t)),
    st.sampled_from([0, 3, 255]).map(lambda t: header(1, t)),
)


@given(bad_headers, raw_frames, st.sampled_from(["feed", "empty", "eof"]))
def test_decoder_keeps_raising_after_an_error(bad, then, how):
    decoder = p.FrameDecoder()
    with pytest.raises(p.ProtocolError) as first:
        decoder.feed(bad)
    with pytest.raises(p.ProtocolError) as again:
        if how == "feed":
            decoder.feed(encode_frames(then))
        elif how == "empty":
            decoder.feed(b"")
        else:
            decoder.feed_eof()
    assert again.value is first.value


# ------------------------------------------------------------------ EOF


@given(raw_frames.filter(bool), st.data())
def test_eof_inside_a_frame_is_bad_frame(frames, data):
    blob = encode_frames(frames)
    inside = sorted(set(range(1, len(blob))) - boundaries(frames))
    assume(inside)
    cut = data.draw(st.sampled_from(inside))
    decoder = p.FrameDecoder()
    decoder.feed(blob[:cut])
    assert decoder.in_frame
    with pytest.raises(p.BadFrame):
        decoder.feed_eof()


@given(raw_frames, st.data())
def test_eof_at_a_frame_boundary_is_fine(frames, data):
    blob = encode_frames(frames)
    cut = data.draw(st.sampled_from(sorted(boundaries(frames))))
    decoder = p.FrameDecoder()
    decoder.feed(blob[:cut])
    assert not decoder.in_frame
    decoder.feed_eof()


# ------------------------------------------------------------------ totality


@given(st.binary(max_size=1000), small_limits, small_limits, st.data())
def test_decoder_returns_frames_or_raises_protocol_error_on_any_bytes(blob, mc, md, data):
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=10))
    decoder = p.FrameDecoder(max_control=mc, max_data=md)
    try:
        for chunk in split(blob, cuts):
            for frame in decoder.feed(chunk):
                assert isinstance(frame, p.ControlFrame | p.DataChunk)
        decoder.feed_eof()
    except p.ProtocolError:
        pass


@given(st.binary(max_size=200), st.integers(1, 100), small_limits, st.data())
def test_buffered_never_exceeds_the_header_or_the_control_limit(blob, mc, md, data):
    # Small frames with plausible headers, so control payloads really get buffered.
    frame = frame_types.flatmap(lambda t: st.tuples(
        st.just(t), st.binary(min_size=1, max_size=mc if t == CONTROL else md)))
    frames = data.draw(st.lists(frame, max_size=8))
    blob = encode_frames(frames) + blob
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=30))
    decoder = p.FrameDecoder(max_control=mc, max_data=md)
    for chunk in split(blob, cuts):
        try:
            decoder.feed(chunk)
        except p.ProtocolError:
            break
        finally:
            assert decoder.buffered <= max(p.HEADER_SIZE, mc)
