"""A sans-IO TLS layer: ciphertext in, plaintext out, and back, with no socket in sight.

It is ``ssl.SSLObject`` over two ``ssl.MemoryBIO`` (the design of asyncio's
``sslproto.py``): the transport feeds whatever it received from the socket
into ``feed`` and sends whatever ``data_to_send`` returns; everything in
between (handshake, records, alerts, tickets, close_notify) is OpenSSL's
business.  Keeping the socket out of it means the same object is driven by
the reactor in the daemon and by two layers wired back to back in the tests.

Directions of "want":

- the handshake (or a read) needs more ciphertext: ``do_handshake`` returns
  False / ``read_into`` returns 0 -- wait for the socket to be readable;
- there is ciphertext to send (handshake messages, records, alerts):
  ``wants_write`` -- drain ``data_to_send`` into the socket, whatever else happens.

Everything OpenSSL can raise leaves this module as ``TLSError``; a peer whose
very first byte cannot start a TLS record is ``NotTLS`` (a subclass), so the
transport can answer it in plain text and close without a traceback.
"""

from __future__ import annotations

import ssl

from protocol import encode
from protocol.messages import ErrorReply

#: TLS record content types a peer's first byte may be: handshake (0x16) from
#: either side, or an alert (0x15) from a server refusing our hello.
HANDSHAKE = 0x16
ALERT = 0x15
#: The largest plaintext of one TLS record; writes are cut into pieces this big.
RECORD_SIZE = 16 * 1024

#: What the daemon answers a peer that speaks the plain-text protocol to its TLS
#: port: one ordinary error frame (first byte 0x00, which can never start a TLS
#: record), so a plain-text client reads a clear reason instead of hanging.
#: BAD_FRAME is fatal in the protocol; ``details.tls`` tells clients why.
NOT_TLS_REPLY = encode(ErrorReply(
    id=None, code="BAD_FRAME",
    message="this server requires TLS; connect without --plaintext",
    details={"tls": "required"}))


class TLSError(Exception):
    """The TLS layer failed: bad handshake, bad record, failed verification, or
    a protocol error from the peer.  ``reason`` is OpenSSL's short reason when
    there is one (``WRONG_VERSION_NUMBER``, ``CERTIFICATE_VERIFY_FAILED``...)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class NotTLS(TLSError):
    """The peer's first byte cannot start a TLS record: it is not speaking TLS."""

    def __init__(self, first_byte: int) -> None:
        super().__init__(f"peer is not speaking TLS (first byte 0x{first_byte:02x})",
                         "NOT_TLS")
        self.first_byte = first_byte


def _wrap(exc: ssl.SSLError) -> TLSError:
    reason = getattr(exc, "reason", None)
    message = getattr(exc, "verify_message", None) or reason or str(exc)
    return TLSError(f"TLS error: {message}", reason)


class TLSLayer:
    """One TLS connection's state machine, without I/O.

    ``server_side`` layers check the peer's first byte is a handshake record;
    client layers accept a handshake or an alert.  ``session`` (client side)
    asks to resume an earlier session.
    """

    __slots__ = ("_in", "_out", "_obj", "server_side", "handshake_done", "_first",
                 "peer_closed", "clean_close", "_shutdown_sent")

    def __init__(self, context: ssl.SSLContext, *, server_side: bool = True,
                 server_hostname: str | None = None,
                 session: ssl.SSLSession | None = None) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=server_side,
                                     server_hostname=server_hostname, session=session)
        self.server_side = server_side
        self.handshake_done = False
        self._first = True
        #: the peer closed: close_notify (``clean_close``) or EOF without one
        self.peer_closed = False
        self.clean_close = False
        self._shutdown_sent = False

    # ------------------------------------------------------------ ciphertext in

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Ciphertext from the peer (copied into the layer; the buffer may be reused)."""
        if not data:
            return
        if self._first:
            self._first = False
            first = data[0]
            allowed = (HANDSHAKE,) if self.server_side else (HANDSHAKE, ALERT)
            if first not in allowed:
                raise NotTLS(first)
        self._in.write(data)

    def feed_eof(self) -> None:
        """The peer's TCP stream ended."""
        self._in.write_eof()

    # ------------------------------------------------------------ handshake

    def do_handshake(self) -> bool:
        """Advance the handshake; True once complete.  False: feed more ciphertext
        (and send ``data_to_send`` first -- the handshake usually has some)."""
        if self.handshake_done:
            return True
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            if self._in.eof:
                raise TLSError("TLS error: the peer closed during the handshake", "EOF")
            return False
        except ssl.SSLError as exc:
            raise _wrap(exc)
        self.handshake_done = True
        return True

    # ------------------------------------------------------------ plaintext out

    def read_into(self, buffer: memoryview | bytearray) -> int:
        """Decrypt into ``buffer``; the byte count, or 0 when nothing more is
        available now (need ciphertext) or the peer closed (``peer_closed``)."""
        if not self.handshake_done and not self.do_handshake():
            return 0
        try:
            n = self._obj.read(len(buffer), buffer)
            if n == 0 and len(buffer):
                # OpenSSL reports the peer's close_notify as a 0-byte read
                self.peer_closed = self.clean_close = True
            return n
        except ssl.SSLWantReadError:
            if self._in.eof:
                self.peer_closed = True     # TCP EOF without close_notify
            return 0
        except ssl.SSLZeroReturnError:
            self.peer_closed = self.clean_close = True
            return 0
        except ssl.SSLEOFError:
            self.peer_closed = True
            return 0
        except ssl.SSLError as exc:
            raise _wrap(exc)

    def pending_plaintext(self) -> int:
        """Decrypted bytes OpenSSL holds that ``read_into`` would return now."""
        return self._obj.pending()

    def has_unread_ciphertext(self) -> bool:
        """Whether ciphertext was fed that has not been turned into plaintext yet."""
        return self._in.pending > 0 or self._obj.pending() > 0

    # ------------------------------------------------------------ plaintext in

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt all of ``data`` (the ciphertext waits in ``data_to_send``).

        Only after the handshake: OpenSSL would otherwise want to read.
        """
        if not self.handshake_done:
            raise TLSError("TLS error: write before the handshake completed", "HANDSHAKE")
        view = memoryview(data)
        try:
            while view:
                n = self._obj.write(view[:RECORD_SIZE])
                view = view[n:]
        except ssl.SSLError as exc:
            raise _wrap(exc)

    # ------------------------------------------------------------ ciphertext out

    @property
    def wants_write(self) -> bool:
        """Ciphertext is waiting to be sent."""
        return self._out.pending > 0

    def outgoing_size(self) -> int:
        return self._out.pending

    def data_to_send(self) -> bytes:
        """All ciphertext produced so far (empty if none)."""
        return self._out.read() if self._out.pending else b""

    # ------------------------------------------------------------ closing

    def shutdown(self) -> None:
        """Queue our close_notify (once).  The peer's is not waited for."""
        if self._shutdown_sent or not self.handshake_done:
            return
        self._shutdown_sent = True
        try:
            self._obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass                     # our close_notify is out; theirs may follow
        except ssl.SSLError as exc:
            raise _wrap(exc)

    # ------------------------------------------------------------ facts

    @property
    def session(self) -> ssl.SSLSession | None:
        return self._obj.session

    @property
    def session_reused(self) -> bool:
        return self._obj.session_reused

    def version(self) -> str | None:
        return self._obj.version()

    def peer_certificate_der(self) -> bytes | None:
        return self._obj.getpeercert(binary_form=True)
