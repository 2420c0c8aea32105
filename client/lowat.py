"""How many bytes a plain-text download's ``recv`` waits for (SO_RCVLOWAT).

Without a threshold the client wakes once per arriving segment: on loopback
1,300-3,800 receives per GiB, each a trip through the frame decoder, where the
raw ``sendfile`` baseline's reader makes about 1,150 (helper ``download``,
session 6).  With one, ``recv`` (and the ``poll`` before it) returns once that
many bytes are in -- never more than the DATA frame under way still owes,
bytes the server has promised, and EOF wakes the wait if it dies first.

The threshold adapts to the link, so that a slow one still wakes the reader
several times a second (progress bars move; a timeout still means silence): a
receive that waited longer than ``SLOW_S`` halves it (not below ``LEAST``),
one quicker than ``FAST_S`` doubles it, up to ``MOST``.  A timeout with the threshold up takes
whatever did arrive and drops it to 1.  Control replies are read with 1.
"""

from __future__ import annotations

import select
import socket
import time

__all__ = ["FAST_S", "LEAST", "MOST", "SLOW_S", "START", "ReceiveThreshold"]

#: The highest threshold: one wake-up per 256 KiB.
MOST = 256 * 1024
#: Where a connection starts, and the lowest a slow receive halves it to.
START = 16 * 1024
LEAST = 4 * 1024
SLOW_S = 0.05
FAST_S = 0.005


class ReceiveThreshold:
    """One connection's SO_RCVLOWAT: what it is set to, and what it may grow to."""

    __slots__ = ("current", "cap")

    def __init__(self) -> None:
        self.current = 1          # the socket's setting (1: the kernel's default)
        self.cap = START

    def recv_into(self, sock: socket.socket, view: memoryview, owed: int) -> int:
        """``sock.recv_into(view)``, waiting for up to ``owed`` bytes (what the frame
        under way still owes; 0 between frames)."""
        want = min(self.cap, owed) or 1
        if want != self.current:
            self._set(sock, want)
        if want == 1:
            return sock.recv_into(view)
        start = time.monotonic()
        try:
            n = sock.recv_into(view)
        except TimeoutError:
            # Fewer bytes than the threshold in a whole timeout: take what is there.
            self.cap = 1
            self._set(sock, 1)
            if not select.select([sock], [], [], 0)[0]:
                raise
            return sock.recv_into(view)
        waited = time.monotonic() - start
        if waited > SLOW_S:
            self.cap = max(LEAST, self.cap // 2)
        elif waited < FAST_S and self.cap < MOST:
            self.cap = min(MOST, self.cap * 2)
        return n

    def reset(self, sock: socket.socket) -> None:
        """Back to 1, for control replies."""
        self._set(sock, 1)

    def _set(self, sock: socket.socket, value: int) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, value)
        self.current = value
