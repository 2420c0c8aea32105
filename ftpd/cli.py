"""``ftpd``: run the daemon and manage its users.

    ftpd serve --root DIR [--host H] [--port N] [--config FILE] [--allow-register]
               [--workers N|auto] [--log-level LEVEL] [--set NAME=VALUE ...]
    ftpd user add NAME --root DIR [--quota SIZE] [--password-stdin]
    ftpd user del|passwd|disable|enable NAME --root DIR
    ftpd user quota NAME SIZE --root DIR
    ftpd user unlock NAME --root DIR
    ftpd user list --root DIR
    ftpd serve ... [--tls-cert FILE --tls-key FILE | --plaintext]
    ftpd serve|user ... --metadata postgresql://... --blobs s3://BUCKET?endpoint=URL&region=R
                                        (the object-store backend instead of --root)
    ftpd migrate --from-root DIR --metadata URL --blobs URL
    ftpd tls fingerprint --root DIR     (the SHA256:... clients pin)
    ftpd tls rotate --root DIR          (a new self-signed pair; clients will refuse it
                                         until they trust the new fingerprint)

``serve`` takes the data-root lock (``<root>/ftpd.lock``): a second daemon on
the same root exits with status 1 and one line saying which pid holds it.
``--workers N`` (the setting ``worker_processes``; ``auto``: one per CPU) runs
N reactor processes under a supervisor (``ftpd/supervisor.py``); 1, the
default, is one process as before.

S3 credentials come from the AWS environment variables or credentials file and
a PostgreSQL password from PGPASSWORD or ~/.pgpass, never from the command line.

SIZE accepts bytes or binary units: 1G, 500M, 64K, or ``unlimited``.  Without
``--password-stdin`` a password is asked for twice on the terminal.  ``user del``
deletes the user's files too: it asks first, or needs ``--yes``.  Every command
but ``user add`` refuses a data folder that does not exist (a typo in ``--root``
must not create an empty one).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from storage import StorageError, Store, parse_size
from storage.shared import RootLocked, lock_root
from storage.store import DB_NAME

from . import config as configuration
from . import logs


def _setting(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip().replace("-", "_"), value


#: The quota ``unlimited`` stands for: the largest size the protocol can carry.
UNLIMITED = 2**53 - 1


def _size(text: str) -> int:
    """A quota: "1G", "500M", "1048576" or "unlimited" (argparse names this in errors)."""
    if text.strip().lower() in ("unlimited", "none", "inf"):
        return UNLIMITED
    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 500M, 1G, 1.5T or "
                                         "unlimited)")


def human(n: int) -> str:
    """Bytes for people: "1.0 GiB", "unlimited"."""
    if n >= UNLIMITED:
        return "unlimited"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ftpd-reactor")
    except PackageNotFoundError:
        return "0.1.0"


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked for: reading the package metadata costs
    more than a daemon's whole start otherwise spends on its arguments."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(f"ftpd {_version()}")
        parser.exit()


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftpd",
                                     description="Resumable, verified file-transfer daemon.")
    parser.add_argument("--version", action=_VersionAction,
                        help="show program's version number and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--root", help="data folder (users database, homes, partial uploads); "
                       "required here or as root in the --config file")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 2121; 0 picks a free one)")
    serve.add_argument("--config", help="TOML file with any setting")
    serve.add_argument("--allow-register", action="store_true", default=None,
                       help="let clients create accounts")
    serve.add_argument("--workers", dest="worker_processes", type=_workers,
                       help="reactor processes: a number or 'auto' (one per CPU; default 1)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    _add_tls_serve_flags(serve)
    _add_backend_flags(serve)
    serve.add_argument("--set", dest="settings", type=_setting, action="append", default=[],
                       metavar="NAME=VALUE", help="override any setting (repeatable)")

    user = sub.add_parser("user", help="manage users")
    usub = user.add_subparsers(dest="action", required=True)

    def with_root(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--root", help="the daemon's data folder (or --metadata/--blobs)")
        _add_backend_flags(p)
        p.add_argument("--scrypt-n", type=int, default=None, help=argparse.SUPPRESS)
        return p

    add = with_root(usub.add_parser("add", help="create a user"))
    add.add_argument("name")
    add.add_argument("--quota", type=_size, default=None,
                     help="e.g. 1G or unlimited (default 1 GiB)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    for action, text in (("del", "delete a user and all their files"),
                         ("disable", "refuse a user's logins"), ("enable", "allow logins again")):
        with_root(usub.add_parser(action, help=text)).add_argument("name")
        if action == "del":
            usub.choices["del"].add_argument("--yes", "-y", action="store_true",
                                             help="do not ask: the files go too")
    pw = with_root(usub.add_parser("passwd", help="change a password"))
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true")
    q = with_root(usub.add_parser("quota", help="set a quota"))
    q.add_argument("name")
    q.add_argument("size", type=_size, help="e.g. 5G, 500M or unlimited")
    with_root(usub.add_parser("list", help="list users"))
    with_root(usub.add_parser("unlock", help="end a lockout of a user name after failed logins")
              ).add_argument("name")
    _add_tls_parser(sub)
    mig = sub.add_parser("migrate", help="copy a local data folder into PostgreSQL + S3")
    mig.add_argument("--from-root", required=True, metavar="DIR", help="the local data folder")
    _add_backend_flags(mig)
    return parser


# ------------------------------------------------------------ backends


def _add_backend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metadata", metavar="URL",
                   help="postgresql://... (setting metadata_url): users and tree in PostgreSQL")
    p.add_argument("--blobs", metavar="URL",
                   help="s3://BUCKET?endpoint=http://HOST:PORT&region=R (setting blob_url)")


def _object_store(args: argparse.Namespace, **kwargs: Any) -> Any:
    """The object-store backend named by --metadata/--blobs (both needed)."""
    if not (args.metadata and args.blobs):
        raise SystemExit("ftpd: error: --metadata and --blobs go together")
    from storage.objstore.store import ObjectStore

    return ObjectStore(args.metadata, args.blobs, **kwargs)


def _migrate(args: argparse.Namespace) -> int:
    from storage.objstore.migrate import migrate_root

    if not (Path(args.from_root) / DB_NAME).is_file():
        print(f"ftpd: error: no data folder at {args.from_root}", file=sys.stderr)
        return 2
    try:
        dest = _object_store(args)
    except (StorageError, ValueError) as exc:
        print(f"ftpd: error: cannot open the destination: {exc}", file=sys.stderr)
        return 1
    try:
        report = migrate_root(args.from_root, dest, say=print)
    except (StorageError, OSError) as exc:
        print(f"ftpd: error: migration stopped (run it again to go on): {exc}",
              file=sys.stderr)
        return 1
    finally:
        dest.close()
    for item in report.skipped:
        print(f"skipped {item}")
    print(f"migrated {report.users} users, {report.folders} folders, {report.files} files "
          f"({human(report.bytes)}), every file verified by SHA-256")
    return 0


# ------------------------------------------------------------ tls


def _add_tls_serve_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--tls-cert", metavar="FILE",
                       help="certificate chain (PEM); default: self-signed under ROOT/tls/")
    serve.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
    serve.add_argument("--plaintext", action="store_true",
                       help="no TLS (setting tls = false); only on a trusted network")


def _tls_serve_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"tls_cert": args.tls_cert, "tls_key": args.tls_key,
            "tls": False if args.plaintext else None}


def _add_tls_parser(sub: Any) -> None:
    tls = sub.add_parser("tls", help="the daemon's TLS certificate")
    tsub = tls.add_subparsers(dest="action", required=True)
    for action, text in (("fingerprint", "print the certificate's SHA256 fingerprint"),
                         ("rotate", "make a new self-signed certificate and key")):
        p = tsub.add_parser(action, help=text)
        p.add_argument("--root", required=True, help="the daemon's data folder")
        p.add_argument("--config", help="TOML file (for tls_cert / tls_key)")


def _tls(args: argparse.Namespace) -> int:
    from . import certs

    try:
        cfg = configuration.load(args.config, root=args.root)
        if args.action == "rotate":
            if cfg.tls_cert:
                print("ftpd: error: tls_cert is set: replace those files yourself",
                      file=sys.stderr)
                return 1
            pair = certs.rotate(cfg.root)
            print(f"new certificate {pair.cert}")
            print(f"tls fingerprint {pair.fingerprint()}")
            print("clients must trust it again (ftpc --trust); a running daemon "
                  "picks it up on SIGHUP")
            return 0
        pair = certs.resolve(cfg.root, cfg.tls_cert or None, cfg.tls_key or None)
        print(pair.fingerprint())
    except (OSError, ValueError, certs.CertError) as exc:
        print(f"ftpd: error: tls: {exc}", file=sys.stderr)
        return 1
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise SystemExit("ftpd: error: the passwords differ")
    else:
        raise SystemExit("ftpd: error: no terminal to ask for a password; use --password-stdin")
    if not password:
        raise SystemExit("ftpd: error: empty password")
    return password


def _serve(args: argparse.Namespace) -> int:

    overrides = dict(args.settings)
    flags = dict(root=args.root, host=args.host, port=args.port,
                 allow_register=args.allow_register, log_level=args.log_level,
                 worker_processes=args.worker_processes)
    flags.update(_tls_serve_settings(args))
    flags.update(metadata_url=args.metadata, blob_url=args.blobs)
    overrides.update({name: value for name, value in flags.items() if value is not None})
    try:
        cfg = configuration.load(args.config, **overrides)
        if args.root is None and not configuration.sets_root(args.config) \
                and not cfg.metadata_url:
            raise ValueError("no data folder: give --root DIR (or root = \"DIR\" in the "
                             "--config file)")
    except (OSError, ValueError) as exc:
        print(f"ftpd: error: configuration: {exc}", file=sys.stderr)
        return 2
    try:
        root_lock = lock_root(cfg.root)     # held until this process (and its workers) end
    except RootLocked as exc:
        print(f"ftpd: error: {exc}: refusing to start a second daemon on it", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ftpd: error: cannot lock the data root {cfg.root}: {exc}", file=sys.stderr)
        return 1
    try:
        if cfg.worker_processes > 1:
            return _supervise(cfg)
        logs.configure(cfg.log_level)
        return _run_server(cfg)
    finally:
        os.close(root_lock)


def _supervise(cfg: configuration.Config) -> int:
    from . import certs
    from .supervisor import Supervisor

    logs.WORKER = "sup"
    logs.configure(cfg.log_level)
    try:
        # Once, before any worker: create or upgrade the catalogue (switching a new one
        # to WAL needs it alone) and recover interrupted commits, with nobody else live.
        Store(cfg.root, scrypt_n=cfg.scrypt_n, partial_ttl=cfg.partial_ttl,
              default_quota=cfg.default_quota).close()
    except (StorageError, OSError, sqlite3.Error) as exc:
        print(f"ftpd: error: cannot open the data root {cfg.root}: {exc}", file=sys.stderr)
        return 1
    try:
        # Once, before any worker: make (or check) the TLS pair, so that workers never
        # race to create it and a bad certificate stops the start with one line.
        certs.credentials_for(cfg.root, cfg.tls, cfg.tls_cert, cfg.tls_key,
                              cfg.tls_min_version)
    except certs.CertError as exc:
        print(f"ftpd: error: tls: {exc}", file=sys.stderr)
        return 2
    supervisor = Supervisor(cfg, _run_worker)
    try:
        supervisor.reserve_address()
    except OSError as exc:
        print(f"ftpd: error: cannot listen on {cfg.host}:{cfg.port}: {exc}", file=sys.stderr)
        return 3
    return supervisor.run()


def _run_worker(cfg: configuration.Config, index: int) -> int:
    """One worker process of ``--workers N`` (forked by the supervisor)."""
    logs.WORKER = f"w{index}"
    logs.configure(cfg.log_level)
    return _run_server(cfg)


def _run_server(cfg: configuration.Config) -> int:
    """Open the store, listen and serve until a signal stops the reactor (one process,
    or one worker of ``--workers N``); start-up failures are one line and a status."""
    from . import certs
    from .server import Server

    try:
        server = Server(cfg)
    except StorageError as exc:      # PostgreSQL or S3 unreachable at start
        print(f"ftpd: error: storage: {exc.code}: {exc.message}", file=sys.stderr)
        return 3
    except certs.CertError as exc:
        print(f"ftpd: error: tls: {exc}", file=sys.stderr)
        return 2
    try:
        server.bind()
    except OSError as exc:
        print(f"ftpd: error: cannot listen on {cfg.host}:{cfg.port}: {exc}", file=sys.stderr)
        return 3
    server.install_signal_handlers()
    server.serve_forever()
    return 0


def _confirmed(args: argparse.Namespace) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print("ftpd: error: user del deletes all of the user's files: add --yes",
              file=sys.stderr)
        return False
    answer = input(f"delete user {args.name} and all their files? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _user(args: argparse.Namespace) -> int:
    kwargs = {"scrypt_n": args.scrypt_n} if args.scrypt_n else {}
    remote = bool(args.metadata or args.blobs)
    if not remote and not args.root:
        print("ftpd: error: give --root DIR (or --metadata and --blobs)", file=sys.stderr)
        return 2
    if not remote and args.action != "add" and not (Path(args.root) / DB_NAME).is_file():
        print(f"ftpd: error: no data folder at {args.root} (nothing was created; "
              "'ftpd user add' makes one)", file=sys.stderr)
        return 2
    if args.action == "del" and not _confirmed(args):
        return 1
    # Asked before the store is opened: a refusal leaves no data folder behind.
    password = (_read_password(args.password_stdin) if args.action in ("add", "passwd")
                else "")
    try:
        store = _object_store(args, **kwargs) if remote else Store(Path(args.root), **kwargs)
    except (StorageError, ValueError) as exc:
        print(f"ftpd: error: cannot open the store: {exc}", file=sys.stderr)
        return 1
    try:
        if args.action == "add":
            info = store.create_user(args.name, password, args.quota)
            print(f"created user {info.name} with a quota of {human(info.quota)}")
            _warn_zero(info.name, info.quota)
        elif args.action == "del":
            store.delete_user(args.name)
            print(f"deleted user {args.name} and their files")
        elif args.action == "passwd":
            store.set_password(args.name, password)
            print(f"changed the password of {args.name}")
        elif args.action == "quota":
            store.set_quota(args.name, args.size)
            print(f"set the quota of {args.name} to {human(args.size)}")
            _warn_zero(args.name, args.size)
        elif args.action in ("disable", "enable"):
            store.set_disabled(args.name, args.action == "disable")
            print(f"{args.action}d user {args.name}")
        elif args.action == "unlock":
            # Works for any name (unknown names are throttled too) and on a running
            # daemon: the throttle's records live in the catalogue.
            if store.unlock_user(args.name):
                print(f"unlocked user {args.name}")
            else:
                print(f"user {args.name} had no failed logins on record")
        elif args.action == "list":
            for u in store.list_users():
                flag = " (disabled)" if u.disabled else ""
                print(f"{u.name}\tused={u.used} ({human(u.used)})\t"
                      f"quota={u.quota} ({human(u.quota)}){flag}")
    except StorageError as exc:
        print(f"ftpd: error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _warn_zero(name: str, quota: int) -> None:
    if quota == 0:
        print(f"ftpd: warning: a quota of 0 bytes: {name} can store nothing (for no limit "
              "say 'unlimited'; to block logins use 'ftpd user disable')", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "tls":
        return _tls(args)
    if args.command == "migrate":
        return _migrate(args)
    return _user(args)


if __name__ == "__main__":
    sys.exit(main())
