"""Transfer commands: put, get, mput, mget.

Results are *reports* (``-q`` silences them); errors are not.  ``get FILE -``
writes the file to stdout, so its report goes to stderr; ``put - NAME`` reads
stdin.  Recursive copies go through ``tree.sync_put``/``sync_get``: they skip
what is already there, resume what is partial, and ``-n`` only says what they
would do.
"""

from __future__ import annotations

import argparse
import errno
import os
import posixpath
import sys

from .errors import NotFoundError, PathError, ServerError
from .failures import SomeFailed, describe
from .files import STDIO
from .globs import expand_all_remote, expand_local, has_magic
from .output import Outcome
from .progress import Progress
from .registry import (
    TRANSFER_OPTIONS,
    App,
    about,
    arg,
    command,
    local_target,
    remote_target,
)
from .results import GetResult, PutResult
from .stream_put import put_stream
from .tree import TreeReport, sync_get, sync_put


def transfer_line(r: PutResult | GetResult, source: str, target: str) -> str:
    notes = [f"{r.size} bytes"]
    if r.resumed_from:
        notes.append(f"resumed from {r.resumed_from}")
    if r.restarted:
        notes.append("stale partial restarted")
    if r.sha256 or r.blake3:
        notes.append("verified")
    return f"{source} -> {target} ({', '.join(notes)})"


def put_line(r: PutResult) -> str:
    return transfer_line(r, r.local, r.path)


def get_line(r: GetResult) -> str:
    return transfer_line(r, r.path, r.local or "")


def tree_outcome(report: TreeReport) -> Outcome:
    """What a tree copy did, file by file, then one summary line; JSON keeps
    ``files`` (what was transferred) and adds the plan."""
    lines = []
    for item in report.items:
        if item.error is not None:
            continue                        # reported on stderr as it happened
        if item.result is not None:
            r = item.result
            line = put_line(r) if isinstance(r, PutResult) else get_line(r)
        elif item.action == "skip":
            line = f"{item.source}: skipped, identical"
        else:
            line = f"{item.source} -> {item.target}: would {item.action} ({item.size} bytes)"
        lines.append(line)
    lines.append(report.summary())
    data = {"files": report.results, "bytes_sent": report.bytes_sent,
            "dry_run": report.dry_run,
            "plan": [{"action": i.action, "source": i.source, "target": i.target,
                      "size": i.size, "error": i.error} for i in report.items]}
    return Outcome(data, "\n".join(lines), report=True)


def _finish_tree(app: App, report: TreeReport) -> Outcome:
    outcome = tree_outcome(report)
    if report.errors:
        raise SomeFailed(len(report.errors), len(report.items), report.errors[0], outcome)
    return outcome


SYNC_OPTIONS = (
    arg("-n", "--dry-run", dest="dry_run", action="store_true",
        help="with -r: show what would be transferred, transfer nothing"),
    arg("-c", "--checksum", action="store_true",
        help="with -r: compare files by SHA-256, not by size and modification time"),
)


@command("put", "upload LOCAL to REMOTE (default: its name, in the remote folder); "
         "LOCAL - reads stdin",
         arg("local"), arg("remote", nargs="?"),
         arg("--overwrite", action="store_true", help="replace an existing remote file"),
         arg("--no-clobber", dest="overwrite", action="store_false",
             help="never replace an existing remote file (the default)"),
         arg("--hash-first", action="store_true",
             help="hash the file before sending it and declare the SHA-256 up front "
                  "(default: hash while sending, name it at the end)"),
         *TRANSFER_OPTIONS, *SYNC_OPTIONS)
def do_put(app: App, a: argparse.Namespace) -> Outcome:
    if a.local == STDIO:
        if not a.remote:
            raise PathError("BAD_PATH", "put - needs a remote name: ftpc put - NAME")
        remote = remote_target(app.client, a.remote, "stdin")
        with about(remote), app.progress("stdin", a.limit_rate) as bar:
            result = put_stream(app.client, sys.stdin.buffer, remote, overwrite=a.overwrite,
                                progress=bar, verify=not a.no_verify,
                                defer_hash=not a.hash_first, retries=app.retries,
                                notice=app.out.warn)
        return Outcome(result, put_line(result), report=True)
    sources = expand_local([a.local]) if has_magic(a.local) else [a.local]
    if len(sources) > 1:
        results = [app.put_file(s, remote_target(app.client, (a.remote or ".") + "/",
                                                 os.path.basename(s)), a) for s in sources]
        return Outcome({"files": results}, "\n".join(map(put_line, results)), report=True)
    local = sources[0]
    name = os.path.basename(os.path.abspath(local))
    if os.path.isdir(local):
        if not a.recursive:
            raise IsADirectoryError(errno.EISDIR, "is a folder (use put -r)", local)
        with about(a.remote or name):
            report = sync_put(app.client, local, a.remote or name,
                              put_file=lambda lo, re: app.put_file(lo, re, a),
                              notice=app.out.warn, dry_run=a.dry_run, overwrite=a.overwrite,
                              checksum=a.checksum)
        return _finish_tree(app, report)
    result = app.put_file(local, remote_target(app.client, a.remote, name), a)
    return Outcome(result, put_line(result), report=True)


def _mput_pairs(app: App, a: argparse.Namespace) -> list[tuple[str, str]]:
    if a.to:
        try:
            if app.client.stat(a.to).entry.type != "dir":
                raise PathError("NOT_A_DIRECTORY", f"{a.to}: not a remote folder")
        except NotFoundError:
            raise NotFoundError("NOT_FOUND", f"{a.to}: no such remote folder") from None
    return [(local, posixpath.join(a.to, os.path.basename(os.path.abspath(local)))
             if a.to else os.path.basename(os.path.abspath(local)))
            for local in expand_local(a.local)]


@command("mput", "upload many files at once, pipelined, into the remote folder (or --to DIR)",
         arg("local", nargs="+"),
         arg("--to", metavar="DIR", help="remote folder to put them in (default: the current)"),
         arg("--overwrite", action="store_true", help="replace existing remote files"),
         arg("--window", type=int, default=96, metavar="N",
             help="at most N small files awaiting the server's answer (default 96)"),
         *TRANSFER_OPTIONS)
def do_mput(app: App, a: argparse.Namespace) -> Outcome:
    a.hash_first, a.dry_run = False, False
    pairs = _mput_pairs(app, a)
    folders = [(lo, re) for lo, re in pairs if os.path.isdir(lo)]
    if folders and not a.recursive:
        raise IsADirectoryError(errno.EISDIR, "is a folder (use mput -r)", folders[0][0])
    files = [(lo, re) for lo, re in pairs if not os.path.isdir(lo)]
    failures: list[dict[str, object]] = []
    errors: list[BaseException] = []
    total = sum(os.path.getsize(lo) for lo, _ in files if os.path.isfile(lo))
    sent = 0

    with Progress(f"{len(files)} files", show=app.out.show_progress, rate=a.limit_rate,
                  info=None) as bar:
        def report(local: str, outcome: PutResult | BaseException) -> None:
            nonlocal sent
            if isinstance(outcome, BaseException):
                failure = describe(outcome)
                app.out.warn(f"error: {failure.code}: {local}: {failure.message}")
                failures.append({"local": local, "code": failure.code,
                                 "message": failure.message})
                errors.append(outcome)
            else:
                sent += outcome.size
                bar(sent, total, 0)

        results = app.client.put_many(files, overwrite=a.overwrite, verify=not a.no_verify,
                                      window=max(1, a.window), on_result=report)
    done = [r for r in results if isinstance(r, PutResult)]
    for local, remote in folders:
        tree = sync_put(app.client, local, remote, notice=app.out.warn,
                        put_file=lambda lo, re: app.put_file(lo, re, a), overwrite=a.overwrite)
        done += [r for r in tree.results if isinstance(r, PutResult)]
        errors += tree.errors
        failures += [{"local": i.source, "code": (i.error or "").split(":")[0],
                      "message": i.error} for i in tree.items if i.error]
    outcome = Outcome({"files": done, "failed": len(failures), "failures": failures},
                      "\n".join(map(put_line, done)) or None, report=True)
    if errors:
        raise SomeFailed(len(errors), len(pairs), errors[0], outcome)
    return outcome


def _get_one(app: App, remote: str, local: str | None, a: argparse.Namespace) -> Outcome:
    name = posixpath.basename(remote.rstrip("/")) or "download"
    target = local_target(local, name)
    if target != STDIO and not a.overwrite_local and os.path.exists(target) \
            and os.path.isfile(target):
        raise FileExistsError(errno.EEXIST, "exists (use --overwrite)", target)
    folder = os.path.dirname(os.path.abspath(target))
    if target != STDIO and not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "no such local folder", folder)
    try:
        result = app.get_file(remote, target, a)
    except ServerError as exc:
        if exc.code == "IS_A_DIRECTORY" and "get -r" not in exc.message:
            raise type(exc)(exc.code, f"{exc.message} (use get -r)", exc.details) from None
        raise
    return Outcome(result, get_line(result), report=True, stdout_taken=target == STDIO)


@command("get", "download REMOTE (wildcards allowed) to LOCAL (default: its name, in the "
         "current folder); LOCAL - writes to stdout",
         arg("remote"), arg("local", nargs="?"),
         arg("--fsync", action="store_true",
             help="flush the file to disk before renaming it into place (survives a "
                  "power failure right after; slower)"),
         arg("--overwrite", dest="overwrite_local", action="store_true", default=True,
             help="replace an existing local file (the default, as cp and scp do)"),
         arg("--no-clobber", dest="overwrite_local", action="store_false",
             help="never replace an existing local file"),
         *TRANSFER_OPTIONS, *SYNC_OPTIONS)
def do_get(app: App, a: argparse.Namespace) -> Outcome:
    name = posixpath.basename(a.remote.rstrip("/")) or "download"
    if a.recursive:
        with about(a.remote):
            report = sync_get(app.client, a.remote, a.local or name,
                              get_file=lambda re, lo: app.get_file(re, lo, a),
                              notice=app.out.warn, dry_run=a.dry_run, checksum=a.checksum)
        return _finish_tree(app, report)
    remotes = expand_all_remote(app.client, [a.remote])
    if len(remotes) == 1:
        return _get_one(app, remotes[0], a.local, a)
    return _get_many(app, remotes, a.local, a)


def _get_many(app: App, remotes: list[str], folder: str | None,
              a: argparse.Namespace) -> Outcome:
    if folder == STDIO:
        return _get_concatenated(app, remotes, a)
    results, errors = [], []
    for remote in remotes:
        try:
            results.append(_get_one(app, remote, (folder or ".") + os.sep, a).data)
        except (ServerError, OSError) as exc:
            app.out.error_line(exc)
            errors.append(exc)
    outcome = Outcome({"files": results}, "\n".join(map(get_line, results)) or None,
                      report=True)
    if errors:
        raise SomeFailed(len(errors), len(remotes), errors[0], outcome)
    return outcome


def _get_concatenated(app: App, remotes: list[str], a: argparse.Namespace) -> Outcome:
    """``get '*.log' -``: one after the other on stdout, like ``cat``."""
    results = [app.get_file(r, STDIO, a) for r in remotes]
    return Outcome({"files": results}, "\n".join(map(get_line, results)), report=True,
                   stdout_taken=True)


@command("mget", "download many remote files (wildcards allowed) into the local folder",
         arg("remote", nargs="+"),
         arg("--to", metavar="DIR", help="local folder to put them in (default: the current)"),
         arg("--fsync", action="store_true", help="flush each file to disk before renaming it"),
         arg("--no-clobber", dest="overwrite_local", action="store_false", default=True,
             help="never replace an existing local file"),
         *TRANSFER_OPTIONS)
def do_mget(app: App, a: argparse.Namespace) -> Outcome:
    remotes = expand_all_remote(app.client, a.remote)
    return _get_many(app, remotes, a.to, a)
