"""The raw-socket baseline: the least a Python program can do to move a file
over TCP.  Blocking sockets, a thread per connection, no protocol beyond a
fixed header:

    request  = op (1 byte: b"P" put, b"G" get, b"S" stat, b"L" list)
               | size (u64, put only, else 0) | name length (u16) | name (UTF-8)
    put:     the client sends ``size`` bytes; the server ``recv_into``s a 1 MiB
             buffer and ``os.write``s each piece to the file, then answers b"K"
    get:     the server answers the size (u64), then the file by ``socket.sendfile``
    stat:    the server answers the file's size (u64; ``MISSING`` if there is none)
    list:    the server answers a length (u64), then that many bytes: one line
             "name<TAB>size<TAB>mtime" per entry of the folder (what ``MLSD`` says)

A name is a relative path inside ``--root`` (no ``..``): the latency scenario
gives each client a folder of its own, as the other servers give each a home.

    python -m bench.raw_server --root DIR [--durable] [--tls-cert F --tls-key F]
                                                    (prints "listening on HOST:PORT")

With ``--durable`` a put is acknowledged only once its bytes are on disk:
``fdatasync`` of the file, then ``fsync`` of its folder (so the new name
survives a power cut too), then b"K".  That is what our daemon's ``put.done``
promises; without the flag b"K" means "in the page cache", which is what
pyftpdlib's ``226`` means.  Both run in the same benchmark, so the cost of the
promise itself is measured, not guessed.

With ``--tls-cert``/``--tls-key`` every connection is wrapped in TLS 1.3 (a
blocking ``ssl`` socket, TLS 1.2 and older refused): puts ``recv_into`` the
same 1 MiB buffer, gets read the file into a reused 1 MiB buffer
(``readinto``; the file is page-cached) and ``sendall`` it, because
``sendfile`` cannot encrypt.  That is the floor for a TLS daemon in Python.

``HEADER`` and ``request`` are shared with the client side in ``bench.clients``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import ssl
import struct
import sys
import threading

HEADER = struct.Struct(">cQH")
SIZE = struct.Struct(">Q")
#: The stat answer for a name that is not a file.
MISSING = (1 << 64) - 1
BUFFER = 1 << 20
#: Connections served at once (the concurrent scenario holds 200); more are closed.
MAX_THREADS = 256


def request(op: bytes, name: str, size: int = 0) -> bytes:
    raw = name.encode("utf-8")
    return HEADER.pack(op, size, len(raw)) + raw


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes or ConnectionError (a loop: TLS sockets take no MSG_WAITALL)."""
    data = b""
    while len(data) < n:
        piece = sock.recv(n - len(data))
        if not piece:
            raise ConnectionError("peer closed early")
        data += piece
    return data


def tls_server_context(cert: str, key: str) -> ssl.SSLContext:
    """TLS 1.3 only, the defaults of ``ssl`` otherwise."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    return ctx


def make_durable(fd: int, folder: str) -> None:
    """The least a server must do before it says "stored": the file's data on
    disk (``fdatasync``; its size is data for this purpose) and its directory
    entry on disk (``fsync`` of the folder)."""
    os.fdatasync(fd)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def confined(root: str, name: str) -> str:
    """``root/name`` for a relative ``name`` that stays inside ``root``."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or "\0" in name:
        raise ConnectionError(f"refused name {name!r}")
    return os.path.join(root, *parts)


def listing(folder: str) -> bytes:
    """One line per entry: name, size and mtime, tab-separated."""
    lines = []
    with os.scandir(folder) as entries:
        for entry in entries:
            st = entry.stat()
            lines.append(f"{entry.name}\t{st.st_size}\t{st.st_mtime:.0f}")
    return "\n".join(lines).encode("utf-8")


def _serve_connection(sock: socket.socket, root: str, durable: bool = False) -> None:
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    with sock:
        while True:
            try:
                head = recv_exactly(sock, HEADER.size)
            except ConnectionError:
                return
            op, size, name_len = HEADER.unpack(head)
            path = confined(root, recv_exactly(sock, name_len).decode("utf-8"))
            if op == b"S":
                try:
                    st = os.stat(path)
                    sock.sendall(SIZE.pack(st.st_size))
                except OSError:
                    sock.sendall(SIZE.pack(MISSING))
            elif op == b"L":
                body = listing(path)
                sock.sendall(SIZE.pack(len(body)) + body)
            elif op == b"P":
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    left = size
                    while left:
                        n = sock.recv_into(view, min(BUFFER, left))
                        if not n:
                            raise ConnectionError("peer closed during put")
                        piece = view[:n]
                        while piece:
                            piece = piece[os.write(fd, piece):]
                        left -= n
                    if durable:
                        make_durable(fd, os.path.dirname(path))
                finally:
                    os.close(fd)
                sock.sendall(b"K")
            elif op == b"G":
                with open(path, "rb") as fh:
                    length = os.fstat(fh.fileno()).st_size
                    sock.sendall(SIZE.pack(length))
                    if isinstance(sock, ssl.SSLSocket):
                        left = length
                        while left:
                            n = fh.readinto(view[:min(BUFFER, left)])
                            if not n:
                                raise ConnectionError("file shrank during get")
                            sock.sendall(view[:n])
                            left -= n
                    else:
                        sock.sendfile(fh, 0, length)
            else:
                return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raw_server")
    parser.add_argument("--root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--durable", action="store_true",
                        help="fdatasync the file and fsync its folder before acknowledging")
    parser.add_argument("--tls-cert", default=None, help="PEM certificate: serve TLS 1.3")
    parser.add_argument("--tls-key", default=None, help="PEM key of --tls-cert")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    tls = tls_server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    os.makedirs(args.root, exist_ok=True)

    listener = socket.create_server((args.host, 0), backlog=128)
    host, port = listener.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)

    def _terminate(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _terminate)
    threads: list[threading.Thread] = []
    try:
        while True:
            sock, _ = listener.accept()
            threads = [t for t in threads if t.is_alive()]
            if len(threads) >= MAX_THREADS:
                sock.close()
                continue
            t = threading.Thread(target=_run, args=(sock, args.root, args.durable, tls),
                                 daemon=True)
            t.start()
            threads.append(t)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        listener.close()
    return 0


def _run(sock: socket.socket, root: str, durable: bool, tls: ssl.SSLContext | None) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        if tls is not None:
            sock.settimeout(60)                 # a stalled handshake ends the thread
            sock = tls.wrap_socket(sock, server_side=True)
            sock.settimeout(None)
        _serve_connection(sock, root, durable)


if __name__ == "__main__":
    sys.exit(main())
