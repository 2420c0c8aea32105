"""The two halves fit: the real client (client/trust.py, blocking ssl) against
TLSTransport on a real selectors reactor in a thread, with the fake daemon's
request handling (test_client_fakeserver.py) as the session on top.

Until the daemon itself is wired to TLSTransport, this is the end-to-end proof
that a client login, upload and download work over it, that nothing readable
crosses the wire (a socket-level tee), and that mismatched ends get one line.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from client import Client, trust
from client.errors import ConnectionLost
from ftpd import certs
from ftpd.timers import TimerHeap
from ftpd.tls_transport import TLSTransport
from ftpd.transport import IOContext
from protocol import messages as m
from tests.test_client_fakeserver import FakeServer, Hangup, _Conn

PASSWORD = "correct-horse-battery"


class _Session:
    """The fake daemon's request handling, as a TransportProtocol."""

    def __init__(self, fake: FakeServer, transport: TLSTransport) -> None:
        self.transport = transport
        self.conn = _Conn(fake, self)           # type: ignore[arg-type]
        self.lost = False
        self.conn.send(m.Greeting(protocol=1, server="fake", max_control=65536,
                                  max_data=fake.max_data, register=False))

    def sendall(self, data: bytes) -> None:     # what _Conn calls on its "socket"
        self.transport.write(data)

    def data_received(self, data: memoryview) -> None:
        try:
            for event in self.conn.stream.feed(bytes(data)):
                self.conn.handle(event)
        except Hangup:
            self.transport.close()

    def eof_received(self) -> None:
        self.transport.close()

    def wants_bulk_reads(self) -> bool:
        return False

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True


class Reactor:
    """A listening socket and TLSTransports on one selector, in one thread."""

    def __init__(self, pair: certs.CertPair) -> None:
        self.creds = certs.ServerCredentials(pair)
        self.fake = FakeServer()               # its own listener is not used
        self.fake.users["alice"] = PASSWORD
        self.selector = selectors.DefaultSelector()
        self.timers = TimerHeap()
        self.io = IOContext(self.selector, self.timers, 256 * 1024, 256 * 1024, 64 * 1024,
                            use_sendfile=False)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.sessions: list[_Session] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for key, mask in self.selector.select(0.05):
                if key.data is None:
                    try:
                        sock, peer = self.listener.accept()
                    except BlockingIOError:
                        continue
                    sock.setblocking(False)
                    transport = TLSTransport(self.io, sock, peer, self.creds.context)
                    session = _Session(self.fake, transport)
                    transport.set_protocol(session)
                    transport.start()
                    self.sessions.append(session)
                else:
                    key.data.on_event(mask)
            self.timers.run_due()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()
        self.fake.close()


class Tee:
    """A TCP proxy that keeps a copy of every byte in both directions."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.captured = bytearray()
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                with self.lock:
                    self.captured += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def reactor(tmp_path, monkeypatch) -> Iterator[Reactor]:
    monkeypatch.setenv("FTPC_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    trust.forget_sessions()
    r = Reactor(certs.ensure_self_signed(tmp_path / "daemon"))
    yield r
    r.close()
    trust.forget_sessions()


def tls_client(port: int, reactor: Reactor) -> Client:
    return Client("127.0.0.1", port, timeout=10, tls=True, trust=reactor.creds.fingerprint)


def test_login_upload_and_download_over_tls_transport(reactor, tmp_path):
    body = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "up.bin"
    src.write_bytes(body)
    with tls_client(reactor.port, reactor) as c:
        c.login("alice", PASSWORD)
        c.put(str(src), "/up.bin")
        assert reactor.fake.files["/up.bin"] == body
        c.get("/up.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == body


def test_the_wire_carries_neither_the_password_nor_the_file(reactor, tmp_path):
    body = b"plain file bytes that must not be seen " * 2000
    src = tmp_path / "up.txt"
    src.write_bytes(body)
    tee = Tee(reactor.port)
    try:
        with tls_client(tee.port, reactor) as c:
            c.login("alice", PASSWORD)
            c.put(str(src), "/up.txt")
        assert reactor.fake.files["/up.txt"] == body
        with tee.lock:
            wire = bytes(tee.captured)
    finally:
        tee.close()
    assert len(wire) > len(body)
    assert PASSWORD.encode() not in wire
    assert b"plain file bytes" not in wire
    assert b"alice" not in wire


def test_a_plain_text_client_is_told_to_drop_plaintext(reactor):
    c = Client("127.0.0.1", reactor.port, timeout=10, tls=False)
    with pytest.raises(ConnectionLost) as info:
        c.connect()
    assert info.value.code == "TLS_REQUIRED"
    assert reactor.fake.requests == []


def test_a_reconnect_resumes_the_session_on_the_transport(reactor):
    c = tls_client(reactor.port, reactor)
    c.connect()
    c.login("alice", PASSWORD)
    c.reconnect()
    c.close()
    assert [s.transport.layer.session_reused for s in reactor.sessions] == [False, True]


def s_client(port: int, *flags: str) -> tuple[int, str]:
    proc = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *flags],
                          input=b"", capture_output=True, timeout=30)
    return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="no openssl command")


@needs_openssl
def test_openssl_s_client_negotiates_tls13(reactor):
    status, out = s_client(reactor.port, "-tls1_3")
    assert status == 0
    assert "New, TLSv1.3" in out


@needs_openssl
@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_1", "-tls1"])
def test_openssl_s_client_older_versions_are_refused_with_an_alert(reactor, flag):
    status, out = s_client(reactor.port, flag, "-cipher", "DEFAULT@SECLEVEL=0")
    assert status != 0
    assert "New, (NONE)" in out
    assert "alert protocol version" in out or "no protocols available" in out
