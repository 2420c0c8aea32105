"""One TCP connection to the server: socket I/O around the sans-IO protocol.

Everything that can go wrong on the socket -- refused, reset, timed out,
closed, or bytes that break the protocol -- comes out of here as
``ConnectionLost``, and the socket is closed at that point.  That one rule is
what lets the layers above retry a transfer without guessing what an
``OSError`` meant (a local file's ``OSError`` is never wrapped).

Receive buffers: control replies are read into a small (16 KiB) buffer made
with the connection; the 1 MiB buffers DATA needs are made on the first
download (``receive_data``) and kept for the next one.  Received DATA payloads
are ``memoryview`` slices of the receive buffer: a chunk returned by
``next_event`` is valid only until the next call to ``next_event`` -- unless a
download asked for a ring of several buffers and a guard that says when one may
be refilled (see ``receive_data``).
"""

from __future__ import annotations

import functools
import itertools
import os
import select
import socket
from collections import deque
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from protocol import (
    DEFAULT_MAX_DATA,
    PROTOCOL_VERSION,
    DataChunk,
    MessageStream,
    ProtocolError,
    data_header,
    encode,
)
from protocol.codec import Event
from protocol.digests import SHA256, supported
from protocol.messages import ErrorReply, Greeting, Hello, HelloOk, Reply, Request

from . import trust as trusting
from .errors import ConnectionLost, FtpError, error_for
from .lowat import ReceiveThreshold
from .tls_stream import TLSStream

#: Receive buffer for control replies, made with each connection: small, since most
#: replies are a few hundred bytes (a big listing page just takes several reads).
CONTROL_BUFFER = 16 * 1024
#: Each receive buffer of a download (made on the first one, then kept).
DATA_BUFFER = 1024 * 1024
#: The largest DATA frame we ask the server to send (hello's max_data).
CLIENT_MAX_DATA = DEFAULT_MAX_DATA
#: Never send DATA frames bigger than this, whatever the greeting allows.
SEND_FRAME_CAP = 64 * 1024 * 1024
CLIENT_NAME = "ftpc/0.1.0"
#: The digests this client can verify with, preferred first: BLAKE3 (where the
#: package is installed) and SHA-256 (issue 17; protocol.digests).
OFFERED = supported()
#: What hello offers unless asked otherwise: SHA-256 alone, so that every digest a
#: client reports (``PutResult.sha256``, ``ftpc --json``) stays the ``sha256sum``
#: of the file.  ``Client(digests=FAST)`` / ``ftpc --digest blake3`` offer BLAKE3 too.
DEFAULT_DIGESTS: tuple[str, ...] = (SHA256,)
#: BLAKE3 first where installed, SHA-256 as the fallback the server may choose.
FAST: tuple[str, ...] = OFFERED
#: Under TLS, file bytes go through Python: read into this one buffer, send, repeat.
TLS_FILE_CHUNK = 256 * 1024
_MSG_MORE = getattr(socket, "MSG_MORE", 0)

R = TypeVar("R", bound=Reply)


class Connection:
    """A connected, greeted socket with typed send and receive.

    ``hello`` is queued at connect and goes out with the first request; its
    reply is read (and checked) before any other.
    """

    def __init__(self, sock: socket.socket, greeting: Greeting | None = None,
                 digests: tuple[str, ...] = DEFAULT_DIGESTS) -> None:
        self.sock = sock
        self.greeting = greeting
        self.offered = digests                    # hello's digests (protocol.digests)
        #: DATA frame size limits: what the server sends us, what we may send it.
        self.recv_max_data = CLIENT_MAX_DATA
        self.send_max_data = CLIENT_MAX_DATA
        self._stream = MessageStream("client")
        self._control = memoryview(bytearray(CONTROL_BUFFER))
        self._data: list[memoryview] = []         # DATA buffers, made on demand
        self._views = [self._control]             # what recv fills, in turn
        self._turn = 0
        self._guard: Callable[[], None] | None = None
        self._lowat = ReceiveThreshold()          # plain-text downloads' SO_RCVLOWAT
        self._events: deque[Event] = deque()
        self._ids = itertools.count(1)
        self._outbox = b""                        # requests to send with the next one
        self._hello_id: int | None = None         # hello sent, its reply not read yet
        self._greeting_due = False                # the greeting not read yet
        self._session_key = ""                    # host:port, for TLS session tickets
        self.hello: HelloOk | None = None         # the server's hello reply, once read
        self.closed = False
        #: TLS: the server was authenticated before anything was sent to it
        self.encrypted = isinstance(sock, TLSStream)
        self._file_buffer: memoryview | None = None   # TLS uploads, made on the first one

    # ------------------------------------------------------------ setup

    @classmethod
    def open(cls, host: str, port: int, timeout: float | None,
             tls: trusting.TrustOptions | None = None,
             digests: tuple[str, ...] = DEFAULT_DIGESTS, *, wait: bool = True) -> Connection:
        """Connect, authenticate the server (with ``tls``; None: plain text) and queue
        ``hello`` (which offers ``digests``).  With ``wait`` (always in plain text)
        the greeting is read now; without, it is read with the first reply, so
        that ``hello`` and the first request (a login) leave in the segment that
        ends the TLS handshake: one round trip fewer."""

        def dial() -> socket.socket:
            try:
                sock = _connect(host, port, timeout)
            except TimeoutError:
                raise ConnectionLost("TIMEOUT", f"connecting to {host}:{port} timed out")
            except OSError as exc:
                raise ConnectionLost("CONNECTION_FAILED",
                                     f"cannot connect to {host}:{port}: {exc.strerror or exc}")
            # Requests are small and answered one by one: do not let Nagle hold them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

        sock = dial() if tls is None else trusting.open_tls(dial, host, port, tls, timeout)
        conn = cls(sock, digests=digests)
        conn._session_key = trusting.host_key(host, port)
        try:
            conn._start(wait)
        except BaseException:
            conn.close()
            raise
        return conn

    def _start(self, wait: bool) -> None:
        self._hello_id = self.next_id()
        hello = _hello_frame(self._hello_id, self.offered)
        self._greeting_due = True
        if self.encrypted:
            # hello is pipelined: it goes out in one segment with the first request
            # (usually login), and its reply is read before that request's.  One
            # round trip and one send per connection fewer.
            self._outbox = hello
            if wait:
                self._read_greeting()
            return
        # Plain text: hello goes out before the greeting is read, so that a TLS daemon
        # (which waits for a ClientHello) sees a non-TLS first byte and answers with its
        # one plain-text refusal frame instead of waiting; and the greeting is read
        # before any request follows, so that a plain-text client that reached a TLS
        # port learns it (TLS_REQUIRED) before its login -- a password, a token -- goes
        # out.  (``wait`` does not apply.)
        self.send(hello)
        self._read_greeting()

    def _read_greeting(self) -> None:
        """The server's first message: a greeting we can talk to, or why not."""
        self._greeting_due = False
        while not self._events:         # (what is queued in the outbox stays there)
            self._fill()
        first = self._events.popleft()
        if isinstance(first, ErrorReply):
            if (first.details or {}).get("tls") == "required":
                raise self.fail(ConnectionLost(
                    "TLS_REQUIRED", "the server requires TLS: connect without --plaintext"))
            raise self.fail(error_for(first.code, first.message, first.details))
        if not isinstance(first, Greeting):
            raise self.violation(f"expected a greeting, got {_describe(first)}")
        if first.protocol != PROTOCOL_VERSION:
            raise self.fail(ConnectionLost(
                "VERSION_MISMATCH",
                f"server speaks protocol {first.protocol}, this client {PROTOCOL_VERSION}"))
        self.greeting = first
        self.send_max_data = max(1, min(first.max_data, SEND_FRAME_CAP))
        if self.encrypted:
            # The session tickets came before the greeting: keep one for the next connect.
            trusting.remember_session(self.sock, self._session_key)

    def _finish_hello(self) -> None:
        hello_id, self._hello_id = self._hello_id, None
        assert hello_id is not None
        hello = self.hello = self.reply(hello_id, HelloOk)
        if hello.max_data > CLIENT_MAX_DATA:
            raise self.violation(f"server wants to send {hello.max_data}-byte DATA frames, "
                                 f"more than the {CLIENT_MAX_DATA} asked for")
        # From now on a DATA frame bigger than agreed is a protocol violation.
        self.recv_max_data = hello.max_data
        self._stream.frames.max_data = hello.max_data

    def _settle(self) -> None:
        """Send what is queued, then read the greeting and the hello reply if they
        are still on their way: every reply after them is then the next event."""
        if self._outbox:
            self.send(b"")
        if self._greeting_due:
            self._read_greeting()
        if self._hello_id is not None:
            self._finish_hello()

    def supports(self, feature: str) -> bool:
        """Whether the server's hello reply announced ``feature`` (``"streams"``,
        ``"metadata"``); reads that reply first if it is still on its way."""
        self._settle()
        return bool(getattr(self.hello, feature, False))

    def digest(self) -> str:
        """The digest this session verifies with, as the hello reply chose it from the
        client's offer: ``"blake3"`` or ``"sha256"`` (an older server names none)."""
        self.supports("digest")
        chosen = self.hello.digest if self.hello is not None else SHA256
        if chosen not in self.offered and chosen != SHA256:
            raise self.violation(f"the server chose the digest {chosen!r}, "
                                 "which was not offered")
        return chosen

    # ------------------------------------------------------------ sending

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, data: bytes) -> None:
        self._check_open()
        if self._outbox:
            data, self._outbox = self._outbox + data, b""
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self._send_failed(exc)

    def send_message(self, message: Request) -> None:
        self.send(encode(message))

    def send_file_frame(self, fileobj: BinaryIO, offset: int, count: int) -> int:
        """One DATA frame of ``count`` bytes of ``fileobj`` from ``offset``.

        The header goes with ``send`` (MSG_MORE: coalesce with the payload) and
        the payload with ``sendfile``, so file bytes never pass through Python.
        Returns the payload bytes actually sent: fewer than ``count`` means the
        file shrank, the frame is cut short, and the connection is closed.
        """
        self._check_open()
        header, self._outbox = self._outbox + data_header(count), b""
        if self.encrypted:
            return self._send_file_frame_tls(fileobj, header, offset, count)
        try:
            self.sock.sendall(header, _MSG_MORE)
            sent = self.sock.sendfile(fileobj, offset, count)
        except OSError as exc:
            raise self._send_failed(exc)
        if sent != count:
            self.close()
        return sent

    def _send_file_frame_tls(self, fileobj: BinaryIO, header: bytes, offset: int,
                             count: int) -> int:
        """``send_file_frame`` under TLS: no sendfile (the kernel would send clear
        text); one reused buffer, the header sharing the first piece's records."""
        if self._file_buffer is None:
            self._file_buffer = memoryview(bytearray(TLS_FILE_CHUNK))
        buf, fd = self._file_buffer, fileobj.fileno()
        start, sent = len(header), 0
        try:
            if start > len(buf) // 2:        # a long pipeline of queued requests
                self.sock.sendall(header)
                start = 0
            buf[:start] = header[:start]
            while sent < count:
                n = os.preadv(fd, [buf[start:start + min(count - sent, len(buf) - start)]],
                              offset + sent)
                if n <= 0:
                    break
                self.sock.sendall(buf[:start + n])
                sent += n
                start = 0
        except OSError as exc:
            raise self._send_failed(exc)
        if sent != count:
            self.close()
        return sent

    def call(self, request: Request, expected: type[R]) -> R:
        """Send ``request`` and return its single reply of type ``expected``."""
        self.send_message(request)
        return self.reply(request.id, expected)

    # ------------------------------------------------------------ receiving

    def next_event(self) -> Event:
        """The next reply or DATA chunk.  Chunks die at the next call."""
        self._settle()
        while not self._events:
            self._fill()
        return self._events.popleft()

    def reply(self, request_id: int, expected: type[R]) -> R:
        """The next event, which must be ``expected`` (or an error) for ``request_id``."""
        event = self.next_event()
        self.raise_if_error(event, request_id)
        if not isinstance(event, expected) or getattr(event, "id", None) != request_id:
            raise self.violation(f"expected {expected.type} for request {request_id}, "
                                 f"got {_describe(event)}")
        return event

    def raise_if_error(self, event: Event, request_id: int) -> None:
        """Raise the mapped exception if ``event`` is the error reply to ``request_id``.

        An error with a null id is the server talking about the connection (a
        timeout, a shutdown): it counts as the answer to whatever was pending.
        """
        if not isinstance(event, ErrorReply):
            return
        if event.id is not None and event.id != request_id:
            raise self.violation(f"error reply for request {event.id} while waiting "
                                 f"for {request_id}")
        exc = error_for(event.code, event.message, event.details)
        if isinstance(exc, ConnectionLost):
            self.close()
        raise exc

    def receive_data(self, buffers: int = 1, guard: Callable[[], None] | None = None) -> None:
        """Receive into ``buffers`` DATA-sized buffers, in turn, until ``receive_control``.

        With more than one, a chunk stays valid until its buffer comes round
        again: ``guard()`` is called before every receive and must block until
        whoever still reads chunks from the buffer about to be refilled (the
        ``buffers``-th receive back) is done with them.
        """
        while len(self._data) < buffers:
            self._data.append(memoryview(bytearray(DATA_BUFFER)))
        self._views = self._data[:buffers]
        self._turn = 0
        self._guard = guard

    def receive_control(self) -> None:
        """Back to the small buffer (the DATA buffers are kept for the next download)."""
        self._views = [self._control]
        self._turn = 0
        self._guard = None
        if self._lowat.current != 1 and not self.closed:
            try:                              # (runs in a finally: never mask its error)
                self._lowat.reset(self.sock)
            except OSError:
                self.close()

    def pending(self) -> bool:
        """Whether the server has sent something we have not read yet (never blocks)."""
        if self._events:
            return True
        if self.closed:
            return False
        if self.encrypted and self.sock.pending():   # decrypted, not yet read
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True     # let the next read report the failure
        return bool(readable)

    def _fill(self) -> None:
        self._check_open()
        if self._guard is not None:
            self._guard()
        views = self._views
        view = views[self._turn]
        if len(views) > 1:
            self._turn = (self._turn + 1) % len(views)
        try:
            if view is self._control or self.encrypted:
                # (under TLS the socket's bytes are records, not the frame's payload)
                n = self.sock.recv_into(view)
            else:
                n = self._lowat.recv_into(self.sock, view, self._stream.frames.data_left)
        except TimeoutError:
            raise self.fail(ConnectionLost(
                "TIMEOUT", f"no answer from the server within {self.sock.gettimeout()} s"))
        except OSError as exc:
            raise self._lost(exc)
        try:
            if n == 0:
                # A half frame at EOF is a server that died (or was killed) mid-send,
                # not one that broke the protocol: report it as the lost connection it is.
                cut = False
                try:
                    self._stream.feed_eof()
                except ProtocolError:
                    cut = True
                raise self.fail(ConnectionLost(
                    "CONNECTION_LOST", "the server closed the connection"
                    + (" in the middle of a message" if cut else "")))
            self._events.extend(self._stream.feed(view[:n]))
        except ProtocolError as exc:
            raise self.fail(ConnectionLost(
                exc.code, f"protocol violation by the server: {exc.message}"))

    # ------------------------------------------------------------ failure

    def violation(self, message: str) -> ConnectionLost:
        """Close and return the exception for a server that broke the protocol."""
        return self.fail(ConnectionLost("BAD_MESSAGE",
                                        f"protocol violation by the server: {message}"))

    def fail(self, exc: FtpError) -> FtpError:
        self.close()
        return exc

    def _send_failed(self, exc: OSError) -> FtpError:
        """A send failed.  A server that hangs up usually said why first (quota,
        timeout, shutdown): read what is left so the user sees that, not EPIPE."""
        if not isinstance(exc, TimeoutError):
            try:
                self.sock.settimeout(1.0)
                while True:
                    for event in self._events:
                        if isinstance(event, ErrorReply):
                            return self.fail(error_for(event.code, event.message,
                                                       event.details))
                    self._events.clear()
                    n = self.sock.recv_into(self._control)
                    if n == 0:
                        break
                    self._events.extend(self._stream.feed(self._control[:n]))
            except (OSError, ProtocolError):
                pass
        return self._lost(exc)

    def _lost(self, exc: OSError) -> ConnectionLost:
        self.close()
        if isinstance(exc, TimeoutError):
            return ConnectionLost("TIMEOUT", "the server stopped accepting data")
        return ConnectionLost("CONNECTION_LOST",
                              f"connection to the server lost: {exc.strerror or exc}")

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionLost("CONNECTION_LOST", "not connected")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._events.clear()
            try:
                self.sock.close()
            except OSError:
                pass


@functools.lru_cache(maxsize=64)
def _literal_family(host: str) -> int | None:
    """The address family of an IP literal ("127.0.0.1", "::1"); None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


def _connect(host: str, port: int, timeout: float | None) -> socket.socket:
    """``socket.create_connection``, without its name lookup for an IP literal: a
    reconnecting client paid ``getaddrinfo`` and the IDNA codec, about a fifth of
    a connect's CPU on loopback, for every connection (issue 17)."""
    family = _literal_family(host)
    if family is None:
        return socket.create_connection((host, port), timeout=timeout)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


@functools.lru_cache(maxsize=4)
def _hello_frame(request_id: int, digests: tuple[str, ...] = DEFAULT_DIGESTS) -> bytes:
    """The same for every connection (its id is always 1): encoded once."""
    return encode(Hello(id=request_id, protocol=PROTOCOL_VERSION, client=CLIENT_NAME,
                        max_data=CLIENT_MAX_DATA, digests=digests))


def _describe(event: Event) -> str:
    if isinstance(event, DataChunk):
        return "a DATA frame"
    return f"{event.type!r} (id {getattr(event, 'id', None)})"
