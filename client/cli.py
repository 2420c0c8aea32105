"""``ftpc``: the command-line client.

    ftpc [--host H] [--port N] [--user U] [--json] [--quiet] [--retries N] COMMAND ARGS

Commands: put, get (both with -r), ls, stat, mkdir, rmdir, rm, mv, pwd, whoami,
quota, hash, uploads, abort, register, ping, shell.  Defaults come from the
environment: FTPC_HOST (127.0.0.1), FTPC_PORT (2121), FTPC_USER, FTPC_PASSWORD;
without FTPC_PASSWORD the password is asked for (getpass).  Each run logs in
afresh; nothing is cached on disk.

Results go to stdout (one JSON document with --json); progress bars,
notices and errors go to stderr, errors as one ``ftpc: error: CODE: message``
line.  Exit status:

    0    success
    1    other error (the server refused for another reason, local I/O error)
    2    usage: bad command line, or no user/password available
    3    connection: cannot connect, connection lost, timeout, protocol violation
    4    authentication: wrong user or password, locked out, disabled account
    5    not found: the remote or local file or folder does not exist
    6    quota: the user's quota or the server's disk is full
    7    integrity: SHA-256 or size mismatch, or the local file changed during upload
    8    path conflict: exists (use --overwrite), is / is not a folder, not empty
    9    server not authenticated: unknown or changed fingerprint, bad certificate
    130  interrupted (Ctrl-C); a partial transfer resumes on the next run
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from .client import Client
from .commands import COMMANDS, App
from .errors import FtpError
from .failures import EXIT_OK, EXIT_TABLE, SomeFailed, UsageError, describe
from .output import Outcome, Output
from .trust import terminal_prompt

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2121
DEFAULT_RETRIES = 3


class Parser(argparse.ArgumentParser):
    """Usage errors become exceptions: one error line, and the shell survives them."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return port


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}")
    return value


def _add_global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options valid before the command; repeated on every subcommand (without
    defaults) so ``ftpc ls --json`` works as well as ``ftpc --json ls``."""
    env = os.environ

    def d(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--host", default=d(env.get("FTPC_HOST") or DEFAULT_HOST),
                        help="server address (env FTPC_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=d(env.get("FTPC_PORT") or DEFAULT_PORT),
                        help="server port (env FTPC_PORT, default 2121)")
    parser.add_argument("--user", default=d(env.get("FTPC_USER")),
                        help="user name (env FTPC_USER; password from FTPC_PASSWORD or asked)")
    parser.add_argument("--json", action="store_true", default=d(False),
                        help="print results as one JSON document")
    parser.add_argument("--quiet", "-q", action="store_true", default=d(False),
                        help="no progress bars or informational messages")
    parser.add_argument("--retries", type=_count, default=d(DEFAULT_RETRIES),
                        help=f"reconnect and resume a dropped transfer up to N times "
                             f"(default {DEFAULT_RETRIES})")
    parser.add_argument("--timeout", type=float, default=d(30.0),
                        help="seconds to wait for the server (default 30)")
    _add_tls_options(parser, d)


def _add_tls_options(parser: argparse.ArgumentParser, d: Callable[[object], object]) -> None:
    """Server authentication (client/trust.py); failures exit with status 9."""
    env = os.environ
    parser.add_argument("--cacert", metavar="FILE", default=d(env.get("FTPC_CACERT")),
                        help="CA bundle the server's certificate must chain to "
                             "(env FTPC_CACERT; default: the system store, then pinning)")
    parser.add_argument("--trust", metavar="SHA256:...", default=d(env.get("FTPC_TRUST")),
                        help="accept and pin this server fingerprint (env FTPC_TRUST; "
                             "see `ftpd tls fingerprint`); pins live in FTPC_KNOWN_HOSTS, "
                             "default ~/.config/ftpc/known_hosts")
    parser.add_argument("--plaintext", action="store_true", default=d(False),
                        help="no TLS: everything, password included, crosses the network "
                             "in clear text; only for a trusted network")


def _client_security(args: argparse.Namespace, out: Output) -> dict[str, object]:
    """Client() keywords for TLS: a yes/no prompt only on a terminal, as ssh."""
    if args.plaintext:
        return {"tls": False}
    tty = sys.stdin.isatty() and sys.stderr.isatty()
    # Trust material means TLS whatever the default (--cacert/--trust ask for it).
    tls = True if (args.cacert or args.trust) else None
    return {"tls": tls, "cacert": args.cacert, "trust": args.trust,
            "prompt": terminal_prompt if tty else None, "notice": out.warn}


def build_parser() -> Parser:
    parser = Parser(prog="ftpc", description="Client for the ftpd file-transfer daemon: "
                    "resumable, SHA-256-verified uploads and downloads.",
                    epilog=EXIT_TABLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_global_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        _add_global_options(cmd.add_to(sub), defaults=False)
    _add_global_options(sub.add_parser("register", help="create an account (asks user and "
                                       "password; does not log in)"), defaults=False)
    _add_global_options(sub.add_parser("shell", help="interactive session (like ftp)"),
                        defaults=False)
    return parser


# ------------------------------------------------------------ credentials


def ask_user(args: argparse.Namespace, out: Output) -> str:
    if args.user:
        return args.user
    if not sys.stdin.isatty():
        raise UsageError("no user: give --user or set FTPC_USER")
    out.stderr.write("User: ")
    out.stderr.flush()
    user = sys.stdin.readline().strip()
    if not user:
        raise UsageError("no user given")
    return user


def ask_password(user: str, host: str, *, confirm: bool = False) -> str:
    password = os.environ.get("FTPC_PASSWORD")
    if password:
        return password
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", getpass.GetPassWarning)
            password = getpass.getpass(f"Password for {user}@{host}: ")
            if confirm and sys.stdin.isatty() and getpass.getpass("Again: ") != password:
                raise UsageError("the passwords differ")
    except EOFError:
        raise UsageError("no password: set FTPC_PASSWORD or run on a terminal")
    if not password:
        raise UsageError("empty password")
    return password


def login(app: App, args: argparse.Namespace) -> None:
    user = ask_user(args, app.out)
    app.client.login(user, ask_password(user, args.host), want_token=True)


def register(app: App, args: argparse.Namespace) -> Outcome:
    user = ask_user(args, app.out)
    created = app.client.register(user, ask_password(user, args.host, confirm=True))
    return Outcome({"user": created}, f"registered {created}")


# ------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    out = Output()
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        failure = describe(exc)
        out.error(failure)
        return failure.exit_status
    except SystemExit as exc:            # --help
        return exc.code if isinstance(exc.code, int) else 0
    out = Output(json_mode=args.json, quiet=args.quiet)
    try:
        client = Client(args.host, args.port, timeout=args.timeout,
                        **_client_security(args, out))
    except ValueError as exc:            # a malformed --trust
        failure = describe(UsageError(str(exc)))
        out.error(failure)
        return failure.exit_status
    app = App(client, out, retries=args.retries)
    try:
        client.connect()
        if args.command == "register":
            outcome = register(app, args)
        elif args.command == "shell":
            from .shell import Shell

            login(app, args)
            return Shell(app, args).run()
        else:
            cmd = COMMANDS[args.command]
            if cmd.login:
                login(app, args)
            outcome = cmd.run(app, args)
        out.result(outcome)
        try:
            client.quit()
        except FtpError:
            pass
        return EXIT_OK
    except (FtpError, OSError, UsageError, SomeFailed, KeyboardInterrupt) as exc:
        failure = describe(exc)
        out.error(failure)
        return failure.exit_status
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
