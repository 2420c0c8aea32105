"""Client-side operations of each contestant.

* ours: the project's ``client.Client`` (and, for thousands of idle
  connections, bare sockets speaking the protocol through ``protocol``);
* pyftpdlib: the standard library's ``ftplib`` with 256 KiB blocks;
* raw: blocking sockets, ``socket.sendfile`` up and ``recv_into`` a 1 MiB
  buffer down (see ``bench.raw_server``).
"""

from __future__ import annotations

import contextlib
import ftplib
import os
import re
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from client import Client
from protocol import MessageStream, encode
from protocol.messages import ErrorReply, Hello, Login, LoginOk

from .common import Deadline
from .raw_server import MISSING, SIZE, recv_exactly, request
from .servers import HOST, PASSWORD, USER
from .tls import client_context

FTP_BLOCK = 256 * 1024          # ftplib storbinary/retrbinary blocksize
RAW_BUFFER = 1 << 20
BATCH = 100                     # idle connections opened per batch


# ---------------------------------------------------------------- ours


def tls_options(cafile: Path | None) -> dict[str, Any]:
    """Keyword arguments that make ``client.Client`` use TLS trusting ``cafile``
    (a CA bundle: the chain is checked, with the host name), or with None plain
    text -- ``Client(..., tls=, cacert=, trust=, known_hosts=, prompt=, notice=)``."""
    if cafile is None:
        return {"tls": False}
    return {"tls": True, "cacert": str(cafile)}


def ours(port: int, user: str | None = USER, password: str | None = PASSWORD, *,
         token: str | None = None, want_token: bool = False, timeout: float = 120.0,
         cafile: Path | None = None, digests: tuple[str, ...] | None = None) -> Client:
    """A connected ``client.Client``, logged in unless ``user`` and ``token`` are None;
    over TLS trusting ``cafile`` when one is given; offering ``digests`` at hello."""
    c = Client(HOST, port, timeout=timeout, digests=digests, **tls_options(cafile))
    try:
        # hello and login in one round trip with the connect (Client.connect_login)
        if token is not None:
            c.connect_login(token=token)
        elif user is not None:
            c.connect_login(user, password, want_token=want_token)
        else:
            c.connect()
    except BaseException:
        c.close()
        raise
    return c


def ours_tls_reconnect(port: int, cafile: str, token: str) -> bool:
    """Connect + token login + quit over TLS; True if the handshake resumed a session."""
    c = Client(HOST, port, timeout=30, tls=True, cacert=cafile)
    try:
        c.connect_login(token=token)    # hello and login ride with the handshake's end
        sock = getattr(getattr(c, "_conn", None), "sock", None)
        reused = bool(getattr(sock, "session_reused", False))
        c.quit()
        return reused
    finally:
        c.close()


def ours_token(port: int, cafile: Path | None = None) -> str:
    """A session token for USER (one password login; over TLS with ``cafile``)."""
    c = ours(port, want_token=True, cafile=cafile)
    try:
        token = c.session.token if c.session else None
        if not token:
            raise RuntimeError("the daemon issued no token")
        return token
    finally:
        c.quit()


def _read_frames(sock: socket.socket, stream: MessageStream, want_id: int,
                 deadline: Deadline) -> None:
    """Read until the reply to ``want_id`` (a LoginOk) arrives."""
    while True:
        deadline.check("idle connection login")
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the daemon closed an idle connection during login")
        for event in stream.feed(data):
            if isinstance(event, ErrorReply):
                raise RuntimeError(f"idle login refused: {event.code}: {event.message}")
            if isinstance(event, LoginOk) and event.id == want_id:
                return


def open_idle_ours(port: int, token: str, count: int, deadline: Deadline,
                   cafile: Path | None = None) -> list[socket.socket]:
    """``count`` connections logged in with ``token`` and then left idle; over TLS 1.3
    trusting ``cafile`` when it is given (every handshake a full one).

    Bare sockets, not ``Client`` objects (which carry a 1 MiB receive buffer
    each): hello and login are pipelined right after connect, and the
    greeting, hello and login replies read back.  Opened in batches.
    """
    ctx = client_context(cafile) if cafile is not None else None
    hello = encode(Hello(id=1, protocol=1, client="bench-idle"))
    login = encode(Login(id=2, token=token))
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            batch = []
            for _ in range(min(BATCH, count - len(socks))):
                deadline.check("opening idle connections")
                s = socket.create_connection((HOST, port), timeout=max(1.0, deadline.left()))
                if ctx is not None:
                    try:
                        s = ctx.wrap_socket(s, server_hostname=HOST)
                    except BaseException:
                        s.close()
                        raise
                batch.append(s)
                socks.append(s)
                s.sendall(hello + login)
            for s in batch:
                _read_frames(s, MessageStream("client"), 2, deadline)
        return socks
    except BaseException:
        close_all(socks)
        raise


# ---------------------------------------------------------------- pyftpdlib via ftplib


def ftp(port: int, user: str = USER, password: str = PASSWORD,
        timeout: float = 120.0) -> ftplib.FTP:
    f = ftplib.FTP()
    f.connect(HOST, port, timeout=timeout)
    try:
        f.login(user, password)
    except BaseException:
        f.close()
        raise
    return f


def ftps(port: int, cafile: Path, user: str = USER, password: str = PASSWORD,
         timeout: float = 120.0, protect_data: bool = True) -> ftplib.FTP_TLS:
    """An FTPS session (``ftplib.FTP_TLS``: ``AUTH TLS`` before ``USER``/``PASS``,
    TLS 1.3 trusting ``cafile``, address checked), with ``PROT P`` (encrypted
    data connections) unless ``protect_data`` is false."""
    f = ftplib.FTP_TLS(context=client_context(cafile), timeout=timeout)
    try:
        f.connect(HOST, port, timeout=timeout)
        f.login(user, password)              # sends AUTH TLS first
        if protect_data:
            f.prot_p()
    except BaseException:
        f.close()
        raise
    return f


def ftp_put(f: ftplib.FTP, local: Path, remote: str) -> None:
    with open(local, "rb") as fh:
        f.storbinary(f"STOR {remote}", fh, blocksize=FTP_BLOCK)


def ftp_get(f: ftplib.FTP, remote: str, callback: Callable[[bytes], object]) -> None:
    f.retrbinary(f"RETR {remote}", callback, blocksize=FTP_BLOCK)


_FINAL_LINE = re.compile(rb"(?:^|\r\n)(\d{3}) [^\r\n]*\r\n$")


def _ftp_reply(sock: socket.socket, deadline: Deadline) -> int:
    data = b""
    while True:
        deadline.check("idle FTP login")
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("pyftpdlib closed an idle connection during login")
        data += chunk
        found = _FINAL_LINE.search(data)
        if found:
            return int(found.group(1))


def open_idle_ftp(port: int, count: int, deadline: Deadline) -> list[socket.socket]:
    """``count`` FTP control connections logged in (USER/PASS) and left idle."""
    socks: list[socket.socket] = []
    steps = ((None, 220), (f"USER {USER}\r\n".encode(), 331),
             (f"PASS {PASSWORD}\r\n".encode(), 230))
    try:
        while len(socks) < count:
            batch = []
            for _ in range(min(BATCH, count - len(socks))):
                deadline.check("opening idle FTP connections")
                s = socket.create_connection((HOST, port), timeout=max(1.0, deadline.left()))
                batch.append(s)
                socks.append(s)
            for line, expected in steps:
                for s in batch:
                    if line is not None:
                        s.sendall(line)
                for s in batch:
                    code = _ftp_reply(s, deadline)
                    if code != expected:
                        raise RuntimeError(f"idle FTP login: got {code}, expected {expected}")
        return socks
    except BaseException:
        close_all(socks)
        raise


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


# ---------------------------------------------------------------- raw sockets


def raw_connect(port: int, timeout: float = 120.0,
                cafile: Path | None = None) -> socket.socket:
    """A connection to the raw server; TLS 1.3 (handshake done) trusting ``cafile``."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    # One request, one answer: Nagle must not hold a put's last segment for the ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if cafile is None:
        return sock
    try:
        return client_context(cafile).wrap_socket(sock, server_hostname=HOST)
    except BaseException:
        sock.close()
        raise


def raw_put(sock: socket.socket, local: Path, remote: str) -> None:
    """Upload ``local``: ``sendfile`` on a plain socket; on a TLS socket (which
    ``sendfile`` cannot encrypt) ``readinto`` a reused 1 MiB buffer + ``sendall``."""
    size = local.stat().st_size
    sock.sendall(request(b"P", remote, size))
    with open(local, "rb") as fh:
        if isinstance(sock, ssl.SSLSocket):
            buf = memoryview(bytearray(RAW_BUFFER))
            sent = 0
            while sent < size:
                n = fh.readinto(buf[:min(RAW_BUFFER, size - sent)])
                if not n:
                    break
                sock.sendall(buf[:n])
                sent += n
        else:
            sent = sock.sendfile(fh, 0, size)
    if sent != size or recv_exactly(sock, 1) != b"K":
        raise RuntimeError("raw put failed")


def raw_stat(sock: socket.socket, remote: str) -> int:
    """The size of ``remote`` (what ``SIZE`` asks an FTP server)."""
    sock.sendall(request(b"S", remote))
    (size,) = SIZE.unpack(recv_exactly(sock, SIZE.size))
    if size == MISSING:
        raise FileNotFoundError(remote)
    return size


def raw_list(sock: socket.socket, remote: str) -> list[str]:
    """The entries of the folder ``remote``: "name<TAB>size<TAB>mtime" each (``MLSD``)."""
    sock.sendall(request(b"L", remote))
    (length,) = SIZE.unpack(recv_exactly(sock, SIZE.size))
    body = recv_exactly(sock, length) if length else b""
    return body.decode("utf-8").split("\n") if body else []


def raw_get(sock: socket.socket, remote: str, fd: int | None = None) -> int:
    """Download ``remote``; write it to ``fd`` or drop it.  Returns the size."""
    sock.sendall(request(b"G", remote))
    (size,) = SIZE.unpack(recv_exactly(sock, SIZE.size))
    buf = bytearray(RAW_BUFFER)
    view = memoryview(buf)
    left = size
    while left:
        n = sock.recv_into(view, min(RAW_BUFFER, left))
        if not n:
            raise ConnectionError("raw server closed during get")
        if fd is not None:
            piece = view[:n]
            while piece:
                piece = piece[os.write(fd, piece):]
        left -= n
    return size
