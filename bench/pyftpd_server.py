"""pyftpdlib as the benchmarks run it: ``FTPServer`` + ``FTPHandler`` with
their defaults, virtual users from ``DummyAuthorizer`` with full permissions,
the default IOLoop (epoll on Linux), in a process of its own.

    python -m bench.pyftpd_server --root DIR --user NAME --password PW [--users N]
                                  [--max-cons N] [--tls-cert FILE --tls-key FILE]

With ``--users N`` (N > 1) the users are NAME000, NAME001... each with a home
``DIR/<user>``.  ``--max-cons`` changes pyftpdlib's connection cap (default
512 sockets, data connections and passive listeners included); only the
scenarios that hold more sockets than that at once pass it, because
otherwise pyftpdlib would refuse their clients.  It is a cap, not a speed
setting.

With ``--tls-cert``/``--tls-key`` the handler is pyftpdlib's ``TLS_FTPHandler``
(FTPS, explicit ``AUTH TLS``, pyOpenSSL) with its defaults, except that TLS is
required on the control and the data connections (``tls_control_required``,
``tls_data_required``): the FTPS contestant never moves a byte in clear text.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


def _names(user: str, count: int) -> list[str]:
    return [user] if count == 1 else [f"{user}{i:03d}" for i in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyftpd_server")
    parser.add_argument("--root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--max-cons", type=int, default=None)
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    args = parser.parse_args(argv)

    authorizer = DummyAuthorizer()
    for name in _names(args.user, args.users):
        home = os.path.join(args.root, name)
        os.makedirs(home, exist_ok=True)
        authorizer.add_user(name, args.password, home, perm="elradfmwMT")

    base: type[FTPHandler] = FTPHandler
    if args.tls_cert is not None:
        # Only with pyOpenSSL installed (the bench extra) does pyftpdlib define it.
        from pyftpdlib.handlers import TLS_FTPHandler

        base = TLS_FTPHandler

    class Handler(base):  # type: ignore[valid-type,misc]
        pass

    Handler.authorizer = authorizer
    if args.tls_cert is not None:
        Handler.certfile = args.tls_cert
        Handler.keyfile = args.tls_key
        Handler.tls_control_required = True
        Handler.tls_data_required = True
    server = FTPServer((args.host, 0), Handler)
    if args.max_cons is not None:
        server.max_cons = args.max_cons
    host, port = server.socket.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)

    def _terminate(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _terminate)
    server.serve_forever(handle_exit=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
