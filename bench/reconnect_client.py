"""One reconnecting client, in a process of its own, for ``workers-reconnect``.

    python -m bench.reconnect_client --port P --cafile F --token T --cycles N

Several of these run at once so that the clients are not one Python process
bound by one GIL (a thread per client would measure the harness, not the
daemon's workers).  Each connects once (untimed: that fetches a TLS session
ticket, as a client that reconnects has one), prints ``ready``, waits for a
line on stdin, then runs ``N`` x (connect + token login + quit) over TLS with
session resumption, and prints one JSON line: seconds, its own CPU seconds for
the loop, and how many handshakes resumed a session.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from client import Client

HOST = "127.0.0.1"
#: No loop runs longer than this, whatever --cycles says.
DEADLINE_S = 300.0


def _cycle(port: int, cafile: str, token: str) -> bool:
    """Connect, log in with the token, quit; True if the handshake resumed."""
    c = Client(HOST, port, timeout=30, tls=True, cacert=cafile)
    try:
        c.connect()
        conn = getattr(c, "_conn", None)
        sock = getattr(conn, "sock", None)
        reused = bool(getattr(sock, "session_reused", False))
        c.login(token=token)
        c.quit()
        return reused
    finally:
        c.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reconnect_client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--cycles", type=int, required=True)
    args = parser.parse_args(argv)

    _cycle(args.port, args.cafile, args.token)          # warm-up: imports, a ticket
    print("ready", flush=True)
    if not sys.stdin.readline():
        return 1
    end = time.monotonic() + DEADLINE_S
    reused = done = 0
    cpu0, start = time.process_time(), time.perf_counter()
    while done < args.cycles and time.monotonic() < end:
        reused += _cycle(args.port, args.cafile, args.token)
        done += 1
    seconds = time.perf_counter() - start
    print(json.dumps({"cycles": done, "seconds": seconds, "cpu_s": time.process_time() - cpu0,
                      "resumed": reused}), flush=True)
    return 0 if done == args.cycles else 1


if __name__ == "__main__":
    sys.exit(main())
