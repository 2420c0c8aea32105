"""Recursive transfers: walk a folder on one side, recreate it on the other.

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

from .client import Client, Notice
from .errors import PathError
from .results import GetResult, PutResult

PutFile = Callable[[str, str], PutResult]
GetFile = Callable[[str, str], GetResult]


def _ignore(_message: str) -> None:
    pass


def ensure_remote_dir(client: Client, path: str) -> None:
    """``mkdir -p``: an existing folder is fine."""
    try:
        client.mkdir(path, parents=True)
    except PathError as exc:
        if exc.code != "EXISTS" or client.stat(path).entry.type != "dir":
            raise


def put_tree(client: Client, local_dir: str, remote_dir: str, *,
             put_file: PutFile | None = None, notice: Notice | None = None) -> list[PutResult]:
    """Upload every regular file under ``local_dir`` into ``remote_dir``."""
    notice = notice or _ignore
    put_file = put_file or (lambda local, remote: client.put(local, remote))
    results: list[PutResult] = []
    ensure_remote_dir(client, remote_dir)
    for dirpath, dirnames, filenames in os.walk(local_dir):
        dirnames.sort()
        rel = os.path.relpath(dirpath, local_dir)
        remote_here = remote_dir if rel == "." else posixpath.join(
            remote_dir, *rel.split(os.sep))
        for name in dirnames:
            ensure_remote_dir(client, posixpath.join(remote_here, name))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if not stat_module.S_ISREG(os.stat(path).st_mode):
                notice(f"skipping {path}: not a regular file")
                continue
            results.append(put_file(path, posixpath.join(remote_here, name)))
    return results


def _safe_name(name: str) -> bool:
    return (name not in ("", ".", "..") and "/" not in name and os.sep not in name
            and "\0" not in name)


def get_tree(client: Client, remote_dir: str, local_dir: str, *,
             get_file: GetFile | None = None, notice: Notice | None = None) -> list[GetResult]:
    """Download every file under ``remote_dir`` into ``local_dir``."""
    notice = notice or _ignore
    get_file = get_file or (lambda remote, local: client.get(remote, local))
    results: list[GetResult] = []
    os.makedirs(local_dir, exist_ok=True)
    listing = client.ls(remote_dir)
    for entry in sorted(listing.entries, key=lambda e: e.name):
        remote = posixpath.join(listing.path, entry.name)
        if not _safe_name(entry.name):
            notice(f"skipping {remote!r}: unsafe name")
        elif entry.type == "dir":
            results += get_tree(client, remote, os.path.join(local_dir, entry.name),
                                get_file=get_file, notice=notice)
        elif entry.type == "file":
            results.append(get_file(remote, os.path.join(local_dir, entry.name)))
        else:
            notice(f"skipping {remote}: not a regular file")
    return results
