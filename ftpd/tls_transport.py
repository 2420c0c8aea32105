"""``TLSTransport``: the transport seam of docs/ARCHITECTURE.md, encrypted.

The session cannot tell it from the plain transport: the same constructor
(plus the ``SSLContext``), the same methods, the same callbacks, the same
water marks.  It *is* a ``PlainTransport`` whose bytes pass through a
``TLSLayer`` (ftpd/tls.py): the socket, the selector mask, the ciphertext
queue, the send budget (fairness), the water marks and the "fail from the
loop, not from inside write" rule are the plain transport's own code.  Only
three things differ:

- reading: ciphertext is received into the reactor's shared buffer, fed to
  the layer (which copies it), and the plaintext is decrypted back into that
  same buffer for ``data_received`` -- no per-connection receive buffer;
- writing: plaintext is encrypted at once and the ciphertext handed to the
  plain ``write``; plaintext written before the handshake completes (the
  greeting) is held and encrypted once it does;
- ``send_file``: never ``sendfile`` (the kernel would send the file in clear
  text): ``pread`` into one reused per-reactor buffer, encrypted in
  record-sized pieces, within the same budget as the plain ``pread`` path.

A peer whose first byte cannot start a TLS record (a plain-text client) gets
one plain error frame naming ``--plaintext`` and is closed, with one log line.
Any other TLS failure is one log line and a closed connection; never a traceback.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Callable

from .tls import NOT_TLS_REPLY, NotTLS, TLSError, TLSLayer
from .transport import BULK_RECVS_PER_WAKEUP, PREAD_CHUNK, IOContext, PlainTransport

log = logging.getLogger("ftpd.tls")

#: The largest plaintext one TLS record carries (RFC 8446 5.1): one OpenSSL read's most.
TLS_RECORD_MAX = 16 * 1024


def _file_buffer(io: IOContext) -> memoryview:
    """The reactor's one reused buffer for file bytes going out over TLS."""
    view = io.file_view
    if view is None:
        view = io.file_view = memoryview(bytearray(PREAD_CHUNK))
    return view


class TLSTransport(PlainTransport):
    """A server-side TLS connection on the reactor.

    ``handshake_done`` tells a stalled handshake apart for the logs; the
    session's login timeout (armed at accept) covers the handshake either way.
    """

    __slots__ = ("_layer", "_early", "_redeliver", "_close_when_ready")

    def __init__(self, io: IOContext, sock: socket.socket, peer: tuple[object, ...],
                 context: ssl.SSLContext) -> None:
        super().__init__(io, sock, peer)
        self._layer = TLSLayer(context, server_side=True)
        self._early: list[bytes] | None = None     # plaintext written before the handshake
        self._redeliver = False                    # a delivery from the loop is scheduled
        self._close_when_ready = False             # refuse(): close right after the handshake

    # ------------------------------------------------------------ facts

    @property
    def handshake_done(self) -> bool:
        return self._layer.handshake_done

    @property
    def layer(self) -> TLSLayer:
        return self._layer

    # ------------------------------------------------------------ the interface

    def write(self, data: bytes | memoryview) -> None:
        """Encrypt and send (or hold until the handshake is done)."""
        if self.sock is None or self._closing or not data:
            return
        if not self._layer.handshake_done:
            if self._early is None:
                self._early = []
            self._early.append(bytes(data))
            self._out_size += len(data)
            self._check_water(resume=False)
            return
        try:
            self._layer.write(data)
        except TLSError as exc:
            log.info("tls %s: %s", self.peer, exc)
            self._fail_soon(exc)
            return
        self._push_ciphertext()

    def send_file(self, fd: int, offset: int, count: int) -> int:
        """Encrypt up to one buffer of the file range; the bytes consumed (0: not now).

        Same contract as the plain transport: 0 pauses the producer until
        ``resume_writing()``; ``EOFError`` when the file has no byte at
        ``offset``.  Before the handshake nothing goes out (no download
        starts before a login, which needs the handshake).
        """
        if self.sock is None or self._closing or count <= 0 or \
                not self._layer.handshake_done:
            return 0
        if self._paused or self._spent():
            return self._blocked()
        buf = _file_buffer(self._io)
        n = os.preadv(fd, [buf[:min(count, len(buf))]], offset)
        if n <= 0:
            raise EOFError("file shrank")
        self.write(buf[:n])
        return n

    def resume_reading(self) -> None:
        """Reading resumes; plaintext OpenSSL still holds is delivered from the loop."""
        was_reading = self._reading
        super().resume_reading()
        if not was_reading and self._reading and self.sock is not None:
            self._schedule_delivery()

    def close(self) -> None:
        """Stop reading, send what is queued and our close_notify, then close."""
        if self._closing or self.sock is None:
            return
        if self._layer.handshake_done:
            try:
                self._layer.shutdown()
            except TLSError:
                pass
            self._push_ciphertext()
        self._drop_early()
        super().close()

    def refuse(self, frame: bytes) -> None:
        """Send one (error) frame as soon as the handshake completes, then close:
        how a TLS daemon turns a connection away with a reason the client can read."""
        self._close_when_ready = True
        self.write(frame)

    # ------------------------------------------------------------ reading

    def _on_readable(self) -> None:
        io = self._io
        for _ in range(BULK_RECVS_PER_WAKEUP if self._wants_bulk() else 1):
            sock = self.sock
            if sock is None or not self.is_reading():
                return
            try:
                n = sock.recv_into(io.recv_view, io.recv_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._shut(exc)
                return
            try:
                if n == 0:
                    self._layer.feed_eof()
                else:
                    self._layer.feed(io.recv_view[:n])
                self._deliver()
            except NotTLS as exc:
                self._refuse_plaintext(exc)
                return
            except TLSError as exc:
                self._tls_failed(exc)
                return
            if n < io.recv_size or io.turn_over():
                return

    def _wants_bulk(self) -> bool:
        protocol = self._protocol
        return protocol is not None and self._layer.handshake_done and \
            protocol.wants_bulk_reads()

    def _deliver(self) -> None:
        """Advance the handshake, then hand out plaintext while reading is on."""
        layer, protocol, io = self._layer, self._protocol, self._io
        assert protocol is not None
        if not layer.handshake_done:
            done = layer.do_handshake()
            if done:
                # The greeting rides with the session tickets OpenSSL wrote at the
                # handshake's end: one segment, one wake-up of the client, not two.
                self._release_early()
            self._push_ciphertext()
            if not done or self.sock is None:
                return
            if self._close_when_ready:
                self.close()
                return
        view = io.recv_view     # the ciphertext in it is the layer's now: reuse it
        room = len(view) - TLS_RECORD_MAX
        self._holding = True
        try:
            while self._reading and self.sock is not None and not self._closing:
                # One OpenSSL read yields at most one record (16 KiB): gather as many as
                # the buffer holds before one data_received, so a bulk upload costs the
                # session (its checks, its pwrite) per buffer, not per record.
                filled = n = layer.read_into(view)
                while n and filled < room:
                    n = layer.read_into(view[filled:])
                    filled += n
                if filled == 0:
                    break
                protocol.data_received(view[:filled])
        finally:
            self._holding = False
        self._push_ciphertext()                    # replies, tickets, key updates
        if self.sock is not None and self._out is not None:
            self._on_writable()                    # the replies to this batch, in one send
        if layer.peer_closed and not self._eof and self.sock is not None:
            self._eof = True
            self._update_mask()
            protocol.eof_received()

    def _schedule_delivery(self) -> None:
        if self._redeliver or not self._layer.has_unread_ciphertext():
            return
        self._redeliver = True
        self._io.timers.call_later(0, self._redeliver_now)

    def _redeliver_now(self) -> None:
        self._redeliver = False
        if self.sock is None or not self.is_reading():
            return
        try:
            self._deliver()
        except TLSError as exc:
            self._tls_failed(exc)

    # ------------------------------------------------------------ writing

    def _push_ciphertext(self) -> None:
        data = self._layer.data_to_send()
        if data:
            PlainTransport.write(self, data)

    def _release_early(self) -> None:
        early = self._early
        if not early:
            return
        self._drop_early()
        for chunk in early:
            self._layer.write(chunk)
        self._push_ciphertext()

    def _drop_early(self) -> None:
        if self._early:
            self._out_size -= sum(len(chunk) for chunk in self._early)
        self._early = None

    # ------------------------------------------------------------ ending

    def _refuse_plaintext(self, exc: NotTLS) -> None:
        """A plain-text client: one plain error frame (best effort), one log line, close."""
        log.info("tls %s: not TLS (first byte 0x%02x), closed", self.peer, exc.first_byte)
        self._drop_early()
        sock = self.sock
        if sock is not None:
            try:
                sock.send(NOT_TLS_REPLY)
            except OSError:
                pass
        self._shut(exc)

    def _tls_failed(self, exc: TLSError) -> None:
        """One log line; the alert OpenSSL made (protocol_version...) goes out best effort."""
        log.info("tls %s: %s", self.peer, exc)
        self._drop_early()
        alert = self._layer.data_to_send()
        sock = self.sock
        if alert and sock is not None:
            try:
                sock.send(alert)
            except OSError:
                pass
        self._shut(exc)

    def _shut(self, exc: BaseException | None, deliver: bool = True) -> None:
        self._early = None
        super()._shut(exc, deliver)


class Refusal:
    """The protocol of a connection the daemon turns away over TLS (too many
    connections, shutting down): it reads nothing, and the transport closes
    right after the handshake and the one error frame (``TLSTransport.refuse``)."""

    __slots__ = ("lost", "on_lost")

    def __init__(self, on_lost: Callable[[], None] | None = None) -> None:
        self.lost = False
        self.on_lost = on_lost

    def data_received(self, data: memoryview) -> None:
        pass

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def wants_bulk_reads(self) -> bool:
        return False

    def moves_bulk(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        if self.on_lost is not None:
            self.on_lost()
