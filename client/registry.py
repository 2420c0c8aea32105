"""The command registry shared by ``ftpc COMMAND`` and the interactive shell.

Each command is declared once -- name, help, arguments, whether it needs a
login -- and runs against an ``App`` (a connected ``Client`` plus where output
goes), returning an ``Outcome``.  The commands themselves live in
``cmd_transfer`` (put, get, mput, mget), ``cmd_files`` (ls, rm, stat, ...) and
``cmd_session``; ``commands`` imports them all so that each registers here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .client import Client
from .errors import NotFoundError, ServerError
from .output import Outcome, Output
from .progress import Progress, parse_rate
from .results import GetResult, PutResult


@dataclass
class App:
    """What a command runs against."""

    client: Client
    out: Output
    retries: int = 0

    def progress(self, label: str, rate: int | None) -> Progress:
        return Progress(label, show=self.out.show_progress, rate=rate,
                        info=None if self.out.quiet else self.out.stderr)

    def put_file(self, local: str, remote: str, a: argparse.Namespace) -> PutResult:
        with about(remote), self.progress(os.path.basename(local), a.limit_rate) as bar:
            return self.client.put(local, remote, overwrite=a.overwrite, verify=not a.no_verify,
                                   defer_hash=not a.hash_first, progress=bar,
                                   retries=self.retries, notice=self.out.warn,
                                   times=getattr(a, "times", True),
                                   perms=getattr(a, "perms", False))

    def get_file(self, remote: str, local: str, a: argparse.Namespace) -> GetResult:
        with about(remote), self.progress(posixpath.basename(remote), a.limit_rate) as bar:
            return self.client.get(remote, local, verify=not a.no_verify, fsync=a.fsync,
                                   progress=bar, retries=self.retries, notice=self.out.warn,
                                   times=getattr(a, "times", True),
                                   perms=getattr(a, "perms", False))


Run = Callable[[App, argparse.Namespace], Outcome]


@contextlib.contextmanager
def about(path: str) -> Iterator[None]:
    """Say which path a server error is about: "x/y: no such file or folder"."""
    try:
        yield
    except ServerError as exc:
        # Already named at the start?  (A bare "x in message" would take the name
        # "x" for said in "exists" and leave the user guessing.)
        named = exc.message.startswith((f"{path}:", f"/{path.lstrip('/')}:"))
        if named:
            raise
        raise type(exc)(exc.code, f"{path}: {exc.message}", exc.details) from None


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Run
    arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]
    login: bool = True

    def add_to(self, sub: Any) -> argparse.ArgumentParser:
        parser = sub.add_parser(self.name, help=self.help, description=self.help,
                                add_help=False)
        taken = {flag for flags, _ in self.arguments for flag in flags}
        parser.add_argument(*[f for f in ("-h", "--help") if f not in taken],
                            action="help", help="show this help and exit")
        for flags, options in self.arguments:
            parser.add_argument(*flags, **options)
        return parser


COMMANDS: dict[str, Command] = {}


def arg(*flags: str, **options: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, options


def command(name: str, help: str, *arguments: tuple[tuple[str, ...], dict[str, Any]],
            login: bool = True) -> Callable[[Run], Run]:
    def register(run: Run) -> Run:
        COMMANDS[name] = Command(name, help, run, arguments, login)
        return run
    return register


def _rate(text: str) -> int:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


TRANSFER_OPTIONS = (
    arg("-r", "--recursive", action="store_true", help="transfer a folder and its contents"),
    arg("--no-verify", action="store_true", help="skip the end-to-end SHA-256 check"),
    arg("--limit-rate", type=_rate, metavar="RATE", help="at most RATE bytes/s, e.g. 500k, 2M"),
    arg("-p", "--perms", action="store_true",
        help="keep permission bits (the server keeps only 0o755 bits; rsync -p)"),
    arg("--no-times", dest="times", action="store_false", default=True,
        help="do not keep modification times (kept by default, as rsync -t)"),
)


def remote_target(client: Client, remote: str | None, name: str) -> str:
    """Where a file named ``name`` goes: REMOTE, or inside it if it is a folder."""
    if not remote:
        return name
    if remote.endswith("/"):
        return remote + name
    try:
        is_dir = client.stat(remote).entry.type == "dir"
    except NotFoundError:
        return remote
    return posixpath.join(remote, name) if is_dir else remote


def local_target(local: str | None, name: str) -> str:
    if not local:
        return name
    if local.endswith(os.sep) or os.path.isdir(local):
        return os.path.join(local, name)
    return local
