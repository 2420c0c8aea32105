"""A deliberately thin blocking test peer that speaks frames, not the client library.

Daemon tests use it to say exactly which bytes go out -- including wrong ones --
and to see every reply frame, so they test the daemon and not the client.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import socket
import ssl
from typing import Any

import protocol.messages as m
from protocol import MessageStream, encode, encode_data
from protocol.framing import DataChunk

#: Ports of live test daemons that speak TLS (tests/daemon.py keeps it): a Wire to
#: one of them wraps its socket in TLS unless told ``tls=``.  The daemon is
#: authenticated by the client tests, not here: this peer tests the frames.
TLS_PORTS: set[int] = set()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One client context for every Wire: a session resumes only through the context
    that made it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def maybe_tls(sock: socket.socket, host: str, port: int, tls: bool | None = None,
              session: ssl.SSLSession | None = None) -> socket.socket:
    """``sock`` (connected to ``port``) wrapped in TLS when that daemon speaks it;
    ``session`` (from an earlier connection's ``sock.session``) asks to resume it."""
    if tls if tls is not None else port in TLS_PORTS:
        return _tls_context().wrap_socket(sock, server_hostname=host, session=session)
    return sock


class Closed(Exception):
    """The daemon closed the connection."""


class Wire:
    def __init__(self, host: str, port: int, timeout: float = 10.0, *, hello: bool = True,
                 max_data: int | None = None, rcvbuf: int | None = None,
                 tls: bool | None = None, session: ssl.SSLSession | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:        # before connect, so the TCP window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock = maybe_tls(self.sock, host, port, tls, session)
        self.stream = MessageStream("client", max_data=64 << 20)
        self.events: list[Any] = []
        self.ids = itertools.count(1)
        self.greeting = self.recv()
        if hello and isinstance(self.greeting, m.Greeting):
            reply = self.call(m.Hello(id=self.next_id(), protocol=1, client="test",
                                      max_data=max_data))
            assert isinstance(reply, m.HelloOk), reply

    def next_id(self) -> int:
        return next(self.ids)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ raw traffic

    def send(self, message: m.Message) -> None:
        self.sock.sendall(encode(message))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_data(self, data: bytes, frame: int = 1 << 20) -> None:
        for start in range(0, len(data), frame):
            self.sock.sendall(encode_data(data[start:start + frame]))

    def recv(self) -> Any:
        """The next reply, or ``bytes`` for a DATA chunk.  Raises Closed at EOF."""
        while not self.events:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                self.stream.feed_eof()
                raise Closed("connection closed by the daemon")
            for event in self.stream.feed(chunk):
                self.events.append(bytes(event.data) if isinstance(event, DataChunk) else event)
        return self.events.pop(0)

    def recv_reply(self) -> Any:
        """The next control reply, skipping DATA."""
        while True:
            event = self.recv()
            if not isinstance(event, bytes):
                return event

    def call(self, message: m.Message) -> Any:
        self.send(message)
        return self.recv_reply()

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True if the daemon ends the connection, after any frames still pending, with
        an orderly EOF (at a frame boundary) or a reset; False if it is still open after
        ``timeout`` seconds.

        Anything else -- a reply this side cannot decode, an EOF inside a frame --
        is not "closed by the peer": it propagates, so the test fails with its cause.
        """
        self.sock.settimeout(timeout)
        try:
            while True:
                self.recv()
        except Closed:
            return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    # ------------------------------------------------------------ conveniences

    def login(self, user: str, password: str, want_token: bool = False) -> Any:
        return self.call(m.Login(id=self.next_id(), user=user, password=password,
                                 want_token=want_token))

    def put(self, path: str, data: bytes, *, sha: bool = True, overwrite: bool = False,
            stop_at: int | None = None) -> Any:
        """Upload ``data`` (from the daemon's offset); returns put.done or the error.

        With ``stop_at`` it sends bytes only up to that offset and returns put.ready.
        """
        digest = hashlib.sha256(data).hexdigest() if sha else None
        rid = self.next_id()
        ready = self.call(m.Put(id=rid, path=path, size=len(data), sha256=digest,
                                overwrite=overwrite))
        if not isinstance(ready, m.PutReady):
            return ready
        end = len(data) if stop_at is None else stop_at
        if end > ready.offset:
            self.send_data(data[ready.offset:end])
        if stop_at is not None:
            return ready
        return self.recv_reply()

    def get(self, path: str, offset: int = 0, verify: bool = True) -> tuple[Any, bytes, Any]:
        """(get.ready or error, the bytes, get.done or error)."""
        ready = self.call(m.Get(id=self.next_id(), path=path, offset=offset, verify=verify))
        if not isinstance(ready, m.GetReady):
            return ready, b"", None
        parts = []
        while True:
            event = self.recv()
            if isinstance(event, bytes):
                parts.append(event)
            else:
                return ready, b"".join(parts), event

    def logged_in(self, user: str, password: str) -> Wire:
        reply = self.login(user, password)
        assert isinstance(reply, m.LoginOk), reply
        return self
