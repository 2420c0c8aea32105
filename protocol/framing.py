"""Length-prefixed frames: the cure for TCP's "sticky packets".

A frame is a 5-byte header -- payload length as an unsigned 32-bit big-endian
integer, then one frame-type byte -- followed by exactly that many payload
bytes.  CONTROL frames carry one JSON object; DATA frames carry raw file bytes.

``FrameDecoder`` is incremental and never trusts the peer: a declared length is
checked against the limit the moment the header is complete, before a single
payload byte is accepted.  Control payloads are small and are collected in a
bytearray; DATA payloads are never buffered: they are handed out as memoryview
slices of the very buffer that was fed in, so upload bytes travel from the
socket's receive buffer to the file with no copy in between.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .errors import BadFrame, FrameTooLarge, ProtocolError

HEADER = struct.Struct(">IB")
HEADER_SIZE = HEADER.size  # 5

#: Defaults a server announces in its greeting; both sides enforce their own.
DEFAULT_MAX_CONTROL = 64 * 1024
DEFAULT_MAX_DATA = 1024 * 1024
#: Hard ceiling for configuration: a u32 length could say 4 GiB.
ABSOLUTE_MAX_FRAME = 64 * 1024 * 1024


class FrameType(IntEnum):
    CONTROL = 1
    DATA = 2


_CONTROL = int(FrameType.CONTROL)      # a plain int: compared without the enum


@dataclass(frozen=True, slots=True)
class ControlFrame:
    """A complete control frame's payload (UTF-8 JSON, not yet parsed)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class DataChunk:
    """A piece of a DATA frame's payload.

    ``data`` may be a view into the buffer that was passed to ``feed``: use it
    (write it, hash it, copy it) before that buffer is reused.  ``frame_end`` is
    true on the last piece of a frame; frame boundaries carry no meaning for
    file bytes, but tests use it.
    """

    data: memoryview
    frame_end: bool


Frame = ControlFrame | DataChunk


def encode_control(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), FrameType.CONTROL) + payload


def data_header(length: int) -> bytes:
    """The header of a DATA frame whose payload the caller sends itself
    (from a file with ``sendfile``, for instance)."""
    if not 0 < length <= 0xFFFFFFFF:
        raise ValueError(f"DATA frame length {length} out of range")
    return HEADER.pack(length, FrameType.DATA)


def encode_data(payload: bytes | memoryview) -> bytes:
    return data_header(len(payload)) + bytes(payload)


class FrameDecoder:
    """Bytes in, frames out.  Feed it whatever ``recv`` returned.

    After the first error the decoder is dead: every further call raises the
    same error, because the stream can no longer be resynchronised.
    """

    def __init__(self, max_control: int = DEFAULT_MAX_CONTROL,
                 max_data: int = DEFAULT_MAX_DATA) -> None:
        for name, value in (("max_control", max_control), ("max_data", max_data)):
            if not 0 < value <= ABSOLUTE_MAX_FRAME:
                raise ValueError(f"{name}={value} out of range")
        self.max_control = max_control
        self.max_data = max_data
        self._buf = bytearray()        # header bytes, then a control payload
        self._control_len = -1         # >= 0 while collecting a control payload
        self._data_left = 0            # payload bytes of the current DATA frame still to come
        self._error: Exception | None = None

    @property
    def buffered(self) -> int:
        """Bytes held inside the decoder; never more than ``max_control``."""
        return len(self._buf)

    @property
    def data_left(self) -> int:
        """Payload bytes the DATA frame under way still owes (0 between frames): a
        receiver may wait for that many without waiting on a peer that owes nothing."""
        return self._data_left

    @property
    def in_frame(self) -> bool:
        return bool(self._buf) or self._control_len >= 0 or self._data_left > 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        frames, error = self.feed_until_error(data)
        if error is not None:
            raise error
        return frames

    def feed_until_error(self, data: bytes | bytearray | memoryview
                         ) -> tuple[list[Frame], ProtocolError | None]:
        """Like ``feed``, but hands back the frames that came before a framing
        error together with the error, so a caller can report errors in the
        order they stand in the stream, whatever way TCP split it."""
        if self._error is not None:
            return [], self._error
        left = self._data_left
        if left and type(data) is memoryview and data.ndim == 1 and data.itemsize == 1 \
                and data.c_contiguous and 0 < len(data) <= left:
            # A download's common case: all of it is payload of the DATA frame under
            # way -- one chunk, without the loop (a few thousand of these per GiB).
            self._data_left = left = left - len(data)
            return [DataChunk(data, not left)], None
        out: list[Frame] = []
        try:
            self._feed(memoryview(data).cast("B"), out)
        except (BadFrame, FrameTooLarge) as exc:
            self._error = exc
        return out, self._error

    def feed_eof(self) -> None:
        """The peer closed its side.  Raises ``BadFrame`` if a frame was cut."""
        if self._error is not None:
            raise self._error
        if self.in_frame:
            self._error = BadFrame("connection closed inside a frame")
            raise self._error

    def _feed(self, view: memoryview, out: list[Frame]) -> None:
        pos, end = 0, len(view)
        buf = self._buf
        while pos < end:
            if self._data_left:
                take = min(self._data_left, end - pos)
                self._data_left -= take
                out.append(DataChunk(view[pos:pos + take], self._data_left == 0))
                pos += take
            elif self._control_len >= 0:
                take = min(self._control_len - len(buf), end - pos)
                if not buf and take == self._control_len:
                    out.append(ControlFrame(bytes(view[pos:pos + take])))   # whole payload at hand
                else:
                    buf += view[pos:pos + take]
                    if len(buf) < self._control_len:
                        pos += take
                        continue
                    out.append(ControlFrame(bytes(buf)))
                    buf.clear()
                pos += take
                self._control_len = -1
            else:
                take = min(HEADER_SIZE - len(buf), end - pos)
                if not buf and take == HEADER_SIZE:
                    length, ftype = HEADER.unpack_from(view, pos)
                    start = pos + HEADER_SIZE
                    if ftype == _CONTROL and 0 < length <= self.max_control and \
                            start + length <= end:
                        # A whole control frame at hand (most requests and replies):
                        # cut out at once, without a second turn of the loop (issue 17).
                        pos = start + length
                        out.append(ControlFrame(bytes(view[start:pos])))
                        continue
                else:
                    buf += view[pos:pos + take]
                    if len(buf) < HEADER_SIZE:
                        pos += take
                        continue
                    length, ftype = HEADER.unpack(buf)
                    buf.clear()
                pos += take
                self._start_frame(length, ftype)

    def _start_frame(self, length: int, ftype: int) -> None:
        if ftype == FrameType.CONTROL:
            limit = self.max_control
        elif ftype == FrameType.DATA:
            limit = self.max_data
        else:
            raise BadFrame(f"unknown frame type {ftype}")
        if length == 0:
            raise BadFrame("empty frame")
        if length > limit:
            raise FrameTooLarge(
                f"{FrameType(ftype).name} frame of {length} bytes exceeds the limit of {limit}",
                limit=limit, length=length)
        if ftype == FrameType.CONTROL:
            self._control_len = length
        else:
            self._data_left = length
