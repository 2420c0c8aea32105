"""What closing a connection costs the plain transport (issue 17), counted: the
selector calls of a session that answers its last request and closes, as
``quit`` does, on a real loopback connection."""

from __future__ import annotations

import selectors
import socket
from typing import Any

import pytest

from ftpd.timers import TimerHeap
from ftpd.transport import IOContext, PlainTransport


class CountingSelector(selectors.DefaultSelector):          # type: ignore[misc,valid-type]
    """The reactor's selector, recording register / modify / unregister."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def register(self, fileobj: Any, events: int, data: Any = None) -> Any:
        self.calls.append("register")
        return super().register(fileobj, events, data)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> Any:
        self.calls.append("modify")
        return super().modify(fileobj, events, data)

    def unregister(self, fileobj: Any) -> Any:
        self.calls.append("unregister")
        return super().unregister(fileobj)


class Quitting:
    """Answers whatever arrives with ``reply`` and closes, from inside data_received."""

    def __init__(self, transport: PlainTransport, reply: bytes) -> None:
        self.transport, self.reply, self.lost = transport, reply, False
        self.gone_at_close = False

    def data_received(self, data: memoryview) -> None:
        self.transport.write(self.reply)
        self.transport.close()
        self.gone_at_close = self.lost

    def eof_received(self) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True

    def wants_bulk_reads(self) -> bool:
        return False

    def moves_bulk(self) -> bool:
        return False


@pytest.fixture
def pair() -> Any:
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    ours, _ = listener.accept()
    listener.close()
    ours.setblocking(False)
    sel = CountingSelector()
    yield IOContext(sel, TimerHeap(), 65536, 1 << 20, 1 << 18, use_sendfile=True), ours, peer
    peer.close()
    sel.close()


def _started(io: IOContext, sock: socket.socket, reply: bytes
             ) -> tuple[PlainTransport, Quitting]:
    """A started transport on ``sock`` whose protocol answers a read with ``reply``."""
    transport = PlainTransport(io, sock, ("127.0.0.1", 1))
    protocol = Quitting(transport, reply)
    transport.set_protocol(protocol)
    transport.start()
    return transport, protocol


def _serve_one_read(io: IOContext, transport: PlainTransport) -> None:
    for key, mask in io.selector.select(10):
        key.data.on_event(mask)


def test_a_reply_then_close_inside_data_received_leaves_in_one_send_without_asking_to_write(
        pair):
    io, ours, peer = pair
    transport, protocol = _started(io, ours, b"bye")
    peer.sendall(b"quit")
    _serve_one_read(io, transport)
    peer.settimeout(10)
    assert peer.recv(16) == b"bye" and peer.recv(16) == b""     # the reply, then the end
    assert protocol.lost and transport.is_closing()
    assert io.selector.calls == ["register", "unregister"]      # no EVENT_WRITE asked for


def test_a_close_outside_data_received_with_output_queued_still_waits_to_write(pair):
    io, ours, peer = pair
    transport, protocol = _started(io, ours, b"")
    size = 8 << 20                                   # more than the socket takes at once
    transport.write(b"x" * size)
    transport.close()
    assert not protocol.lost and io.selector.get_key(ours).events == selectors.EVENT_WRITE
    peer.setblocking(False)
    got = 0
    for _ in range(100_000):                         # bounded: drain, let it send more
        if protocol.lost:
            break
        try:
            while piece := peer.recv(1 << 20):
                got += len(piece)
        except BlockingIOError:
            pass
        _serve_one_read(io, transport)
    peer.settimeout(10)
    while piece := peer.recv(1 << 20):
        got += len(piece)
    assert protocol.lost and got == size


def test_a_reply_below_the_high_water_mark_is_queued_without_a_water_check(pair,
                                                                          monkeypatch):
    """Replies written inside data_received wait for the flush after it: below the
    mark there is nothing to decide (issue 17)."""
    io, ours, peer = pair
    transport, protocol = _started(io, ours, b"bye")
    checks: list[bool] = []
    check = PlainTransport._check_water

    def counted(self: PlainTransport, resume: bool = True) -> None:
        checks.append(resume)
        check(self, resume)
    monkeypatch.setattr(PlainTransport, "_check_water", counted)
    peer.sendall(b"quit")
    _serve_one_read(io, transport)
    peer.settimeout(10)
    assert peer.recv(16) == b"bye" and protocol.lost
    assert False not in checks, checks            # no check from inside write


def test_a_close_inside_data_received_sends_the_replies_and_ends_the_connection_at_once(
        pair):
    """A quit's reply leaves with the close and the connection is gone when ``close``
    returns: the session then needs no watchdog for a drain (issue 17)."""
    io, ours, peer = pair
    transport, protocol = _started(io, ours, b"bye")
    peer.sendall(b"quit")
    _serve_one_read(io, transport)
    assert protocol.gone_at_close
    peer.settimeout(10)
    assert peer.recv(16) == b"bye" and peer.recv(16) == b""
