"""TLS over a plain socket through memory BIOs: the client's encrypted stream.

Why not ``ssl.SSLSocket``: its ``recv_into`` returns at most one TLS record
(16 KiB) per call, and OpenSSL reads each record from the socket with two
``recv`` calls of its own; a 1 GiB download then costs 65,536 trips through
the client's receive path (frame decoder, events) and 131,072 system calls.
Its ``sendall`` hands every record to the kernel with a ``send`` of its own.
Here the socket is read up to 1 MiB at a time, every whole record that came
with it is decrypted in the same ``recv_into``, and whatever OpenSSL encrypted
goes out in one ``sendall`` -- the way the daemon's transport does it
(asyncio's ``sslproto`` design).  The handshake is the same OpenSSL state
machine (``SSLContext.wrap_bio``), so chain checks, host names, session
resumption and the fingerprint checks in ``client.trust`` are unchanged.

Like ``SSLSocket`` it is not safe to send from one thread while another
receives.  ``close()`` sends no close_notify, as ``SSLSocket.close()`` does not:
the protocol's ``quit`` is the orderly end, and the daemon treats a bare TCP
close as one.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

#: Ciphertext read from the socket at once while a DATA buffer is being filled...
RAW_RECV = 1 << 20
#: ... and while only control messages are read: a connection that never moves a file
#: (a script with many of them open) holds 64 KiB, not 1 MiB.
RAW_RECV_CONTROL = 64 << 10

__all__ = ["RAW_RECV", "RAW_RECV_CONTROL", "TLSStream"]


class TLSStream:
    """The subset of the socket interface ``client.connection`` uses, encrypted."""

    __slots__ = ("raw", "obj", "context", "_in", "_out", "_small", "_big", "_eof")

    def __init__(self, raw: socket.socket, context: ssl.SSLContext, server_hostname: str,
                 session: ssl.SSLSession | None = None) -> None:
        self.raw = raw
        self.context = context
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self._in, self._out, server_hostname=server_hostname,
                                    session=session)
        self._small: memoryview | None = None    # receive buffers, made when first needed
        self._big: memoryview | None = None
        self._eof = False                        # the socket said EOF

    # ------------------------------------------------------------ handshake

    def do_handshake(self) -> None:
        """One step: ``ssl.SSLWantReadError`` means ``feed`` the server's next bytes.

        The step that completes the handshake sends nothing: its last flight (the
        client's Finished) waits in the outgoing BIO for the first ``sendall`` or
        ``recv_into``, so it shares a segment with the first request -- hello and
        login -- and the server wakes once for all three.  Nothing is written
        before the caller has checked who the server is (``client.trust``)."""
        try:
            self.obj.do_handshake()
        except BaseException:
            self.flush()
            raise

    def feed(self, data: bytes) -> None:
        """Ciphertext read from the socket by the caller (during the handshake)."""
        if data:
            self._in.write(data)
        else:
            self._eof = True
            self._in.write_eof()

    def flush(self) -> None:
        """Send what OpenSSL has written (handshake messages, records, alerts)."""
        if self._out.pending:
            self.raw.sendall(self._out.read())

    # ------------------------------------------------------------ the socket interface

    def recv_into(self, view: Any, nbytes: int = 0) -> int:
        """Plaintext into ``view``: every whole record at hand, blocking (with the
        socket's timeout) only while there is none.  0 at the end of the stream."""
        limit = nbytes or len(view)
        filled = self._decrypt(view, limit)
        while filled == 0 and not self._eof:
            rbuf = self._buffer(limit)
            n = self.raw.recv_into(rbuf)
            self.feed(rbuf[:n])
            filled = self._decrypt(view, limit)
        return filled

    def _buffer(self, limit: int) -> memoryview:
        """The big buffer for a read that can take more than the small one holds."""
        if limit > RAW_RECV_CONTROL:
            if self._big is None:
                self._big = memoryview(bytearray(RAW_RECV))
            return self._big
        if self._small is None:
            self._small = memoryview(bytearray(RAW_RECV_CONTROL))
        return self._small

    def _decrypt(self, view: Any, limit: int) -> int:
        obj, filled = self.obj, 0
        try:
            while filled < limit:
                n = obj.read(limit - filled, view[filled:limit])
                if n == 0:                       # close_notify: the end of the stream
                    self._eof = True
                    break
                filled += n
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLEOFError:                  # EOF without close_notify: an end too,
            self._eof = True                     # as SSLSocket's suppress_ragged_eofs says
        finally:
            self.flush()                         # answers to key updates, alerts
        return filled

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data)
        while view:
            n = self.obj.write(view)
            view = view[n:]
        self.flush()

    def send(self, data: Any, flags: int = 0) -> int:
        self.sendall(data)
        return len(data)

    def pending(self) -> int:
        """Bytes already received that a ``recv_into`` will decrypt without waiting
        (or wait for the rest of a record that has begun to arrive)."""
        return self.obj.pending() + self._in.pending

    def close(self) -> None:
        self.raw.close()

    def fileno(self) -> int:
        return self.raw.fileno()

    def settimeout(self, timeout: float | None) -> None:
        self.raw.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self.raw.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self.raw.setblocking(flag)

    def setsockopt(self, *args: Any) -> None:
        self.raw.setsockopt(*args)

    def getpeername(self) -> Any:
        return self.raw.getpeername()

    # ------------------------------------------------------------ TLS facts

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self.obj.getpeercert(binary_form)

    @property
    def session(self) -> ssl.SSLSession | None:
        return self.obj.session

    @property
    def session_reused(self) -> bool:
        return self.obj.session_reused

    def version(self) -> str | None:
        return self.obj.version()

    def cipher(self) -> Any:
        return self.obj.cipher()
