"""Commands on remote names: ls, stat, mkdir, rmdir, rm, mv, hash, uploads, abort.

``ls``, ``stat`` and ``rm`` take several paths and remote wildcards; ``ls``
behaves like ``ls(1)`` on a file (one line for it), ``-R`` recurses, ``-h``
prints human sizes (so ``-h`` is not help here: use ``--help``).
"""

from __future__ import annotations

import argparse
import posixpath
import time

from .errors import NotFoundError
from .failures import SomeFailed
from .globs import expand_all_remote, expand_remote
from .output import Outcome
from .progress import human_size
from .registry import App, about, arg, command, remote_target
from .results import Entry


def entry_line(e: Entry, long: bool, human: bool = False, name: str | None = None) -> str:
    shown = (name if name is not None else e.name) + ("/" if e.type == "dir" else "")
    if not long:
        return shown
    kind = {"dir": "d", "file": "-"}.get(e.type, "?")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime))
    size = human_size(e.size) if human else str(e.size)
    return f"{kind} {size:>14} {when} {shown}"


def _visible(entries: tuple[Entry, ...], all_names: bool) -> list[Entry]:
    return sorted((e for e in entries if all_names or not e.name.startswith(".")),
                  key=lambda e: e.name)


@command("ls", "list remote folders, or show remote files (wildcards allowed)",
         arg("-l", dest="long", action="store_true", help="long format: type, size, date"),
         arg("-h", "--human-readable", dest="human", action="store_true",
             help="sizes in KiB, MiB, GiB (with -l)"),
         arg("-a", "--all", dest="all", action="store_true",
             help="also names that start with a dot"),
         arg("-R", "--recursive", dest="recursive", action="store_true",
             help="list folders and everything below them"),
         arg("paths", nargs="*", metavar="path"))
def do_ls(app: App, a: argparse.Namespace) -> Outcome:
    client = app.client
    targets = expand_all_remote(client, a.paths or ["."])
    files: list[tuple[str, Entry]] = []
    folders: list[str] = []
    for path in targets:
        with about(path):
            entry = client.stat(path).entry
        if entry.type == "dir":
            folders.append(path)
        else:
            files.append((path, entry))
    blocks: list[str] = []
    data: list[dict[str, object]] = []
    if files:
        blocks.append("\n".join(entry_line(e, a.long, a.human, name=p) for p, e in files))
        data += [{"path": p, "entries": [e]} for p, e in files]
    headers = len(targets) > 1 or a.recursive
    queue = list(folders)
    while queue:
        path = queue.pop(0)
        with about(path):
            listing = client.ls(path)
        shown = _visible(listing.entries, a.all)
        lines = [entry_line(e, a.long, a.human) for e in shown]
        blocks.append((f"{listing.path}:\n" if headers else "") + "\n".join(lines))
        data.append({"path": listing.path, "entries": list(listing.entries)})
        if a.recursive:
            queue[:0] = [posixpath.join(listing.path, e.name) for e in shown
                         if e.type == "dir"]
    if len(data) == 1 and not a.recursive:
        only = data[0]
        return Outcome({"path": only["path"], "entries": only["entries"]},
                       blocks[0].strip("\n") or None)
    return Outcome({"listings": data}, "\n\n".join(b.rstrip("\n") for b in blocks) or None)


@command("stat", "show remote files' or folders' details (wildcards allowed)",
         arg("paths", nargs="+", metavar="path"))
def do_stat(app: App, a: argparse.Namespace) -> Outcome:
    results, texts = [], []
    for path in expand_all_remote(app.client, a.paths):
        with about(path):
            st = app.client.stat(path)
        e = st.entry
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.mtime))
        results.append(st)
        texts.append(f"path: {st.path}\ntype: {e.type}\nsize: {e.size}\nmtime: {when}")
    if len(results) == 1:
        return Outcome(results[0], texts[0])
    return Outcome({"stats": results}, "\n\n".join(texts))


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


def remove_tree(app: App, path: str) -> list[str]:
    """``rm -r``: files first, then each folder once it is empty (deepest first)."""
    client, removed = app.client, []
    listing = client.ls(path)
    for e in listing.entries:
        child = posixpath.join(listing.path, e.name)
        if e.type == "dir":
            removed += remove_tree(app, child)
        else:
            removed.append(client.rm(child))
    removed.append(client.rmdir(listing.path))
    return removed


@command("rm", "remove remote files (wildcards allowed; -r for folders)",
         arg("-r", "-R", "--recursive", dest="recursive", action="store_true",
             help="remove folders and everything in them"),
         arg("-f", "--force", dest="force", action="store_true",
             help="a missing file is not an error"),
         arg("paths", nargs="+", metavar="path"))
def do_rm(app: App, a: argparse.Namespace) -> Outcome:
    removed: list[str] = []
    failures: list[BaseException] = []
    for pattern in a.paths:
        try:
            with about(pattern):
                paths = expand_remote(app.client, pattern)
            for path in paths:
                with about(path):
                    if a.recursive and app.client.stat(path).entry.type == "dir":
                        removed += remove_tree(app, path)
                    else:
                        removed.append(app.client.rm(path))
        except NotFoundError as exc:
            if not a.force:
                if len(a.paths) == 1:
                    raise
                app.out.error_line(exc)
                failures.append(exc)
    if failures:
        raise SomeFailed(len(failures), len(a.paths), failures[0])
    if len(a.paths) == 1 and len(removed) == 1 and not a.recursive:
        return Outcome({"path": removed[0]})
    return Outcome({"removed": removed})


@command("mv", "move or rename a remote file or folder", arg("src"), arg("dst"),
         arg("--overwrite", action="store_true", help="replace an existing DST"))
def do_mv(app: App, a: argparse.Namespace) -> Outcome:
    with about(a.src):
        dst = remote_target(app.client, a.dst, posixpath.basename(a.src.rstrip("/")))
        return Outcome(app.client.mv(a.src, dst, overwrite=a.overwrite))


@command("hash", "print a remote file's SHA-256 (like sha256sum)", arg("path"),
         arg("--blake3", action="store_true",
             help="print its BLAKE3 instead (like b3sum; a server that offers BLAKE3)"))
def do_hash(app: App, a: argparse.Namespace) -> Outcome:
    with about(a.path):
        h = app.client.hash(a.path, digest="blake3" if a.blake3 else "sha256")
    return Outcome(h, f"{h.blake3 if a.blake3 else h.sha256}  {h.path}")


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
