"""Shared helpers of the hostile-client suites (``tests/test_hostile_*.py``).

This module holds no tests.  It gives the other hostile suites:

* ``SourceWire``: a ``Wire`` whose socket is bound to a chosen 127.x.y.z source
  address, so per-address limits and throttles can be exercised from one host;
* ``drain``: read every reply frame until the daemon closes (or a deadline);
* ``module_daemon``: a daemon subprocess shared by a module, with the same
  "no traceback in the log" rule as the function-scoped fixtures;
* ``wait_until`` and ``tree_snapshot`` (names, sizes, mtimes and SHA-256 of a
  folder, to prove nothing outside a home was touched).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import protocol.messages as m
from protocol import DataChunk, MessageStream
from tests.daemon import DaemonProcess, _check_log
from tests.wire import Wire, maybe_tls

__all__ = ["SourceWire", "alive", "close_daemon", "drain", "open_daemon", "served", "tree_snapshot",
           "wait_until"]


class SourceWire(Wire):
    """``Wire`` connecting from ``source`` (any 127.0.0.0/8 address works on Linux)."""

    def __init__(self, host: str, port: int, source: str = "127.0.0.1",
                 timeout: float = 10.0, *, hello: bool = True) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.sock = maybe_tls(self.sock, host, port)
        self.stream = MessageStream("client", max_data=64 << 20)
        self.events: list[Any] = []
        self.ids = itertools.count(1)
        self.greeting = self.recv()
        if hello and isinstance(self.greeting, m.Greeting):
            reply = self.call(m.Hello(id=self.next_id(), protocol=1, client="hostile"))
            assert isinstance(reply, m.HelloOk), reply


def drain(sock: socket.socket, timeout: float = 10.0,
          stream: MessageStream | None = None) -> tuple[list[Any], str]:
    """Every reply until the peer closes.  Returns (replies, how): how is "eof",
    "reset" or "timeout" (the daemon neither answered nor closed: a hang)."""
    stream = stream or MessageStream("client", max_data=64 << 20)
    replies: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return replies, "timeout"
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            return replies, "timeout"
        except OSError:
            return replies, "reset"
        if not chunk:
            stream.feed_eof()
            return replies, "eof"
        replies.extend(e for e in stream.feed(chunk) if not isinstance(e, DataChunk))


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def alive(daemon: DaemonProcess) -> bool:
    return daemon.proc is not None and daemon.proc.poll() is None


def served(wire: Wire) -> bool:
    """A well-behaved, logged-in client still gets ping and ls answered."""
    pong = wire.call(m.Ping(id=wire.next_id(), payload="still there?"))
    listing = wire.call(m.Ls(id=wire.next_id(), path="/"))
    return isinstance(pong, m.Pong) and pong.payload == "still there?" \
        and isinstance(listing, m.LsOk)


def open_daemon(root: Path, **settings: Any) -> DaemonProcess:
    """A started daemon subprocess; pair with ``close_daemon``."""
    return DaemonProcess(root, **settings).start()


def close_daemon(daemon: DaemonProcess) -> None:
    """Stop it and fail if its log holds a traceback (as the shared fixtures do)."""
    try:
        daemon.stop()
    finally:
        daemon.kill()
    _check_log(daemon)


def tree_snapshot(top: Path) -> dict[str, tuple[str, int, int, str]]:
    """relative path -> (kind, size, mtime_ns, sha256 or link target) for everything under
    ``top``, the folder itself included (without following symlinks)."""
    out: dict[str, tuple[str, int, int, str]] = {}

    def record(path: Path) -> None:
        st = path.lstat()
        rel = str(path.relative_to(top))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", st.st_size, st.st_mtime_ns, os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", 0, st.st_mtime_ns, "")
            for child in sorted(path.iterdir()):
                record(child)
        else:
            out[rel] = ("file", st.st_size, st.st_mtime_ns,
                        hashlib.sha256(path.read_bytes()).hexdigest())

    record(top)
    return out
