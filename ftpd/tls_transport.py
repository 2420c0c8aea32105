"""``TLSTransport``: the transport seam of docs/TRANSPORT.md, encrypted.

The session cannot tell it from the plain transport: the same methods, the
same callbacks, the same water marks.  Underneath, every byte goes through a
``TLSLayer`` (ftpd/tls.py): received ciphertext is fed in and plaintext comes
out into one buffer shared by all transports of the reactor (the reactor is
single-threaded and ``data_received`` views are valid only during the call);
written plaintext is encrypted at once and queued as ciphertext.

Downloads cannot use ``sendfile`` (the kernel would send the file's bytes in
clear text): ``send_file`` reads with ``preadv`` into one shared buffer and
encrypts it in record-sized pieces, so no per-chunk buffer is allocated.

The socket and selector calls are kept in ``SelectorSocket``, a small adapter
standing in for what ``PlainTransport`` does, so the two can be aligned at
merge time without touching the TLS logic.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import ssl
from collections import deque
from typing import Any

from .tls import NOT_TLS_REPLY, NotTLS, TLSError, TLSLayer

log = logging.getLogger("ftpd.tls")

#: One receive of ciphertext per wake-up, at most this much (fairness).
RECV_SIZE = 256 * 1024
#: Plaintext handed to ``data_received`` per call, and file bytes per ``send_file``.
PLAIN_SIZE = 256 * 1024
FILE_CHUNK = 256 * 1024


class SharedBuffers:
    """The reactor-wide scratch buffers (one set per process: one thread uses them)."""

    def __init__(self, recv: int = RECV_SIZE, plain: int = PLAIN_SIZE,
                 file: int = FILE_CHUNK) -> None:
        self.recv = memoryview(bytearray(recv))
        self.plain = memoryview(bytearray(plain))
        self.file = memoryview(bytearray(file))


_default_buffers: SharedBuffers | None = None


def shared_buffers() -> SharedBuffers:
    global _default_buffers
    if _default_buffers is None:
        _default_buffers = SharedBuffers()
    return _default_buffers


class SelectorSocket:
    """Socket + selector glue: the only place this module touches either.

    Stands in for PlainTransport's own socket handling; at merge time
    TLSTransport should use whatever that class uses (same four calls).
    """

    def __init__(self, sock: socket.socket, selector: selectors.BaseSelector,
                 owner: Any) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.selector = selector
        self.owner = owner
        self.mask = 0

    def set_interest(self, read: bool, write: bool) -> None:
        mask = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
        if mask == self.mask or self.sock.fileno() < 0:
            return
        if self.mask == 0:
            self.selector.register(self.sock, mask, self.owner)
        elif mask == 0:
            self.selector.unregister(self.sock)
        else:
            self.selector.modify(self.sock, mask, self.owner)
        self.mask = mask

    def recv_into(self, buffer: memoryview) -> int | None:
        """Bytes received (0: EOF), or None when nothing is there now."""
        try:
            return self.sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            return None

    def send(self, data: bytes | memoryview) -> int:
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    def close(self) -> None:
        self.set_interest(False, False)
        try:
            self.sock.close()
        except OSError:
            pass


class TLSTransport:
    """A server-side TLS connection on the reactor (see docs/TRANSPORT.md).

    The handshake starts with the first bytes from the client; plaintext the
    session writes before it completes (the greeting) is held and encrypted
    once it does.  ``handshake_done`` lets the session's login timer tell a
    stalled handshake apart; the login timeout covers it either way.
    """

    def __init__(self, sock: socket.socket, selector: selectors.BaseSelector,
                 context: ssl.SSLContext, peer: str | None = None, *,
                 high_water: int = 256 * 1024, low_water: int = 64 * 1024,
                 buffers: SharedBuffers | None = None) -> None:
        self._io = SelectorSocket(sock, selector, self)
        if peer is None:
            try:
                host, port = sock.getpeername()[:2]
                peer = f"{host}:{port}"
            except OSError:
                peer = "?"
        self.peer = peer
        self.ip = peer.rsplit(":", 1)[0]
        self.high_water = high_water
        self.low_water = low_water
        self._buffers = buffers or shared_buffers()
        self._layer = TLSLayer(context, server_side=True)
        self._protocol: Any = None
        self._early: list[bytes] = []          # plaintext written before the handshake
        self._early_size = 0
        self._out: deque[memoryview] = deque()  # ciphertext waiting for the socket
        self._out_size = 0
        self._reading = True
        self._eof = False
        self._writing_paused = False
        self._closing = False
        self._closed = False
        self._delivering = False
        self._redeliver = False          # plaintext left in OpenSSL after a pause

    # ------------------------------------------------------------ seam

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def start(self) -> None:
        self._update_interest()

    @property
    def handshake_done(self) -> bool:
        return self._layer.handshake_done

    @property
    def layer(self) -> TLSLayer:
        return self._layer

    def on_event(self, mask: int) -> None:
        if self._closed:
            return
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush()
                if self._redeliver and not self._closed:
                    self._redeliver = False
                    self._update_interest()
                    self._deliver()
            if mask & selectors.EVENT_READ and not self._closed:
                self._read_once()
        except NotTLS as exc:
            self._refuse_plaintext(exc)
        except TLSError as exc:
            log.info("tls %s: %s", self.peer, exc)
            self._send_alert()
            self._force_close(exc)
        except OSError as exc:
            self._force_close(exc)

    def write(self, data: bytes | memoryview) -> None:
        if self._closing or self._closed or not data:
            return
        if not self._layer.handshake_done:
            chunk = bytes(data)
            self._early.append(chunk)
            self._early_size += len(chunk)
            self._check_water()
            return
        try:
            self._layer.write(data)
        except TLSError as exc:
            log.info("tls %s: %s", self.peer, exc)
            self._force_close(exc)
            return
        self._pull_ciphertext()
        self._flush()

    def send_file(self, fd: int, offset: int, count: int) -> int:
        """Encrypt up to one buffer of the file range; bytes consumed (0: not now).

        At the end of the file (``preadv`` returns 0) it returns 0 as well;
        the producer knows the file's size and treats that as a shrunk file.
        Before the handshake it returns 0 too (no download starts before login).
        """
        if (self._closing or self._closed or not self._layer.handshake_done
                or self._writing_paused or count <= 0):
            return 0                 # paused: resume_writing() says when to come back
        view = self._buffers.file[:min(count, len(self._buffers.file))]
        n = os.preadv(fd, [view], offset)
        if n <= 0:
            return 0
        self.write(view[:n])
        return n

    def get_write_buffer_size(self) -> int:
        return self._out_size + self._early_size

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._redeliver = False
            self._update_interest()

    def resume_reading(self) -> None:
        if self._reading or self._closed:
            return
        self._reading = True
        # OpenSSL may hold bytes the socket will not announce again.  They are
        # delivered on the next reactor turn (never from inside this call): write
        # interest makes the selector wake us at once, as a call_soon would.
        self._redeliver = self._layer.has_unread_ciphertext()
        self._update_interest()

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def close(self) -> None:
        """Stop reading, send what is queued, then close_notify, then close."""
        if self._closing or self._closed:
            return
        self._closing = True
        self._reading = False
        if self._layer.handshake_done:
            try:
                self._layer.shutdown()
            except TLSError:
                pass
            self._pull_ciphertext()
        self._early.clear()
        self._early_size = 0
        self._flush()

    def abort(self) -> None:
        self._force_close(None)

    def is_closing(self) -> bool:
        return self._closing or self._closed

    # ------------------------------------------------------------ reading

    def _read_once(self) -> None:
        if not self._reading or self._eof:
            return
        buf = self._buffers.recv
        n = self._io.recv_into(buf)
        if n is None:
            return
        if n == 0:
            self._eof = True
            self._layer.feed_eof()
        else:
            self._layer.feed(buf[:n])
        self._deliver()

    def _deliver(self) -> None:
        """Advance the handshake, then hand out plaintext while reading is on."""
        if self._delivering:
            return                   # resume_reading() from inside data_received
        self._delivering = True
        try:
            layer = self._layer
            if not layer.handshake_done:
                done = layer.do_handshake()
                self._pull_ciphertext()
                if not done:
                    self._flush()
                    return
                self._release_early()
            plain = self._buffers.plain
            while self._reading and not self._closed:
                n = layer.read_into(plain)
                if n == 0:
                    break
                self._protocol.data_received(plain[:n])
            self._pull_ciphertext()          # tickets, alerts, key updates
            self._flush()
            if layer.peer_closed and self._reading and not self._closed:
                self._reading = False
                self._update_interest()
                self._protocol.eof_received()
        finally:
            self._delivering = False

    def _release_early(self) -> None:
        early, self._early = self._early, []
        self._early_size = 0
        for chunk in early:
            self._layer.write(chunk)
        self._pull_ciphertext()

    # ------------------------------------------------------------ writing

    def _pull_ciphertext(self) -> None:
        data = self._layer.data_to_send()
        if data:
            self._out.append(memoryview(data))
            self._out_size += len(data)

    def _flush(self) -> None:
        out = self._out
        while out:
            head = out[0]
            try:
                sent = self._io.send(head)
            except OSError as exc:       # reset, broken pipe: the peer is gone
                self._force_close(exc)
                return
            self._out_size -= sent
            if sent < len(head):
                out[0] = head[sent:]
                break
            out.popleft()
        if not out and self._closing and not self._closed:
            self._force_close(None)
            return
        self._update_interest()
        self._check_water()

    def _check_water(self) -> None:
        if self._closed:
            return
        size = self.get_write_buffer_size()
        if not self._writing_paused and size > self.high_water:
            self._writing_paused = True
            self._protocol.pause_writing()
        elif self._writing_paused and size <= self.low_water:
            self._writing_paused = False
            self._protocol.resume_writing()

    def _update_interest(self) -> None:
        if not self._closed:
            self._io.set_interest(self._reading and not self._eof and not self._closing,
                                  bool(self._out) or self._redeliver)

    # ------------------------------------------------------------ ending

    def _refuse_plaintext(self, exc: NotTLS) -> None:
        """A plain-text client: one plain error frame (best effort), one log line, close."""
        log.info("tls %s: not TLS (first byte 0x%02x), closed", self.peer, exc.first_byte)
        self._out.clear()
        self._out_size = 0
        try:
            self._io.send(NOT_TLS_REPLY)
        except OSError:
            pass
        self._force_close(exc)

    def _send_alert(self) -> None:
        """Best effort: the alert OpenSSL made (protocol_version...) tells the peer why."""
        try:
            alert = self._layer.data_to_send()
            if alert:
                self._io.send(alert)
        except OSError:
            pass

    def _force_close(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self._reading = False
        self._out.clear()
        self._out_size = 0
        self._early.clear()
        self._io.close()
        if self._protocol is not None:
            self._protocol.connection_lost(exc)
