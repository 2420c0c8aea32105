"""The client's TLS stream (client/tls_stream.py): records gathered, ends and errors.

A server in a thread speaks TLS through its own memory BIOs, so a test can send
exactly the records it wants, tamper with them, or end without close_notify.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable

import pytest
import trustme

from client.tls_stream import TLSStream

Action = Callable[[ssl.SSLObject, ssl.MemoryBIO, socket.socket], None]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_ctx(ca):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


class CountingSocket(socket.socket):
    """Counts ``sendall`` calls: the segments the stream hands the kernel."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sendalls = 0

    def sendall(self, data, flags: int = 0) -> None:
        self.sendalls += 1
        super().sendall(data, flags)


class Server:
    """One TLS connection served in a thread; ``action`` runs after the handshake."""

    def __init__(self, ctx: ssl.SSLContext, action: Action) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.ctx, self.action = ctx, action
        self.acted = threading.Event()
        self.received = bytearray()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sock, _ = self.listener.accept()
        sock.settimeout(10)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = self.ctx.wrap_bio(inc, out, server_side=True)
        try:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if out.pending:
                        sock.sendall(out.read())
                    inc.write(sock.recv(65536))
            if out.pending:
                sock.sendall(out.read())
            self.action(obj, out, sock)
            self.acted.set()
            self.done.wait(10)
            while True:                        # what the client sent, decrypted
                try:
                    self.received += obj.read(1 << 20)
                except ssl.SSLWantReadError:
                    sock.settimeout(0.5)
                    try:
                        data = sock.recv(1 << 20)
                    except OSError:
                        break
                    if not data:
                        break
                    inc.write(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            sock.close()
            self.listener.close()

    def connect(self, client_ctx: ssl.SSLContext, raw_class=socket.socket) -> TLSStream:
        plain = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        raw = raw_class(fileno=plain.detach())
        raw.settimeout(10)
        stream = TLSStream(raw, client_ctx, "localhost")
        while True:
            try:
                stream.do_handshake()
                stream.flush()      # the Finished waits for the first send or read
                return stream
            except ssl.SSLWantReadError:
                stream.feed(raw.recv(65536))


def send_records(*payloads: bytes) -> Action:
    def action(obj: ssl.SSLObject, out: ssl.MemoryBIO, sock: socket.socket) -> None:
        for payload in payloads:
            obj.write(payload)
        sock.sendall(out.read())
    return action


def test_records_that_arrived_together_come_out_of_one_recv_into(server_ctx, client_ctx):
    # SSLSocket.recv_into would give one 16 KiB record per call.
    server = Server(server_ctx, send_records(b"a" * 65536))
    stream = server.connect(client_ctx)
    assert server.acted.wait(10)
    view = memoryview(bytearray(1 << 20))
    got = stream.recv_into(view)      # all four records were on the socket already
    assert got == 65536
    assert bytes(view[:got]) == b"a" * 65536
    server.done.set()
    stream.close()


def test_recv_into_never_writes_past_nbytes(server_ctx, client_ctx):
    server = Server(server_ctx, send_records(b"b" * 40000))
    stream = server.connect(client_ctx)
    assert server.acted.wait(10)
    buf = bytearray(b"." * 100)
    assert stream.recv_into(memoryview(buf), 30) == 30
    assert buf == b"b" * 30 + b"." * 70
    rest = bytearray(40000)
    got = 0
    while got < 39970:
        got += stream.recv_into(memoryview(rest)[got:])
    assert bytes(rest[:got]) == b"b" * 39970
    server.done.set()
    stream.close()


def test_close_notify_is_the_end_of_the_stream(server_ctx, client_ctx):
    def action(obj, out, sock):
        obj.write(b"last words")
        try:
            obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        sock.sendall(out.read())
    server = Server(server_ctx, action)
    stream = server.connect(client_ctx)
    view = memoryview(bytearray(1024))
    assert stream.recv_into(view) == len(b"last words")
    assert stream.recv_into(view) == 0
    server.done.set()
    stream.close()


def test_a_tcp_close_without_close_notify_is_the_end_of_the_stream(server_ctx, client_ctx):
    def action(obj, out, sock):
        obj.write(b"bye")
        sock.sendall(out.read())
        sock.shutdown(socket.SHUT_WR)
    server = Server(server_ctx, action)
    stream = server.connect(client_ctx)
    view = memoryview(bytearray(1024))
    assert stream.recv_into(view) == 3
    assert stream.recv_into(view) == 0
    server.done.set()
    stream.close()


def test_a_tampered_record_is_an_ssl_error_not_data(server_ctx, client_ctx):
    def action(obj, out, sock):
        obj.write(b"x" * 1000)
        record = bytearray(out.read())
        record[-1] ^= 0x01                     # the last byte of the AEAD tag
        sock.sendall(bytes(record))
    server = Server(server_ctx, action)
    stream = server.connect(client_ctx)
    with pytest.raises(ssl.SSLError):
        stream.recv_into(memoryview(bytearray(4096)))
    server.done.set()
    stream.close()


def test_sendall_hands_the_kernel_one_piece_for_many_records(server_ctx, client_ctx):
    server = Server(server_ctx, lambda obj, out, sock: None)
    stream = server.connect(client_ctx, raw_class=CountingSocket)
    server.done.set()                          # it reads from now on
    before = stream.raw.sendalls
    stream.sendall(b"z" * (256 * 1024))        # 16 records
    assert stream.raw.sendalls == before + 1
    stream.raw.shutdown(socket.SHUT_WR)
    server.thread.join(10)
    assert server.received == b"z" * (256 * 1024)
    stream.close()


def test_control_sized_reads_never_make_the_one_mib_buffer(server_ctx, client_ctx):
    server = Server(server_ctx, send_records(b"c" * 300))
    stream = server.connect(client_ctx)
    assert stream.recv_into(memoryview(bytearray(16 * 1024))) == 300
    assert stream._big is None and len(stream._small) == 64 * 1024
    server.done.set()
    stream.close()
