"""Remote wildcards: ``*``, ``?`` and ``[...]`` in the last part of a remote path.

The server knows nothing of patterns, so the client lists the folder and
matches names itself, as ``sftp`` does.  As in a shell, ``*`` does not match a
leading dot, and a pattern that matches nothing is an error (``NOT_FOUND``)
rather than being passed on literally.
"""

from __future__ import annotations

import fnmatch
import glob
import posixpath
from collections.abc import Iterable

from .client import Client
from .errors import NotFoundError


def has_magic(path: str) -> bool:
    return glob.has_magic(path)


def expand_remote(client: Client, pattern: str) -> list[str]:
    """The remote paths ``pattern`` names, sorted; itself if it has no wildcard."""
    if not has_magic(pattern):
        return [pattern]
    folder, name = posixpath.split(pattern)
    if has_magic(folder):
        raise NotFoundError("NOT_FOUND", f"{pattern}: wildcards only in the last part "
                                         "of a path")
    entries = client.ls(folder or ".").entries
    hidden_ok = name.startswith(".")
    found = sorted(e.name for e in entries if fnmatch.fnmatchcase(e.name, name)
                   and (hidden_ok or not e.name.startswith(".")))
    if not found:
        raise NotFoundError("NOT_FOUND", f"{pattern}: no match")
    return [posixpath.join(folder, n) if folder else n for n in found]


def expand_all_remote(client: Client, patterns: Iterable[str]) -> list[str]:
    return [path for pattern in patterns for path in expand_remote(client, pattern)]


def expand_local(patterns: Iterable[str]) -> list[str]:
    """Local wildcards, for the shell (where no shell expanded them): a pattern
    that matches nothing, or an existing name, is kept as it is."""
    out: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern)) if has_magic(pattern) else []
        out.extend(found or [pattern])
    return out
