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

from bench.clients import ours_tls_reconnect

#: No loop runs longer than this, whatever --cycles says.
DEADLINE_S = 300.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reconnect_client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--cycles", type=int, required=True)
    args = parser.parse_args(argv)

    ours_tls_reconnect(args.port, args.cafile, args.token)          # warm-up: imports, a ticket
    print("ready", flush=True)
    if not sys.stdin.readline():
        return 1
    end = time.monotonic() + DEADLINE_S
    reused = done = 0
    cpu0, start = time.process_time(), time.perf_counter()
    while done < args.cycles and time.monotonic() < end:
        reused += ours_tls_reconnect(args.port, args.cafile, args.token)
        done += 1
    seconds = time.perf_counter() - start
    print(json.dumps({"cycles": done, "seconds": seconds, "cpu_s": time.process_time() - cpu0,
                      "resumed": reused}), flush=True)
    return 0 if done == args.cycles else 1


if __name__ == "__main__":
    sys.exit(main())
