"""The plain-text download's hot path (issue 17: download >= 1.0x raw sendfile).

Each test pins one thing the profile in docs/BENCHMARKS.md ("Download against
raw sendfile") found per frame, per wake-up or per received chunk: a DATA
frame's header leaves in one segment with its body; the client hands each
chunk of an unverified download straight to the sink.  Counts of sends,
flags and callers are asserted, never times.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

import ftpd.transport as transport_module
import protocol.messages as m
from client import Client
from client.transfer import Received, receive_download
from ftpd.timers import TimerHeap
from ftpd.transfers import DownloadProducer
from ftpd.transport import MSG_MORE, IOContext, PlainTransport
from protocol import HEADER_SIZE, FrameDecoder, data_header
from tests.test_client_fakeserver import serve_fake

needs_msg_more = pytest.mark.skipif(not MSG_MORE, reason="no MSG_MORE on this platform")


class RecordingSocket(socket.socket):
    """A socket that records every ``send``'s length and flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sends: list[tuple[int, int]] = []

    def send(self, data: Any, flags: int = 0) -> int:
        self.sends.append((len(data), flags))
        return super().send(data, flags)


class _Protocol:
    """The least a transport's protocol must answer."""

    paused = 0

    def data_received(self, data: memoryview) -> None:
        pass

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def wants_bulk_reads(self) -> bool:
        return False

    def moves_bulk(self) -> bool:
        return True


@pytest.fixture
def tcp() -> Any:
    """A transport on one end of a loopback TCP connection, the peer's socket, the io."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    ours = RecordingSocket(fileno=accepted.detach())
    ours.setblocking(False)
    sel = selectors.DefaultSelector()
    io = IOContext(sel, TimerHeap(), 65536, 1 << 20, 1 << 18, use_sendfile=True)
    transport = PlainTransport(io, ours, ("test", 1))
    transport.set_protocol(_Protocol())
    transport.start()
    yield transport, ours, peer
    transport.abort()
    peer.close()
    sel.close()


def _file(tmp_path: Path, size: int) -> int:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * (size // 256) + b"z" * (size % 256))
    return os.open(path, os.O_RDONLY)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(10)
    out = bytearray()
    while len(out) < n:
        piece = sock.recv(n - len(out))
        assert piece, "the transport closed early"
        out += piece
    return bytes(out)


@needs_msg_more
def test_a_data_frame_header_is_sent_with_msg_more_so_it_shares_the_bodys_segment(
        tcp: Any, tmp_path: Path) -> None:
    transport, ours, peer = tcp
    fd = _file(tmp_path, 3000)
    try:
        producer = DownloadProducer(m.Get(id=1, path="f", verify=False), "/f", fd, 3000, 0,
                                    1000)
        transport.on_event(0)                       # a wake-up: a fresh send budget
        assert producer.produce(transport) == "ok"
    finally:
        os.close(fd)
    # Three frames: each header a send of its own with MSG_MORE; the bodies by sendfile.
    assert ours.sends == [(HEADER_SIZE, MSG_MORE)] * 3
    got = _recv_exactly(peer, 3 * (HEADER_SIZE + 1000))
    assert got[:HEADER_SIZE] == data_header(1000)


@needs_msg_more
def test_a_frame_header_that_meets_a_spent_send_budget_still_goes_with_msg_more(
        tcp: Any, tmp_path: Path, monkeypatch: Any) -> None:
    transport, ours, peer = tcp
    monkeypatch.setattr(transport_module, "SEND_BUDGET", 1000)
    fd = _file(tmp_path, 3000)
    try:
        producer = DownloadProducer(m.Get(id=1, path="f", verify=False), "/f", fd, 3000, 0,
                                    1000)
        transport.on_event(0)                       # a wake-up: a budget of 1000 bytes
        assert producer.produce(transport) is None  # the first frame spent it
        # The second frame's header went to the kernel (held back for its body),
        # not into the transport's queue to leave alone at the next wake-up.
        assert ours.sends == [(HEADER_SIZE, MSG_MORE)] * 2
        assert transport.get_write_buffer_size() == 0
    finally:
        os.close(fd)


@needs_msg_more
def test_the_msg_more_of_a_header_does_not_hold_back_the_write_after_it(tcp: Any) -> None:
    transport, ours, peer = tcp
    transport.write_more(b"hdr")
    transport.write(b"a reply")
    assert ours.sends == [(3, MSG_MORE), (7, 0)]
    assert _recv_exactly(peer, 10) == b"hdra reply"


# ------------------------------------------------------------------ the client


@pytest.fixture
def small() -> Any:
    """A fake server with 8 KiB DATA frames: a small file is many chunks."""
    yield from serve_fake(max_data=8192)


def _logged_in(server: Any) -> Client:
    c = Client(server.host, server.port, timeout=5)
    c.connect()
    c.login("alice", "secret")
    return c


def test_an_unverified_stream_hands_each_chunk_to_the_sink_from_the_receive_loop(small):
    data = os.urandom(50_000)
    small.put_file("/f", data)
    callers: set[str] = set()
    got = bytearray()

    def sink(view: memoryview) -> None:
        callers.add(sys._getframe(1).f_code.co_name)
        got.extend(view)

    with _logged_in(small) as c:
        c.get_stream("/f", sink, verify=False)
    assert bytes(got) == data
    assert callers == {"receive_download"}          # no wrapper in between, per chunk


class _Full(Exception):
    pass


def test_a_stream_whose_sink_fails_reports_the_bytes_handed_on_before(small):
    data = os.urandom(50_000)
    small.put_file("/f", data)
    handed = bytearray()

    def sink(view: memoryview) -> None:
        if len(handed) >= 20_000:
            raise _Full
        handed.extend(view)

    received = Received()
    with _logged_in(small) as c:
        conn = c._require()
        rid = conn.next_id()
        ready = conn.call(m.Get(id=rid, path="/f", offset=0, verify=False), m.GetReady)
        with pytest.raises(_Full):
            receive_download(conn, rid, ready, sink, None, None, received=received)
    assert received.bytes == len(handed) and bytes(handed) == data[:len(handed)]


def test_one_wake_up_of_a_lone_download_sends_16_mib_before_it_yields(tmp_path: Path) -> None:
    """Into /dev/null, which takes everything: only the budget stops the sends."""
    sink = open(os.devnull, "wb")              # noqa: SIM115 -- closed below
    io = IOContext(selectors.SelectSelector(), TimerHeap(), 65536, 1 << 20, 1 << 18,
                   use_sendfile=True)
    transport = PlainTransport(io, sink, ("test", 1))      # type: ignore[arg-type]
    transport.set_protocol(_Protocol())
    path = tmp_path / "big"
    with open(path, "wb") as f:
        f.truncate(32 << 20)                     # sparse: 32 MiB of zeros, no disk
    fd = os.open(path, os.O_RDONLY)
    try:
        transport.on_event(0)                    # a wake-up: a fresh send budget
        sent = calls = 0
        while calls < 64:
            n = transport.send_file(fd, sent, 1 << 20)
            if n == 0:
                break
            sent += n
            calls += 1
    finally:
        os.close(fd)
        sink.close()
    assert sent == 16 << 20


def test_a_piece_inside_a_data_frame_comes_out_as_the_very_view_that_was_fed() -> None:
    decoder = FrameDecoder(max_data=1 << 20)
    buffer = memoryview(bytearray(data_header(1000) + b"x" * 400))
    [first] = decoder.feed(buffer)
    piece = memoryview(bytearray(b"y" * 500))
    [chunk] = decoder.feed(piece)
    assert chunk.data is piece and not chunk.frame_end      # one chunk, no new view
    [last] = decoder.feed(memoryview(bytearray(b"z" * 100)))
    assert last.frame_end and bytes(first.data) == b"x" * 400


def test_the_decoder_says_how_many_payload_bytes_the_current_data_frame_still_owes() -> None:
    decoder = FrameDecoder(max_data=1 << 20)
    assert decoder.data_left == 0
    decoder.feed(memoryview(bytearray(data_header(1000) + b"x" * 400)))
    assert decoder.data_left == 600
    decoder.feed(memoryview(bytearray(b"y" * 600)))
    assert decoder.data_left == 0
