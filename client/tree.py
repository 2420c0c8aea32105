"""Recursive transfers: walk a folder on one side, bring the other side up to date.

Like ``rsync``, a tree copy first decides what each file needs, then does
only that: a file already there and identical is *skipped* (same size and
SHA-256 -- the server's ``hash`` command; for downloads, same size and
modification time, or SHA-256 with ``checksum``), an unfinished one is
*resumed* (the server's partial upload, the local ``.part``), a missing one is
*sent*.  So an interrupted copy picks up where it stopped and a rerun of a
finished one transfers nothing.  With ``dry_run`` the plan is returned and
nothing is sent or created.

The per-file transfer is a parameter, so the CLI can wrap each file in its
own progress bar while the walking rules stay in one place.  Names coming
from the server are never trusted as local paths: one with a separator or a
``..`` is skipped, so a hostile listing cannot write outside the target.
"""

from __future__ import annotations

import os
import posixpath
import stat as stat_module
from collections.abc import Callable
from dataclasses import dataclass, field

from .client import Client, Notice
from .errors import ConnectionLost, FtpError, NotFoundError, PathError
from .files import hash_file, part_path
from .results import Entry, GetResult, PutResult

PutFile = Callable[[str, str], PutResult]
GetFile = Callable[[str, str], GetResult]
#: Local and remote modification times closer than this count as equal (FAT: 2 s).
MTIME_WINDOW = 1.0


def _ignore(_message: str) -> None:
    pass


@dataclass
class TreeItem:
    """One file of a tree copy: what it needed and what came of it."""

    action: str                 # "send", "resume", "replace", "skip"
    source: str
    target: str
    size: int
    result: PutResult | GetResult | None = None
    error: str | None = None

    @property
    def bytes_sent(self) -> int:
        r = self.result
        return 0 if r is None else r.size - r.resumed_from


@dataclass
class TreeReport:
    """Every file of a tree copy, in order; ``dry_run`` means nothing was done."""

    items: list[TreeItem] = field(default_factory=list)
    dry_run: bool = False
    errors: list[BaseException] = field(default_factory=list, repr=False)

    @property
    def results(self) -> list[PutResult | GetResult]:
        return [i.result for i in self.items if i.result is not None]

    @property
    def bytes_sent(self) -> int:
        return sum(i.bytes_sent for i in self.items)

    def count(self, action: str) -> int:
        return sum(1 for i in self.items if i.action == action and i.error is None)

    def summary(self) -> str:
        verb = "would be" if self.dry_run else "were"
        parts = [f"{self.count(a)} {a}" for a in ("send", "resume", "replace", "skip")
                 if self.count(a)]
        failed = sum(1 for i in self.items if i.error is not None)
        if failed:
            parts.append(f"{failed} failed")
        return (f"{len(self.items)} files ({', '.join(parts) or 'none'}); "
                f"{self.bytes_sent} bytes {verb} sent" if not self.dry_run else
                f"{len(self.items)} files ({', '.join(parts) or 'none'}); nothing {verb} sent")


def ensure_remote_dir(client: Client, path: str) -> None:
    """``mkdir -p``: an existing folder is fine."""
    try:
        client.mkdir(path, parents=True)
    except PathError as exc:
        if exc.code != "EXISTS" or client.stat(path).entry.type != "dir":
            raise


def _remote_entries(client: Client, path: str) -> dict[str, Entry]:
    try:
        return {e.name: e for e in client.ls(path).entries}
    except NotFoundError:
        return {}


def _local_sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hash_file(fh).hexdigest()


def _run(report: TreeReport, item: TreeItem, transfer: Callable[[], PutResult | GetResult],
         ) -> None:
    """Do one file; a failure is recorded on it and the walk goes on (a lost
    connection or Ctrl-C stops it: the next run resumes)."""
    report.items.append(item)
    if report.dry_run or item.action == "skip":
        return
    try:
        item.result = transfer()
        if item.result.resumed_from and item.action == "send":
            item.action = "resume"          # the plan's snapshot missed a partial: say so
    except ConnectionLost:
        raise
    except (FtpError, OSError) as exc:
        item.error = f"{getattr(exc, 'code', type(exc).__name__)}: {exc}"
        report.errors.append(exc)


def sync_put(client: Client, local_dir: str, remote_dir: str, *,
             put_file: PutFile | None = None, notice: Notice | None = None,
             dry_run: bool = False, overwrite: bool = False,
             checksum: bool = False) -> TreeReport:
    """Upload what is missing or different under ``local_dir`` into ``remote_dir``.

    A remote file of the same size and modification time is skipped without
    hashing anything (uploads keep the mtime, so a rerun sends nothing and asks
    the server for no hash); with ``checksum``, or when only the times differ
    (a file put by a tool that did not keep them), the SHA-256s decide.
    """
    notice = notice or _ignore
    put_file = put_file or (lambda local, remote: client.put(local, remote,
                                                             overwrite=overwrite))
    report = TreeReport(dry_run=dry_run)
    pending = {u.path for u in client.uploads()}
    if not dry_run:
        ensure_remote_dir(client, remote_dir)
    for dirpath, dirnames, filenames in os.walk(local_dir):
        dirnames.sort()
        rel = os.path.relpath(dirpath, local_dir)
        remote_here = remote_dir if rel == "." else posixpath.join(
            remote_dir, *rel.split(os.sep))
        if not dry_run:
            for name in dirnames:
                ensure_remote_dir(client, posixpath.join(remote_here, name))
        there = _remote_entries(client, remote_here)
        absolute = posixpath.join(client.cwd, remote_here)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            if not stat_module.S_ISREG(st.st_mode):
                notice(f"skipping {path}: not a regular file")
                continue
            remote = posixpath.join(remote_here, name)
            entry = there.get(name)
            if entry is None:
                resume = posixpath.normpath(posixpath.join(absolute, name)) in pending
                action = "resume" if resume else "send"
            elif entry.type == "file" and entry.size == st.st_size and (
                    (not checksum and abs(st.st_mtime - entry.mtime) < MTIME_WINDOW)
                    or client.hash(remote).sha256 == _local_sha256(path)):
                action = "skip"
            else:
                action = "replace"
            _run(report, TreeItem(action, path, remote, st.st_size),
                 lambda p=path, r=remote: put_file(p, r))
    return report


def _safe_name(name: str) -> bool:
    return (name not in ("", ".", "..") and "/" not in name and os.sep not in name
            and "\0" not in name)


def _same_local(client: Client, remote: str, entry: Entry, local: str, checksum: bool) -> bool:
    try:
        st = os.stat(local)
    except FileNotFoundError:
        return False
    if not stat_module.S_ISREG(st.st_mode) or st.st_size != entry.size:
        return False
    if not checksum and abs(st.st_mtime - entry.mtime) < MTIME_WINDOW:
        return True
    if client.hash(remote).sha256 != _local_sha256(local):
        return False
    os.utime(local, (st.st_atime, entry.mtime))     # next time size and mtime suffice
    return True


def sync_get(client: Client, remote_dir: str, local_dir: str, *,
             get_file: GetFile | None = None, notice: Notice | None = None,
             dry_run: bool = False, checksum: bool = False,
             report: TreeReport | None = None) -> TreeReport:
    """Download what is missing or different under ``remote_dir`` into ``local_dir``.

    Each downloaded file gets the remote modification time, so that the next
    run recognises it by size and time without hashing.
    """
    notice = notice or _ignore
    get_file = get_file or (lambda remote, local: client.get(remote, local))
    report = report if report is not None else TreeReport(dry_run=dry_run)
    if not dry_run:
        os.makedirs(local_dir, exist_ok=True)
    listing = client.ls(remote_dir)
    for entry in sorted(listing.entries, key=lambda e: e.name):
        remote = posixpath.join(listing.path, entry.name)
        local = os.path.join(local_dir, entry.name)
        if not _safe_name(entry.name):
            notice(f"skipping {remote!r}: unsafe name")
        elif entry.type == "dir":
            sync_get(client, remote, local, get_file=get_file, notice=notice,
                     dry_run=dry_run, checksum=checksum, report=report)
        elif entry.type == "file":
            if _same_local(client, remote, entry, local, checksum):
                action = "skip"
            elif os.path.exists(local):
                action = "replace"
            else:
                action = "resume" if os.path.exists(part_path(local)) else "send"

            def fetch(r: str = remote, lo: str = local, e: Entry = entry) -> GetResult:
                result = get_file(r, lo)
                os.utime(lo, (os.stat(lo).st_atime, e.mtime))
                return result

            _run(report, TreeItem(action, remote, local, entry.size), fetch)
        else:
            notice(f"skipping {remote}: not a regular file")
    return report


def _first_error(report: TreeReport) -> TreeReport:
    if report.errors:
        raise report.errors[0]
    return report


def put_tree(client: Client, local_dir: str, remote_dir: str, *,
             put_file: PutFile | None = None, notice: Notice | None = None) -> list[PutResult]:
    """Upload every regular file under ``local_dir`` into ``remote_dir`` that is not
    there already; returns what was uploaded (``sync_put`` for the whole report)."""
    report = _first_error(sync_put(client, local_dir, remote_dir, put_file=put_file,
                                   notice=notice))
    return [r for r in report.results if isinstance(r, PutResult)]


def get_tree(client: Client, remote_dir: str, local_dir: str, *,
             get_file: GetFile | None = None, notice: Notice | None = None) -> list[GetResult]:
    """Download every file under ``remote_dir`` into ``local_dir`` that is not there
    already; returns what was downloaded (``sync_get`` for the whole report)."""
    report = _first_error(sync_get(client, remote_dir, local_dir, get_file=get_file,
                                   notice=notice))
    return [r for r in report.results if isinstance(r, GetResult)]


__all__ = ["TreeItem", "TreeReport", "ensure_remote_dir", "get_tree", "put_tree",
           "sync_get", "sync_put"]
