"""``make run``: the daemon on 127.0.0.1 with data under ./var and a demo user.

Creates the user ``demo`` (password ``demo``) when the data folder has no users
yet, makes (or reuses) the daemon's self-signed TLS certificate under
``<root>/tls/``, prints its fingerprint and the exact ``ftpc --trust`` line
that pins it, then serves over TLS until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys

from storage import Store

from . import certs, cli

DEMO_USER = "demo"
DEMO_PASSWORD = "demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftpd.demo")
    parser.add_argument("--root", default="var")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="2121")
    args = parser.parse_args(argv)
    store = Store(args.root)
    try:
        if not store.list_users():
            store.create_user(DEMO_USER, DEMO_PASSWORD)
            print(f"created demo user {DEMO_USER!r} with password {DEMO_PASSWORD!r}")
    finally:
        store.close()
    fingerprint = certs.ensure_self_signed(args.root).fingerprint()
    print(f"""
The daemon speaks TLS; its certificate fingerprint is
  {fingerprint}
(`ftpd tls fingerprint --root {args.root}` prints it again).

Connect from another terminal with the client in .venv:
  export FTPC_HOST={args.host} FTPC_PORT={args.port}
  export FTPC_USER={DEMO_USER} FTPC_PASSWORD={DEMO_PASSWORD}
  .venv/bin/ftpc --trust {fingerprint} ls -l
  .venv/bin/ftpc put README.md
  .venv/bin/ftpc shell
The first call pins the fingerprint (in ~/.config/ftpc/known_hosts); later
calls need no --trust.  Without it, ftpc on a terminal asks yes/no, as ssh does.
Stop the daemon with Ctrl-C.
""", flush=True)
    return cli.main(["serve", "--root", args.root, "--host", args.host, "--port", args.port])


if __name__ == "__main__":
    sys.exit(main())
