"""``ftpc``: the command-line client.

    ftpc [--host [USER@]HOST[:PORT]|REMOTE] [--port N] [--user U] [--json] [--quiet]
         [--retries N] COMMAND ARGS

Commands: put, get (both with -r), mput, mget, ls, stat, mkdir, rmdir, rm, mv,
pwd, whoami, quota, hash, uploads, abort, register, ping, logout, shell.
Defaults come from the environment -- FTPC_HOST (127.0.0.1), FTPC_PORT (2121),
FTPC_USER, FTPC_PASSWORD -- and from named remotes in
~/.config/ftpc/config.toml (mode 0600; see ``client.remotes``).  The password
comes from FTPC_PASSWORD, the cached session token of an earlier login, the
system keyring (service "ftpc", entry USER@HOST:PORT, with the optional keyring
package), ~/.netrc, or the terminal; never from the command line.

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
    141  stdout closed early (ftpc ls | head): the output was cut short, quietly
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from . import tokens
from .client import Client
from .commands import COMMANDS, App
from .connection import FAST as FAST_DIGESTS
from .errors import AuthError, FtpError
from .failures import EXIT_OK, EXIT_PIPE, EXIT_TABLE, SomeFailed, UsageError
from .output import Outcome, Output
from .remotes import Remote, keyring_password, netrc_password, resolve
from .results import Session
from .trust import terminal_prompt

DEFAULT_RETRIES = 3


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("ftpd-reactor")
    except PackageNotFoundError:
        return "0.1.0"


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked for: reading the package metadata costs
    more than parsing every other argument of a one-shot ``ftpc`` call."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(f"ftpc {version()}")
        parser.exit()


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


def _add_connection_options(parser: argparse.ArgumentParser, d: object) -> None:
    """Where to connect and how.  (Transport options such as TLS trust go here.)"""
    parser.add_argument("--host", "-H", default=d,
                        help="[USER@]HOST[:PORT] or a remote named in ~/.config/ftpc/"
                             "config.toml (env FTPC_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=d,
                        help="server port (env FTPC_PORT, default 2121)")
    parser.add_argument("--user", default=d,
                        help="user name (env FTPC_USER); the password comes from "
                             "FTPC_PASSWORD, a saved session, ~/.netrc or the terminal")
    parser.add_argument("--timeout", type=float, default=d,
                        help="seconds to wait for the server (default 30)")
    _add_tls_options(parser, d)


def _add_output_options(parser: argparse.ArgumentParser, d: object) -> None:
    parser.add_argument("--json", action="store_true", default=d,
                        help="print results as one JSON document")
    parser.add_argument("--quiet", "-q", action="store_true", default=d,
                        help="no progress bars, transfer reports or informational messages")
    parser.add_argument("--retries", type=_count, default=d,
                        help=f"reconnect and resume a dropped transfer up to N times "
                             f"(default {DEFAULT_RETRIES})")


#: Defaults of the global options (None: resolved later, see ``client.remotes``).
GLOBAL_DEFAULTS = {"host": None, "port": None, "user": None, "timeout": 30.0,
                   "json": False, "quiet": False, "retries": DEFAULT_RETRIES,
                   "cacert": None, "trust": None, "plaintext": False}


def _add_global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options valid before the command; repeated on every subcommand (without
    defaults) so ``ftpc ls --json`` works as well as ``ftpc --json ls``."""
    d = None if defaults else argparse.SUPPRESS
    _add_connection_options(parser, d)
    _add_output_options(parser, d)
    if defaults:
        parser.set_defaults(**GLOBAL_DEFAULTS)


EXTRA_COMMANDS = {
    "register": "create an account (asks user and password; does not log in)",
    "logout": "forget the saved session token for this user and server",
    "shell": "interactive session (like ftp): cd, ls, put, get, mget, lls, !cmd ...",
}


def _add_tls_options(parser: argparse.ArgumentParser, d: object) -> None:
    """Server authentication (client/trust.py; failures exit with status 9), and the
    digest transfers are verified with."""
    parser.add_argument("--cacert", metavar="FILE", default=d,
                        help="CA bundle the server's certificate must chain to "
                             "(env FTPC_CACERT; default: the system store, then pinning)")
    parser.add_argument("--trust", metavar="SHA256:...", default=d,
                        help="accept and pin this server fingerprint (env FTPC_TRUST; "
                             "see `ftpd tls fingerprint`); pins live in FTPC_KNOWN_HOSTS, "
                             "default ~/.config/ftpc/known_hosts")
    parser.add_argument("--digest", choices=("sha256", "blake3"), default=d,
                        help="what put and get verify with (env FTPC_DIGEST; default "
                             "sha256): blake3 is about twice as fast where the server "
                             "has it (SHA-256 otherwise); --json then reports \"blake3\"")
    parser.add_argument("--plaintext", action="store_true", default=d,
                        help="no TLS: everything, password included, crosses the network "
                             "in clear text; only for a trusted network")


def _digests(args: argparse.Namespace) -> tuple[str, ...]:
    """What hello offers: SHA-256, or BLAKE3 first with ``--digest blake3`` (and for
    ``hash --blake3``, which the server answers only in a BLAKE3 session)."""
    if getattr(args, "blake3", False):
        return FAST_DIGESTS
    choice = args.digest or os.environ.get("FTPC_DIGEST") or "sha256"
    if choice not in ("sha256", "blake3"):
        raise UsageError(f"FTPC_DIGEST must be sha256 or blake3, not {choice!r}")
    return FAST_DIGESTS if choice == "blake3" else ("sha256",)


def _client_security(args: argparse.Namespace, out: Output) -> dict[str, object]:
    """Client() keywords for TLS: a yes/no prompt only on a terminal, as ssh."""
    if args.plaintext:
        return {"tls": False}
    env = os.environ
    cacert = args.cacert or env.get("FTPC_CACERT") or None
    trust = args.trust or env.get("FTPC_TRUST") or getattr(args, "fingerprint", None) or None
    tty = sys.stdin.isatty() and sys.stderr.isatty()
    # Trust material means TLS whatever the default (--cacert/--trust ask for it).
    tls = True if (cacert or trust) else None
    return {"tls": tls, "cacert": cacert, "trust": trust,
            "prompt": terminal_prompt if tty else None, "notice": out.warn}


def build_parser() -> Parser:
    parser = Parser(prog="ftpc", description="Client for the ftpd file-transfer daemon: "
                    "resumable, SHA-256-verified uploads and downloads.",
                    epilog=EXIT_TABLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_VersionAction,
                        help="show program's version number and exit")
    _add_global_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        _add_global_options(cmd.add_to(sub), defaults=False)
    for name, text in EXTRA_COMMANDS.items():
        _add_global_options(sub.add_parser(name, help=text, description=text),
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


def prompt_password(user: str, host: str, *, confirm: bool = False) -> str:
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


def ask_password(user: str, host: str, *, confirm: bool = False) -> str:
    return os.environ.get("FTPC_PASSWORD") or prompt_password(user, host, confirm=confirm)


def login(app: App, args: argparse.Namespace) -> None:
    """Log in: FTPC_PASSWORD, else a cached token, else the system keyring (if the
    ``keyring`` package is installed), else ~/.netrc, else the prompt (whose token
    is then cached)."""
    client = app.client
    env_password = os.environ.get("FTPC_PASSWORD")
    user = args.user
    if not user and not env_password:
        found = netrc_password(client.host, None)
        user = found[0] if found else None
    if not user:
        client.reconnect_fresh()        # a server that is down fails before any prompt
        user = ask_user(args, app.out)
    if env_password:
        _login(client, user, env_password, want_token=True)
        return
    token = tokens.get(user, client.host, client.port)
    if token is not None:
        try:
            if _login(client, token=token).user == user:
                return
        except AuthError:
            pass
        tokens.forget(user, client.host, client.port)     # expired or refused
        client.reconnect_fresh()
    stored = keyring_password(user, client.host, client.port)
    if stored is not None:
        _login(client, user, stored, want_token=True)
        return
    found = netrc_password(client.host, user)
    if found is not None:
        _login(client, user, found[1], want_token=True)
        return
    client.reconnect_fresh()
    session = client.login(user, prompt_password(user, client.host), want_token=True)
    if session.token:
        tokens.put(user, client.host, client.port, session.token)


def _login(client: Client, user: str | None = None, password: str | None = None,
           **fields: Any) -> Session:
    """Log in; not connected yet, connect with the login riding on hello
    (``Client.connect_login``: one round trip fewer for every command)."""
    if client.connected:
        return client.login(user, password, **fields)
    return client.connect_login(user, password, **fields)


def register(app: App, args: argparse.Namespace) -> Outcome:
    user = ask_user(args, app.out)
    created = app.client.register(user, ask_password(user, app.client.host, confirm=True))
    return Outcome({"user": created}, f"registered {created}")


def logout(app: App, args: argparse.Namespace) -> Outcome:
    client = app.client
    user = ask_user(args, app.out)
    token = tokens.get(user, client.host, client.port)
    if token is not None:
        try:
            client.login(token=token)
            client.logout()
        except FtpError:
            pass                    # expired already: forgetting it is all there is to do
    forgot = tokens.forget(user, client.host, client.port)
    where = f"{user}@{client.host}:{client.port}"
    return Outcome({"user": user, "host": client.host, "port": client.port,
                    "forgotten": forgot},
                   f"logged out {where}" if forgot else f"no saved session for {where}")


# ------------------------------------------------------------ main


def _resolve(args: argparse.Namespace) -> Remote:
    remote = resolve(args.host, args.port, args.user)
    args.host, args.port, args.user = remote.host, remote.port, remote.user
    args.fingerprint = remote.fingerprint      # a named remote's pinned server, if any
    return remote


def _stdout_gone() -> int:
    """stdout's reader went away (``| head``): stop quietly, as cat and ls do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    out = Output()
    try:
        args = build_parser().parse_args(argv)
        _resolve(args)
    except UsageError as exc:
        return out.fail(exc)
    except SystemExit as exc:            # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    out = Output(json_mode=args.json, quiet=args.quiet)
    try:
        client = Client(args.host, args.port, timeout=args.timeout,
                        digests=_digests(args), **_client_security(args, out))
    except UsageError as exc:            # a bad FTPC_DIGEST
        return out.fail(exc)
    except ValueError as exc:            # a malformed --trust
        return out.fail(UsageError(str(exc)))
    app = App(client, out, retries=args.retries)
    try:
        command = COMMANDS.get(args.command)
        if args.command != "shell" and not (command and command.login):
            client.connect()            # (a command that logs in connects with its login)
        if args.command == "register":
            outcome = register(app, args)
        elif args.command == "logout":
            outcome = logout(app, args)
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
    except BrokenPipeError:
        return _stdout_gone()
    except (FtpError, OSError, UsageError, SomeFailed, KeyboardInterrupt) as exc:
        try:
            return out.fail(exc)
        except BrokenPipeError:
            return _stdout_gone()
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
