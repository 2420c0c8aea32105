"""ftpd/tls_transport.py: TLSTransport on a real socketpair and a real selector.

The client end is a TLSLayer driven by hand on the other socket, in the same
thread, so every step is deterministic: ``run`` turns the reactor and the
client until a condition holds (bounded by a count, never by a sleep).
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import ssl

import pytest
import trustme

from ftpd import certs
from ftpd.timers import TimerHeap
from ftpd.tls import NOT_TLS_REPLY, NotTLS, TLSError, TLSLayer
from ftpd.tls_transport import TLSTransport
from ftpd.transport import IOContext


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    issued = ca.issue_cert("localhost")
    issued.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    issued.private_key_pem.write_to_path(folder / "key.pem")
    return certs.server_context(certs.CertPair(folder / "cert.pem", folder / "key.pem"))


@pytest.fixture(scope="module")
def client_ctx(ca):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


class Recorder:
    """A TransportProtocol that writes down what happened."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.chunks: list[int] = []       # the size of each data_received call
        self.events: list[str] = []
        self.lost: list[BaseException | None] = []
        self.on_data = None

    def data_received(self, data: memoryview) -> None:
        self.data += data
        self.chunks.append(len(data))
        if self.on_data:
            self.on_data(data)

    def eof_received(self) -> None:
        self.events.append("eof")

    def wants_bulk_reads(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


class CountingSocket(socket.socket):
    """A socket that counts the sends made on it: the segments handed to the kernel."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sends = 0

    def send(self, data, flags: int = 0) -> int:
        self.sends += 1
        return super().send(data, flags)


class Harness:
    def __init__(self, server_ctx, client_ctx, high_water: int = 256 * 1024,
                 low_water: int = 64 * 1024) -> None:
        self.selector = selectors.DefaultSelector()
        self.timers = TimerHeap()
        self.io = IOContext(self.selector, self.timers, 256 * 1024, high_water, low_water,
                            use_sendfile=False)
        srv_sock, self.cli_sock = socket.socketpair()
        self.srv_sock = CountingSocket(fileno=srv_sock.detach())
        self.srv_sock.setblocking(False)
        self.cli_sock.setblocking(False)
        self.proto = Recorder()
        self.transport = TLSTransport(self.io, self.srv_sock, ("test", 1), server_ctx)
        self.transport.set_protocol(self.proto)
        self.transport.start()
        self.client = TLSLayer(client_ctx, server_side=False, server_hostname="localhost")
        self.received = bytearray()
        self.cli_eof = False
        self.raw = bytearray()        # every ciphertext byte the client received

    def turn(self) -> None:
        for key, mask in self.selector.select(0.05):
            key.data.on_event(mask)
        self.timers.run_due()
        self.client_step()

    def client_step(self) -> None:
        if not self.client.handshake_done:
            try:
                self.client.do_handshake()
            except TLSError:
                pass
        out = self.client.data_to_send()
        if out:
            self.cli_sock.sendall(out)
        while not self.cli_eof:
            try:
                chunk = self.cli_sock.recv(1 << 16)
            except BlockingIOError:
                break
            except ConnectionResetError:
                chunk = b""
            self.raw += chunk
            if not chunk:
                self.cli_eof = True
                self.client.feed_eof()
            else:
                self.client.feed(chunk)
        if self.client.handshake_done or self.client.do_handshake():
            buf = bytearray(1 << 16)
            while n := self.client.read_into(buf):
                self.received += buf[:n]
        out = self.client.data_to_send()
        if out:
            self.cli_sock.sendall(out)

    def run(self, done, turns: int = 400) -> None:
        for _ in range(turns):
            if done():
                return
            self.turn()
        assert done(), "condition not reached"

    def close(self) -> None:
        self.cli_sock.close()
        self.srv_sock.close()
        self.selector.close()


@pytest.fixture
def h(server_ctx, client_ctx):
    harness = Harness(server_ctx, client_ctx)
    yield harness
    harness.close()


def test_greeting_written_before_the_handshake_arrives_after_it(h):
    h.transport.write(b"greeting")
    h.run(lambda: h.received == b"greeting")
    assert h.transport.handshake_done


def test_the_greeting_leaves_with_the_session_tickets_in_one_send(h):
    # TLS 1.3: the server's first flight is one send; the tickets OpenSSL writes when
    # the client's Finished arrives and the greeting queued before it go in a second.
    # A third send would wake a reconnecting client once more for every connection.
    h.transport.write(b"greeting")
    h.run(lambda: h.received == b"greeting")
    assert h.srv_sock.sends == 2


def test_client_plaintext_reaches_data_received(h):
    h.run(lambda: h.transport.handshake_done and h.client.handshake_done)
    h.client.write(b"hello daemon")
    h.run(lambda: bytes(h.proto.data) == b"hello daemon")


def test_records_that_arrived_together_reach_the_session_in_one_call(h):
    """Eight full records in one read are one data_received, not eight: a bulk upload
    costs the session (its per-call checks and its pwrite) per buffer, not per 16 KiB."""
    h.run(lambda: h.transport.handshake_done and h.client.handshake_done)
    payload = os.urandom(8 * 16 * 1024)
    h.client.write(payload)                     # eight records
    h.client_step()
    h.run(lambda: len(h.proto.data) == len(payload))
    assert bytes(h.proto.data) == payload
    assert len(h.proto.chunks) <= 2, h.proto.chunks    # one, or two if recv split them


def test_bytes_on_the_wire_are_not_the_plaintext(h):
    h.transport.write(b"secret-file-bytes" * 10)
    h.run(lambda: len(h.received) == 170)
    assert b"secret-file-bytes" not in h.raw


def test_send_file_sends_the_range_encrypted(h, tmp_path):
    body = os.urandom(700_000)
    path = tmp_path / "f.bin"
    path.write_bytes(body)
    h.run(lambda: h.transport.handshake_done and h.client.handshake_done)
    fd = os.open(path, os.O_RDONLY)
    try:
        offset, end = 1000, len(body) - 1000
        for _ in range(1000):
            if offset == end:
                break
            offset += h.transport.send_file(fd, offset, end - offset)
            h.turn()
    finally:
        os.close(fd)
    h.run(lambda: len(h.received) >= len(body) - 2000)
    assert bytes(h.received) == body[1000:-1000]
    assert body[5000:5100] not in h.raw


def test_send_file_refuses_before_the_handshake(h, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert h.transport.send_file(fd, 0, 10) == 0
    finally:
        os.close(fd)


def test_a_full_socket_pauses_and_a_drained_one_resumes_the_writer(server_ctx, client_ctx):
    h = Harness(server_ctx, client_ctx, high_water=64 * 1024, low_water=16 * 1024)
    try:
        h.run(lambda: h.transport.handshake_done and h.client.handshake_done)
        for _ in range(64):                   # client not reading: the kernel buffers fill
            h.transport.write(b"y" * 65536)
            if "pause" in h.proto.events:
                break
            for key, mask in h.selector.select(0):
                key.data.on_event(mask)
            h.timers.run_due()
        assert "pause" in h.proto.events
        h.run(lambda: "resume" in h.proto.events)
    finally:
        h.close()


def test_write_interest_only_while_output_is_pending(h):
    h.run(lambda: h.transport.handshake_done and h.client.handshake_done)
    h.run(lambda: h.transport.get_write_buffer_size() == 0)
    key = h.selector.get_key(h.srv_sock)
    assert key.events == selectors.EVENT_READ


def test_pause_reading_holds_plaintext_until_resume(h):
    h.run(lambda: h.transport.handshake_done and h.client.handshake_done)
    h.transport.pause_reading()
    assert not h.transport.is_reading()
    h.client.write(b"held back")
    for _ in range(5):
        h.turn()
    assert h.proto.data == b""
    h.transport.resume_reading()
    h.run(lambda: bytes(h.proto.data) == b"held back")


def test_pausing_inside_data_received_keeps_the_rest_for_resume(h):
    h.run(lambda: h.transport.handshake_done and h.client.handshake_done)
    h.proto.on_data = lambda data: h.transport.pause_reading()
    h.client.write(b"a" * 10)
    h.client.write(b"b" * 10)
    h.client_step()
    h.run(lambda: len(h.proto.data) > 0)
    h.proto.on_data = None
    h.transport.resume_reading()
    h.run(lambda: bytes(h.proto.data) == b"a" * 10 + b"b" * 10)


def test_close_sends_close_notify_and_loses_the_connection_once(h):
    h.transport.write(b"bye")
    h.run(lambda: h.received == b"bye")
    h.transport.close()
    assert h.transport.is_closing()
    h.run(lambda: h.client.peer_closed)
    assert h.client.clean_close
    assert h.proto.lost == [None]


def test_abort_loses_the_connection_once(h):
    h.transport.abort()
    h.transport.abort()
    h.transport.close()
    assert h.proto.lost == [None]
    assert h.srv_sock.fileno() == -1


def test_client_eof_without_close_notify_is_eof_received(h):
    h.run(lambda: h.transport.handshake_done and h.client.handshake_done)
    h.cli_sock.shutdown(socket.SHUT_WR)
    h.run(lambda: "eof" in h.proto.events)
    assert h.proto.lost == []


def test_client_close_notify_is_eof_received(h):
    h.run(lambda: h.transport.handshake_done and h.client.handshake_done)
    h.client.shutdown()
    h.run(lambda: "eof" in h.proto.events)


def test_plain_text_client_gets_one_error_frame_and_no_traceback(h, caplog):
    caplog.set_level(logging.INFO, logger="ftpd.tls")
    h.cli_sock.sendall(b"\x00\x00\x00\x30\x01" + b"{}" * 24)
    for _ in range(50):
        if h.proto.lost:
            break
        for key, mask in h.selector.select(0.05):
            key.data.on_event(mask)
    assert len(h.proto.lost) == 1 and isinstance(h.proto.lost[0], NotTLS)
    h.cli_sock.setblocking(True)
    h.cli_sock.settimeout(5)
    got = bytearray()
    while chunk := h.cli_sock.recv(4096):
        got += chunk
    assert bytes(got) == NOT_TLS_REPLY
    lines = [r for r in caplog.records if r.name == "ftpd.tls"]
    assert len(lines) == 1 and "not TLS" in lines[0].getMessage()
    assert lines[0].exc_info is None


def test_garbage_after_a_handshake_byte_closes_with_a_tls_error(h, caplog):
    caplog.set_level(logging.INFO, logger="ftpd.tls")
    h.cli_sock.sendall(b"\x16\x03\x01\x00\x05hello" + b"\xff" * 64)
    for _ in range(50):
        if h.proto.lost:
            break
        for key, mask in h.selector.select(0.05):
            key.data.on_event(mask)
    assert len(h.proto.lost) == 1 and isinstance(h.proto.lost[0], TLSError)
    assert all(r.exc_info is None for r in caplog.records)


def test_peer_reset_mid_handshake_loses_the_connection_once(h):
    h.client_step()                             # ClientHello out
    h.cli_sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
    h.cli_sock.close()
    for _ in range(50):
        if h.proto.lost:
            break
        for key, mask in h.selector.select(0.05):
            key.data.on_event(mask)
        h.timers.run_due()          # a failed send is reported from the loop
    assert len(h.proto.lost) == 1
    h.cli_sock = socket.socket()                # so close() in the fixture works


def test_a_handshake_dripped_byte_by_byte_still_completes(h):
    h.client.do_handshake()
    hello = h.client.data_to_send()
    for i in range(len(hello)):
        h.cli_sock.sendall(hello[i:i + 1])
        for key, mask in h.selector.select(0.05):
            key.data.on_event(mask)
        if i < len(hello) - 1:
            assert not h.transport.handshake_done
    h.run(lambda: h.transport.handshake_done and h.client.handshake_done)
    assert h.proto.lost == []


def test_resume_reading_delivers_on_the_next_turn_not_inside_the_call(h):
    h.run(lambda: h.transport.handshake_done and h.client.handshake_done)
    h.proto.on_data = lambda data: h.transport.pause_reading()
    h.client.write(b"first")
    h.client_step()
    h.client.write(b"second")
    h.client_step()
    h.run(lambda: len(h.proto.data) > 0)
    h.proto.on_data = None
    before = bytes(h.proto.data)
    h.transport.resume_reading()
    assert bytes(h.proto.data) == before          # nothing re-entered the session
    h.run(lambda: bytes(h.proto.data) == b"firstsecond")


def test_a_send_failure_inside_write_is_a_lost_connection_not_an_exception(h):
    h.run(lambda: h.transport.handshake_done and h.client.handshake_done)
    h.cli_sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
    h.cli_sock.close()
    for _ in range(50):
        if h.proto.lost:
            break
        h.transport.write(b"z" * 65536)
        h.timers.run_due()          # a failed send is reported from the loop
    assert len(h.proto.lost) == 1
    h.cli_sock = socket.socket()
