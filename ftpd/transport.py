"""The plain transport: one non-blocking TCP socket under the reactor's selector.

Modeled on asyncio's ``_SelectorSocketTransport``: received bytes go to the
protocol (a ``Session``) as a view into the reactor's shared receive buffer;
``write`` sends at once what the socket takes and queues only the rest;
EVENT_WRITE is asked for only while output is queued (or a producer waits to
be resumed).  The queue is judged against the water marks in one place
(``_check_water``): above ``high_water`` the protocol is told
``pause_writing()``, at or below ``low_water`` ``resume_writing()``.

The interface is the seam a TLS transport replaces (docs/ARCHITECTURE.md,
/work/notes/TRANSPORT.md): the session never sees the socket, the selector or
``sendfile``.
"""

from __future__ import annotations

import logging
import math
import os
import selectors
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .timers import TimerHeap

log = logging.getLogger("ftpd.transport")

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
#: Bytes one connection may send per wake-up before it yields to the others.  The
#: turn's time budget (``ftpd.turns``) bounds a wake-up too, and first where others
#: wait; this bound is for a lone download, which at 4 MiB went back through
#: ``select`` and the turn 264 times per GiB for nobody (16 MiB: about 4 ms of
#: loopback sendfile, the length of a turn).
SEND_BUDGET = 16 << 20
#: Full receive buffers one streaming connection may take per wake-up.
BULK_RECVS_PER_WAKEUP = 4
#: Replies queued as separate chunks are joined into one send while all are this small.
COALESCE_BELOW = 65536
#: Largest read of a file when ``use_sendfile`` is off.
PREAD_CHUNK = 256 * 1024
#: ``send`` flag: more bytes follow at once, so the kernel holds a short write back
#: to fill the next segment (0 where the platform has no such flag).
MSG_MORE = getattr(socket, "MSG_MORE", 0)


class TransportProtocol(Protocol):
    """What a transport calls (implemented by ``ftpd.session.Session``)."""

    def data_received(self, data: memoryview) -> None: ...
    def eof_received(self) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def connection_lost(self, exc: BaseException | None) -> None: ...
    def wants_bulk_reads(self) -> bool: ...
    def moves_bulk(self) -> bool: ...


class IOContext:
    """What every transport of one reactor shares: made once, held by reference.

    Keeping these out of the transport's own slots keeps an idle connection small.
    """

    __slots__ = ("selector", "timers", "recv_view", "recv_size", "control_recv_size",
                 "high_water", "low_water", "use_sendfile", "file_view", "turn_deadline")

    def __init__(self, selector: selectors.BaseSelector, timers: TimerHeap, recv_buffer: int,
                 high_water: int, low_water: int, use_sendfile: bool) -> None:
        self.selector = selector
        self.timers = timers
        self.recv_view = memoryview(bytearray(recv_buffer))
        self.recv_size = recv_buffer
        self.control_recv_size = min(recv_buffer, 64 * 1024)
        self.high_water = high_water
        self.low_water = low_water
        self.use_sendfile = use_sendfile
        #: TLS only: the one reused buffer file bytes are read into before encryption
        #: (made on first use by ftpd/tls_transport.py; plain text uses sendfile)
        self.file_view: memoryview | None = None
        #: When this turn of the loop should move on (``ftpd.turns``): past it, a
        #: streaming connection stops after its first buffer of the wake-up.
        self.turn_deadline = math.inf

    def turn_over(self) -> bool:
        return time.monotonic() >= self.turn_deadline


class PlainTransport:
    """Owns one client socket, its selector registration and its output queue.

    It decides when to read (only while ``pause_reading`` is not in force),
    when to ask for EVENT_WRITE (only while output waits), how a file range
    goes out (``send_file``: ``os.sendfile`` or ``pread`` + ``send``) and how
    many bytes one wake-up may send (fairness).  It may not interpret the
    bytes: framing, requests, replies and every protocol state belong to the
    session, which it reaches only through the ``TransportProtocol`` calls.
    """

    __slots__ = ("sock", "fd", "peer", "ip", "_io", "_protocol", "_out", "_out_size", "_mask",
                 "_reading", "_paused", "_closing", "_eof", "_holding", "_budget", "_lost",
                 "_send_flags")

    def __init__(self, io: IOContext, sock: socket.socket, peer: tuple[object, ...]) -> None:
        self.sock: socket.socket | None = sock
        self.fd = sock.fileno()
        self.peer = f"{peer[0]}:{peer[1]}"
        self.ip = str(peer[0])
        self._io = io
        self._protocol: TransportProtocol | None = None
        self._out: deque[bytes | memoryview] | None = None   # made when something must wait
        self._out_size = 0
        self._mask = 0
        self._reading = True        # not paused by the protocol
        self._paused = False        # the protocol was told pause_writing()
        self._closing = False       # close(): no more reading; close once drained
        self._eof = False           # the peer ended its side
        self._holding = False       # inside data_received: replies are sent after it, together
        self._budget = SEND_BUDGET
        self._lost = False          # connection_lost was called
        self._send_flags = 0        # MSG_MORE inside write_more()

    # ------------------------------------------------------------ the interface

    def set_protocol(self, protocol: TransportProtocol) -> None:
        self._protocol = protocol

    def start(self) -> None:
        """Register with the selector for reading."""
        self._update_mask()

    def write(self, data: bytes | memoryview) -> None:
        """Send now what the socket takes, queue the rest (copying views of shared buffers)."""
        if self.sock is None or not data:
            return
        if self._out is None and not self._holding and (self._budget > 0 or self._send_flags):
            try:
                sent = self.sock.send(data, self._send_flags)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._fail_soon(exc)
                return
            self._budget -= sent
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        if isinstance(data, memoryview) and not isinstance(data.obj, bytes):
            data = bytes(data)               # a view into a buffer that will be reused
        if self._out is None:
            self._out = deque()
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size > self._io.high_water and not self._paused:
            self._check_water(resume=False)  # (never resume a producer from inside its call)
        if not self._holding:               # (after data_received the flush updates the mask)
            self._update_mask()

    def write_more(self, data: bytes) -> None:
        """``write`` a short piece that the caller follows at once with more (a DATA
        frame's header, then its body): the kernel keeps it back (``MSG_MORE``) and
        sends it in one segment with the next bytes, instead of a segment of its own
        that wakes the reader for 5 bytes.  The next send without the flag (the
        body's ``sendfile``) pushes both.  It goes to the kernel even when this
        wake-up's send budget is spent (a few bytes): queued here instead, it would
        leave alone, in a segment of its own, at the next wake-up."""
        self._send_flags = MSG_MORE
        try:
            self.write(data)
        finally:
            self._send_flags = 0

    def send_file(self, fd: int, offset: int, count: int) -> int:
        """Send up to ``count`` bytes of file ``fd`` from ``offset``; returns the bytes consumed.

        0 means "cannot now" (output queued, socket full, budget spent or
        closing): the protocol is paused and ``resume_writing()`` follows when
        it can go on.  Raises ``EOFError`` when the file has no byte at
        ``offset`` (it shrank), and ``OSError`` when it cannot be read.
        """
        if self.sock is None or self._closing or count <= 0:
            return 0
        if not self._io.use_sendfile:
            if self._paused or self._spent():
                return self._blocked()
            chunk = os.pread(fd, min(count, PREAD_CHUNK), offset)
            if not chunk:
                raise EOFError("file shrank")
            self.write(chunk)
            return len(chunk)
        if self._out is not None:
            self._send_queued()
            if self._out is not None or self.sock is None:
                return self._blocked()
        if self._spent():
            return self._blocked()
        try:
            sent = os.sendfile(self.fd, fd, offset, count)
        except (BlockingIOError, InterruptedError):
            return self._blocked()
        except OSError as exc:          # the peer vanished, or the file failed
            self._fail_soon(exc)
            return 0
        if sent == 0:
            raise EOFError("file shrank")
        self._budget -= sent
        return sent

    def moves_bulk(self) -> bool:
        """Whether this connection streams file bytes (served after the light ones)."""
        protocol = self._protocol
        return protocol is not None and protocol.moves_bulk()

    def get_write_buffer_size(self) -> int:
        return self._out_size

    def wait_for_low_water(self) -> bool:
        """For a producer that may go on only at or below ``low_water`` (a listing's
        next batch): False if the output is there now; else True, the protocol is
        paused, and it hears ``resume_writing()`` once the queue has drained."""
        if self._out_size <= self._io.low_water or self.sock is None:
            return False
        self._blocked()
        return True

    def pause_reading(self) -> None:
        """The one place reading stops."""
        if self._reading:
            self._reading = False
            self._update_mask()

    def resume_reading(self) -> None:
        """The one place reading resumes (never after EOF or close)."""
        if not self._reading:
            self._reading = True
            self._update_mask()

    def is_reading(self) -> bool:
        return self._reading and not (self._closing or self._eof) and self.sock is not None

    def close(self) -> None:
        """Stop reading, send what is queued, then close."""
        if self._closing or self.sock is None:
            return
        self._closing = True
        if self._out is not None and self._holding:
            # Inside data_received (a quit): this read's replies go now, in one send, and
            # a connection that took them all is closed at once -- no EVENT_WRITE asked
            # for (an epoll_ctl), and the session arms no closing watchdog (issue 17).
            self._send_queued()
            if self.sock is None:
                return              # the send failed: connection_lost follows from the loop
        if self._out is None:
            self._shut(None)
        elif not self._holding:
            self._update_mask()     # (holding: the flush after data_received does it)

    def abort(self) -> None:
        """Close now; queued output is dropped."""
        self._shut(None)

    def is_closing(self) -> bool:
        return self._closing or self.sock is None

    # ------------------------------------------------------------ selector events

    def on_event(self, mask: int) -> None:
        """The reactor's call: the socket is readable and/or writable."""
        self._budget = SEND_BUDGET
        try:
            if mask & READ and self.sock is not None:
                self._on_readable()
            if mask & WRITE and self.sock is not None:
                self._on_writable()
        except Exception as exc:
            log.exception("connection %s failed; closing it", self.peer)
            self._shut(exc)

    def _on_readable(self) -> None:
        io, protocol = self._io, self._protocol
        assert protocol is not None
        bulk = protocol.wants_bulk_reads()
        for _ in range(BULK_RECVS_PER_WAKEUP if bulk else 1):
            limit = io.recv_size if bulk else io.control_recv_size
            sock = self.sock
            if sock is None or not self.is_reading():
                return
            try:
                n = sock.recv_into(io.recv_view, limit)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._shut(exc)
                return
            if n == 0:
                self._eof = True
                self._update_mask()
                protocol.eof_received()
                return
            self._holding = True
            try:
                protocol.data_received(io.recv_view[:n])
            finally:
                self._holding = False
            if self._out is not None:
                self._on_writable()       # the replies to this batch, in one send
            if n < limit or not bulk or io.turn_over():
                return
            bulk = protocol.wants_bulk_reads()

    def _on_writable(self) -> None:
        self._send_queued()
        if self.sock is None:
            return
        if self._out is None and self._closing:
            self._shut(None)
            return
        self._check_water()
        self._update_mask()

    # ------------------------------------------------------------ machinery

    def _send_queued(self) -> None:
        out = self._out
        while out and self._budget > 0 and self.sock is not None:
            if len(out) > 1 and all(len(chunk) < COALESCE_BELOW for chunk in out):
                joined = b"".join(out)
                out.clear()
                out.append(joined)
            chunk = out[0]
            try:
                sent = self.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._fail_soon(exc)
                return
            self._out_size -= sent
            self._budget -= sent
            if sent < len(chunk):
                out[0] = memoryview(chunk)[sent:]
                break
            out.popleft()
        if not out:
            self._out = None

    def _spent(self) -> bool:
        """This wake-up's share of sending is used: the byte budget, or the turn's
        time once something went out (``ftpd.turns``)."""
        budget = self._budget
        return budget <= 0 or (budget < SEND_BUDGET and self._io.turn_over())

    def _blocked(self) -> int:
        """A producer cannot go on now: it hears resume_writing() when it can."""
        if not self._paused:
            self._paused = True
            assert self._protocol is not None
            self._protocol.pause_writing()
        self._update_mask()
        return 0

    def _check_water(self, resume: bool = True) -> None:
        """The one pause decision and the one resume decision against the water marks."""
        protocol = self._protocol
        if protocol is None or self.sock is None:
            return
        if not self._paused:
            if self._out_size > self._io.high_water:
                self._paused = True
                protocol.pause_writing()
        elif resume and self._out_size <= self._io.low_water and self._budget > 0 \
                and not self._closing:
            self._paused = False
            protocol.resume_writing()

    def _update_mask(self) -> None:
        sock = self.sock
        if sock is None:
            return
        mask = 0
        if self._reading and not (self._closing or self._eof):
            mask |= READ
        if self._out is not None or self._paused:
            mask |= WRITE
        if mask == self._mask:
            return
        selector = self._io.selector
        if self._mask == 0:
            selector.register(sock, mask, self)
        elif mask == 0:
            selector.unregister(sock)
        else:
            selector.modify(sock, mask, self)
        self._mask = mask

    def _fail_soon(self, exc: BaseException) -> None:
        """A send failed inside a call from the protocol: close now, tell it from the loop.

        (Calling ``connection_lost`` from inside the protocol's own ``write``
        would pull the session down under its feet.)
        """
        self._shut(exc, deliver=False)
        self._io.timers.call_later(0, lambda: self._deliver_lost(exc))

    def _shut(self, exc: BaseException | None, deliver: bool = True) -> None:
        sock = self.sock
        if sock is not None:
            self.sock = None
            self._out = None
            self._out_size = 0
            if self._mask:
                try:
                    self._io.selector.unregister(sock)
                except (KeyError, ValueError):
                    pass
                self._mask = 0
            try:
                sock.close()
            except OSError:
                pass
        if deliver:
            self._deliver_lost(exc)

    def _deliver_lost(self, exc: BaseException | None) -> None:
        if not self._lost and self._protocol is not None:
            self._lost = True
            self._protocol.connection_lost(exc)
