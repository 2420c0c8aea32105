"""FrameDecoder: length-prefixed frames, limits, errors, EOF, totality.

Where the input space is small (header boundaries, cut points of a short
stream) the tests are exhaustive loops; hypothesis is kept for the open-ended
properties, so the file stays fast under the ci profile.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol as p
from protocol.framing import ABSOLUTE_MAX_FRAME

CONTROL, DATA = int(p.FrameType.CONTROL), int(p.FrameType.DATA)
UNKNOWN_TYPES = [t for t in range(256) if t not in (CONTROL, DATA)]
frame_types = st.sampled_from([CONTROL, DATA])

#: A short stream with every kind of neighbour: control/control, control/data,
#: data/data, data/control, one-byte payloads.
SAMPLE_FRAMES = [(CONTROL, b'{"a":1}'), (DATA, b"xyz"), (DATA, b"\x00"), (CONTROL, b"{}"),
                 (CONTROL, b"c"), (DATA, b"0123456789")]


def header(length: int, ftype: int) -> bytes:
    return struct.pack(">IB", length, ftype)


def decoder_with_limit(ftype: int, limit: int) -> p.FrameDecoder:
    if ftype == CONTROL:
        return p.FrameDecoder(max_control=limit)
    return p.FrameDecoder(max_data=limit)


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


def decode_chunks(chunks: list[bytes]) -> list[tuple[int, bytes]]:
    """Frames out of the chunks, DATA pieces re-joined per frame (copied at once: views)."""
    decoder, pending, out = p.FrameDecoder(), bytearray(), []
    for chunk in chunks:
        for frame in decoder.feed(chunk):
            if isinstance(frame, p.ControlFrame):
                assert not pending, "control frame inside a DATA frame"
                out.append((CONTROL, frame.payload))
            else:
                assert len(frame.data) > 0
                pending += bytes(frame.data)
                if frame.frame_end:
                    out.append((DATA, bytes(pending)))
                    pending.clear()
    assert not decoder.in_frame
    decoder.feed_eof()
    return out


#: Cut points, taken modulo the stream's length + 1.
cut_points = st.lists(st.integers(0, 2**20), max_size=20)


def split(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted(c % (len(blob) + 1) for c in cuts)
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


def test_frames_split_at_any_one_or_two_points_decode_identically():
    blob = encode_frames(SAMPLE_FRAMES)
    for a, b in itertools.combinations_with_replacement(range(len(blob) + 1), 2):
        assert decode_chunks(split(blob, [a, b])) == SAMPLE_FRAMES, (a, b)


def test_frames_fed_byte_by_byte_decode_identically():
    blob = encode_frames(SAMPLE_FRAMES)
    assert decode_chunks([blob[i:i + 1] for i in range(len(blob))]) == SAMPLE_FRAMES


def test_data_chunks_are_views_of_the_fed_buffer_and_control_payloads_are_copies():
    buf = bytearray(p.encode_data(b"abc") + p.encode_control(b"{}"))
    chunk, ctrl = p.FrameDecoder().feed(buf)
    buf[5:8] = b"XYZ"
    buf[13:] = b"!!"
    assert bytes(chunk.data) == b"XYZ" and chunk.frame_end
    assert ctrl.payload == b"{}"


# ------------------------------------------------------------------ limits

LIMITS = [1, 4, 5, 6, 4096, p.DEFAULT_MAX_CONTROL, p.DEFAULT_MAX_DATA, ABSOLUTE_MAX_FRAME]


@pytest.mark.parametrize("ftype", [CONTROL, DATA], ids=["control", "data"])
def test_length_over_the_limit_is_refused_right_after_the_header(ftype):
    for limit in LIMITS:
        for length in (limit + 1, 2 * limit + 7, 2**31, 2**32 - 1):
            decoder = decoder_with_limit(ftype, limit)
            head = header(length, ftype)
            for i in range(4):                       # nothing is decided before the type byte
                assert decoder.feed(head[i:i + 1]) == []
            with pytest.raises(p.FrameTooLarge) as info:
                decoder.feed(head[4:])               # exactly the 5 header bytes, no body
            assert info.value.code == "FRAME_TOO_LARGE"
            assert info.value.fatal
            assert info.value.details == {"limit": limit, "length": length}


@pytest.mark.parametrize("ftype", [CONTROL, DATA], ids=["control", "data"])
def test_length_equal_to_the_limit_is_accepted(ftype):
    for limit in LIMITS:
        decoder = decoder_with_limit(ftype, limit)
        assert decoder.feed(header(limit, ftype)) == []
        assert decoder.in_frame


def test_each_limit_applies_to_its_own_frame_type():
    decoder = p.FrameDecoder(max_control=10, max_data=100)
    decoder.feed(header(100, DATA) + b"d" * 100)
    with pytest.raises(p.FrameTooLarge):
        decoder.feed(header(11, CONTROL))


@pytest.mark.parametrize("ftype", [CONTROL, DATA], ids=["control", "data"])
def test_empty_frame_is_bad_frame(ftype):
    with pytest.raises(p.BadFrame) as info:
        p.FrameDecoder().feed(header(0, ftype) + p.encode_control(b"{}"))
    assert info.value.code == "BAD_FRAME"
    assert info.value.fatal


def test_unknown_frame_type_is_bad_frame_whatever_the_length():
    for ftype in UNKNOWN_TYPES:
        for length in (0, 1, 2**32 - 1):
            with pytest.raises(p.BadFrame):
                p.FrameDecoder().feed(header(length, ftype))


BAD_HEADERS = {"empty": header(0, CONTROL), "too large": header(2**32 - 1, DATA),
               "unknown type": header(1, 3)}
AFTERWARDS = {"valid frames": lambda d: d.feed(encode_frames(SAMPLE_FRAMES)),
              "nothing": lambda d: d.feed(b""), "eof": lambda d: d.feed_eof()}


@pytest.mark.parametrize("bad", list(BAD_HEADERS.values()), ids=list(BAD_HEADERS))
@pytest.mark.parametrize("then", list(AFTERWARDS.values()), ids=list(AFTERWARDS))
def test_decoder_keeps_raising_after_an_error(bad, then):
    decoder = p.FrameDecoder()
    with pytest.raises(p.ProtocolError) as first:
        decoder.feed(p.encode_control(b"{}") + bad)
    for _ in range(2):
        with pytest.raises(p.ProtocolError) as again:
            then(decoder)
        assert again.value is first.value


# ------------------------------------------------------------------ EOF


def test_eof_inside_a_frame_is_bad_frame():
    blob = encode_frames(SAMPLE_FRAMES)
    for cut in sorted(set(range(len(blob))) - boundaries(SAMPLE_FRAMES)):
        decoder = p.FrameDecoder()
        decoder.feed(blob[:cut])
        assert decoder.in_frame, cut
        with pytest.raises(p.BadFrame):
            decoder.feed_eof()


def test_eof_at_a_frame_boundary_is_fine():
    blob = encode_frames(SAMPLE_FRAMES)
    for cut in sorted(boundaries(SAMPLE_FRAMES)):
        decoder = p.FrameDecoder()
        decoder.feed(blob[:cut])
        assert not decoder.in_frame, cut
        decoder.feed_eof()


# ------------------------------------------------------------------ totality


@given(st.binary(max_size=400), st.integers(1, 64), st.integers(1, 64), cut_points)
def test_decoder_returns_frames_or_raises_protocol_error_on_any_bytes(blob, mc, md, cuts):
    decoder = p.FrameDecoder(max_control=mc, max_data=md)
    try:
        for chunk in split(blob, cuts):
            for frame in decoder.feed(chunk):
                assert isinstance(frame, p.ControlFrame | p.DataChunk)
        decoder.feed_eof()
    except p.ProtocolError:
        pass


@given(st.lists(st.tuples(frame_types, st.binary(min_size=1, max_size=80)), max_size=6),
       st.binary(max_size=100), st.integers(1, 80), st.integers(1, 80), cut_points)
def test_buffered_never_exceeds_the_header_or_the_control_limit(frames, junk, mc, md, cuts):
    # Frames that often fit the limits, so control payloads really get buffered.
    blob = encode_frames(frames) + junk
    decoder = p.FrameDecoder(max_control=mc, max_data=md)
    for chunk in split(blob, cuts):
        try:
            decoder.feed(chunk)
        except p.ProtocolError:
            break
        finally:
            assert decoder.buffered <= max(p.HEADER_SIZE, mc)


def test_whole_control_frames_in_one_read_are_cut_out_without_starting_a_frame_each(
        monkeypatch):
    """The common read, one or more complete control frames, takes one turn of the
    decoder's loop per frame (issue 17); a split one still goes the long way."""
    from protocol import framing
    started: list[tuple[int, int]] = []
    start = framing.FrameDecoder._start_frame

    def counted(self, length, ftype):
        started.append((length, ftype))
        return start(self, length, ftype)
    monkeypatch.setattr(framing.FrameDecoder, "_start_frame", counted)
    decoder = framing.FrameDecoder()
    wire = framing.encode_control(b'{"cmd":"hello"}') + framing.encode_control(b'{"a":1}')
    frames = decoder.feed(wire)
    assert [f.payload for f in frames] == [b'{"cmd":"hello"}', b'{"a":1}']
    assert started == []
    assert [f.payload for f in decoder.feed(wire[:9])] == []
    assert [f.payload for f in decoder.feed(wire[9:])] == [b'{"cmd":"hello"}', b'{"a":1}']
    assert len(started) == 1                       # the frame split across two reads
