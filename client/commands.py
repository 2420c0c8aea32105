"""The commands shared by ``ftpc COMMAND`` and the interactive shell.

Each command is declared once -- name, help, arguments, whether it needs a
login -- and runs against an ``App`` (a connected ``Client`` plus where output
goes), returning an ``Outcome``.  The CLI and the shell differ only in how
they get a line and what they do after an error.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import posixpath
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .client import Client
from .errors import NotFoundError, ServerError
from .failures import SomeFailed, describe
from .output import Outcome, Output
from .progress import Progress, human_size, parse_rate
from .results import Entry, GetResult, PutResult
from .tree import get_tree, put_tree


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
                                   retries=self.retries, notice=self.out.warn)

    def get_file(self, remote: str, local: str, a: argparse.Namespace) -> GetResult:
        with about(remote), self.progress(posixpath.basename(remote), a.limit_rate) as bar:
            return self.client.get(remote, local, verify=not a.no_verify, fsync=a.fsync,
                                   progress=bar, retries=self.retries, notice=self.out.warn)


Run = Callable[[App, argparse.Namespace], Outcome]


@contextlib.contextmanager
def about(path: str) -> Iterator[None]:
    """Say which path a server error is about: "x/y: no such file or folder"."""
    try:
        yield
    except ServerError as exc:
        if path in exc.message:
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
        parser = sub.add_parser(self.name, help=self.help, description=self.help)
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
)


# ------------------------------------------------------------ transfers


def _transfer_line(r: PutResult | GetResult, source: str, target: str) -> str:
    notes = [f"{r.size} bytes"]
    if r.resumed_from:
        notes.append(f"resumed from {r.resumed_from}")
    if r.restarted:
        notes.append("stale partial restarted")
    if r.sha256:
        notes.append("verified")
    return f"{source} -> {target} ({', '.join(notes)})"


def _put_line(r: PutResult) -> str:
    return _transfer_line(r, r.local, r.path)


def _get_line(r: GetResult) -> str:
    return _transfer_line(r, r.path, r.local)


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


@command("put", "upload LOCAL to REMOTE (default: its name, in the remote folder)",
         arg("local"), arg("remote", nargs="?"),
         arg("--overwrite", action="store_true", help="replace an existing remote file"),
         arg("--hash-first", action="store_true",
             help="hash the file before sending it and declare the SHA-256 up front "
                  "(default: hash while sending, name it at the end)"),
         *TRANSFER_OPTIONS)
def do_put(app: App, a: argparse.Namespace) -> Outcome:
    name = os.path.basename(os.path.abspath(a.local))
    if os.path.isdir(a.local):
        if not a.recursive:
            raise IsADirectoryError(errno.EISDIR, "is a folder (use put -r)", a.local)
        with about(a.remote or name):
            results = put_tree(app.client, a.local, a.remote or name,
                               put_file=lambda lo, re: app.put_file(lo, re, a),
                               notice=app.out.warn)
        return Outcome({"files": results}, "\n".join(map(_put_line, results)) or None)
    result = app.put_file(a.local, remote_target(app.client, a.remote, name), a)
    return Outcome(result, _put_line(result))


@command("mput", "upload many files at once, pipelined, into the remote folder (or --to DIR)",
         arg("local", nargs="+"),
         arg("--to", metavar="DIR", help="remote folder to put them in (default: the current)"),
         arg("--overwrite", action="store_true", help="replace existing remote files"),
         arg("--no-verify", action="store_true", help="skip the end-to-end SHA-256 check"),
         arg("--window", type=int, default=96, metavar="N",
             help="at most N small files awaiting the server's answer (default 96)"))
def do_mput(app: App, a: argparse.Namespace) -> Outcome:
    pairs = [(local, posixpath.join(a.to, os.path.basename(os.path.abspath(local)))
              if a.to else os.path.basename(os.path.abspath(local))) for local in a.local]

    def report(local: str, outcome: PutResult | BaseException) -> None:
        if isinstance(outcome, BaseException):
            app.out.warn(f"error: {describe(outcome).code}: {local}: {describe(outcome).message}")

    results = app.client.put_many(pairs, overwrite=a.overwrite, verify=not a.no_verify,
                                  window=max(1, a.window), on_result=report)
    done = [r for r in results if isinstance(r, PutResult)]
    failed = [r for r in results if not isinstance(r, PutResult)]
    outcome = Outcome({"files": done, "failed": len(failed)},
                      "\n".join(map(_put_line, done)) or None)
    if failed:
        app.out.result(outcome)
        raise SomeFailed(len(failed), len(results), failed[0])
    return outcome


@command("get", "download REMOTE to LOCAL (default: its name, in the current folder)",
         arg("remote"), arg("local", nargs="?"),
         arg("--fsync", action="store_true",
             help="flush the file to disk before renaming it into place (survives a "
                  "power failure right after; slower)"),
         *TRANSFER_OPTIONS)
def do_get(app: App, a: argparse.Namespace) -> Outcome:
    name = posixpath.basename(a.remote.rstrip("/")) or "download"
    if a.recursive:
        with about(a.remote):
            results = get_tree(app.client, a.remote, a.local or name,
                               get_file=lambda re, lo: app.get_file(re, lo, a),
                               notice=app.out.warn)
        return Outcome({"files": results}, "\n".join(map(_get_line, results)) or None)
    result = app.get_file(a.remote, local_target(a.local, name), a)
    return Outcome(result, _get_line(result))


# ------------------------------------------------------------ names


def _entry_line(e: Entry, long: bool) -> str:
    name = e.name + ("/" if e.type == "dir" else "")
    if not long:
        return name
    kind = {"dir": "d", "file": "-"}.get(e.type, "?")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime))
    return f"{kind} {e.size:>14} {when} {name}"


@command("ls", "list a remote folder",
         arg("-l", dest="long", action="store_true", help="long format: type, size, date"),
         arg("path", nargs="?", default="."))
def do_ls(app: App, a: argparse.Namespace) -> Outcome:
    with about(a.path):
        listing = app.client.ls(a.path)
    return Outcome(listing, "\n".join(_entry_line(e, a.long) for e in listing.entries) or None)


@command("stat", "show a remote file's or folder's details", arg("path"))
def do_stat(app: App, a: argparse.Namespace) -> Outcome:
    with about(a.path):
        st = app.client.stat(a.path)
    e = st.entry
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.mtime))
    return Outcome(st, f"path: {st.path}\ntype: {e.type}\nsize: {e.size}\nmtime: {when}")


@command("mkdir", "create a remote folder",
         arg("-p", "--parents", action="store_true", help="create parents; fine if it exists"),
         arg("path"))
def do_mkdir(app: App, a: argparse.Namespace) -> Outcome:
    with about(a.path):
        return Outcome({"path": app.client.mkdir(a.path, parents=a.parents)})


@command("rmdir", "remove an empty remote folder", arg("path"))
def do_rmdir(app: App, a: argparse.Namespace) -> Outcome:
    with about(a.path):
        return Outcome({"path": app.client.rmdir(a.path)})


@command("rm", "remove a remote file", arg("path"))
def do_rm(app: App, a: argparse.Namespace) -> Outcome:
    with about(a.path):
        return Outcome({"path": app.client.rm(a.path)})


@command("mv", "move or rename a remote file or folder", arg("src"), arg("dst"),
         arg("--overwrite", action="store_true", help="replace an existing DST"))
def do_mv(app: App, a: argparse.Namespace) -> Outcome:
    with about(a.src):
        dst = remote_target(app.client, a.dst, posixpath.basename(a.src.rstrip("/")))
        return Outcome(app.client.mv(a.src, dst, overwrite=a.overwrite))


@command("pwd", "print the remote working folder")
def do_pwd(app: App, a: argparse.Namespace) -> Outcome:
    path = app.client.pwd()
    return Outcome({"path": path}, path)


@command("whoami", "print the logged-in user")
def do_whoami(app: App, a: argparse.Namespace) -> Outcome:
    user = app.client.whoami()
    return Outcome({"user": user}, user or "(not logged in)")


@command("quota", "show used, reserved and free space")
def do_quota(app: App, a: argparse.Namespace) -> Outcome:
    q = app.client.quota()
    text = (f"used {human_size(q.used)} ({q.used}), reserved {human_size(q.reserved)} "
            f"({q.reserved}), limit {human_size(q.limit)} ({q.limit}), "
            f"free {human_size(q.free)} ({q.free})")
    return Outcome(q, text)


@command("hash", "print a remote file's SHA-256 (like sha256sum)", arg("path"))
def do_hash(app: App, a: argparse.Namespace) -> Outcome:
    with about(a.path):
        h = app.client.hash(a.path)
    return Outcome(h, f"{h.sha256}  {h.path}")


@command("uploads", "list your unfinished (resumable) uploads")
def do_uploads(app: App, a: argparse.Namespace) -> Outcome:
    infos = app.client.uploads()
    lines = [f"{u.path}  {u.offset}/{u.size} bytes "
             f"({100 * u.offset // u.size if u.size else 100}%)" for u in infos]
    return Outcome({"uploads": infos}, "\n".join(lines) or None)


@command("abort", "discard an unfinished upload", arg("path"))
def do_abort(app: App, a: argparse.Namespace) -> Outcome:
    with about(a.path):
        return Outcome({"path": app.client.abort(a.path)})


@command("ping", "check that the server answers", login=False)
def do_ping(app: App, a: argparse.Namespace) -> Outcome:
    seconds = app.client.ping()
    c = app.client
    return Outcome({"host": c.host, "port": c.port, "seconds": seconds},
                   f"pong from {c.host}:{c.port}: {seconds * 1000:.2f} ms")
