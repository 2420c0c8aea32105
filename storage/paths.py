"""Pure normalisation of client-supplied paths into user paths.

Nothing here touches the disk: it turns what a client sent (relative to its
working folder) into a list of safe components.  Confinement against symlinks is
the job of :mod:`storage.confine`; this module only guarantees that no component
is ``..``, empty, or carries bytes a file system or a terminal would misread.
"""

from __future__ import annotations

from .errors import BadPath

__all__ = ["MAX_DEPTH", "MAX_NAME_BYTES", "MAX_PATH_BYTES", "join_user_path", "split_user_path"]

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
#: Folder levels below the home a path may name (``/a/b`` is 2).  Every operation walks
#: its path one ``openat`` per level, on the reactor for quick commands; 4096 bytes
#: allow 2,048 levels, and one such ``stat`` held the loop for tens of milliseconds.
#: 64 levels is deeper than real trees go (issue 13, item 1).
MAX_DEPTH = 64


def _check_text(path: object, what: str) -> str:
    if not isinstance(path, str):
        raise BadPath(f"{what} must be text")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (e.g. from surrogateescape) are not valid Unicode.
        raise BadPath(f"{what} is not valid Unicode", path=None)
    if len(encoded) > MAX_PATH_BYTES:
        raise BadPath(f"{what} is longer than {MAX_PATH_BYTES} bytes", path=None)
    for char in path:
        code = ord(char)
        # NUL truncates C strings, control characters confuse terminals and logs,
        # and backslash means a separator to Windows clients.
        if code < 0x20 or code == 0x7F:
            raise BadPath(f"{what} contains a control character", path=None)
        if char == "\\":
            raise BadPath(f"{what} contains a backslash", path=path)
    return path


def _apply(base: list[str], path: str) -> list[str]:
    parts = list(base)
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                raise BadPath("path goes above the home folder", path=path)
            parts.pop()
            continue
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise BadPath(f"a path component is longer than {MAX_NAME_BYTES} bytes", path=None)
        parts.append(name)
    return parts


def split_user_path(path: str, cwd: str = "/") -> tuple[str, ...]:
    """Resolve ``path`` against ``cwd`` into normalised components.

    Absolute paths start at the home root.  ``.``, empty components and ``//``
    collapse; ``..`` pops a component and is refused if it would leave the home.
    Raises ``BadPath`` for non-text, invalid Unicode, control characters (< 0x20
    and DEL), backslash, components over 255 UTF-8 bytes, paths over 4096 and
    paths more than ``MAX_DEPTH`` components deep.
    """
    _check_text(cwd, "working folder")
    _check_text(path, "path")
    base = [] if path.startswith("/") else _apply([], cwd)
    parts = _apply(base, path)
    if len(join_user_path(parts).encode("utf-8")) > MAX_PATH_BYTES:
        raise BadPath(f"path is longer than {MAX_PATH_BYTES} bytes", path=None)
    if len(parts) > MAX_DEPTH:
        raise BadPath(f"path is deeper than {MAX_DEPTH} folder levels", path=None)
    return tuple(parts)


def join_user_path(parts: tuple[str, ...] | list[str]) -> str:
    """Components back to a normalised user path: ``()`` -> ``"/"``, ``("a","b")`` -> ``"/a/b"``."""
    return "/" + "/".join(parts)
