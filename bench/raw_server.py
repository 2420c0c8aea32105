"""The raw-socket baseline: the least a Python program can do to move a file
over TCP.  Blocking sockets, a thread per connection, no protocol beyond a
fixed header:

    request  = op (1 byte: b"P" put, b"G" get) | size (u64, put only, else 0)
               | name length (u16) | name (UTF-8)
    put:     the client sends ``size`` bytes; the server ``recv_into``s a 1 MiB
             buffer and ``os.write``s each piece to the file, then answers b"K"
    get:     the server answers the size (u64), then the file by ``socket.sendfile``

    python -m bench.raw_server --root DIR     (prints "listening on HOST:PORT")

``HEADER`` and ``request`` are shared with the client side in ``bench.clients``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import struct
import sys
import threading

HEADER = struct.Struct(">cQH")
SIZE = struct.Struct(">Q")
BUFFER = 1 << 20
MAX_THREADS = 64


def request(op: bytes, name: str, size: int = 0) -> bytes:
    raw = name.encode("utf-8")
    return HEADER.pack(op, size, len(raw)) + raw


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = sock.recv(n, socket.MSG_WAITALL) if n else b""
    if len(data) != n:
        raise ConnectionError("peer closed early")
    return data


def _serve_connection(sock: socket.socket, root: str) -> None:
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    with sock:
        while True:
            head = sock.recv(HEADER.size, socket.MSG_WAITALL)
            if not head:
                return
            if len(head) != HEADER.size:
                raise ConnectionError("cut header")
            op, size, name_len = HEADER.unpack(head)
            name = os.path.basename(recv_exactly(sock, name_len).decode("utf-8"))
            path = os.path.join(root, name)
            if op == b"P":
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
                finally:
                    os.close(fd)
                sock.sendall(b"K")
            elif op == b"G":
                with open(path, "rb") as fh:
                    length = os.fstat(fh.fileno()).st_size
                    sock.sendall(SIZE.pack(length))
                    sock.sendfile(fh, 0, length)
            else:
                return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raw_server")
    parser.add_argument("--root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
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
            t = threading.Thread(target=_run, args=(sock, args.root), daemon=True)
            t.start()
            threads.append(t)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        listener.close()
    return 0


def _run(sock: socket.socket, root: str) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        _serve_connection(sock, root)


if __name__ == "__main__":
    sys.exit(main())
