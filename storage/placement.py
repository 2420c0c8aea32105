"""Where an upload goes, whether it may go there, and the move into place.

One check (``replaced_size``) serves ``begin``, the commit and both steps of the
group commit, so what is refused at the start and what is refused at the end
can never drift apart.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from . import faults
from .confine import lstat_at, map_oserror, symlink_error
from .context import Parts
from .errors import BadPath, Exists, IsADirectory
from .names import check_username
from .paths import join_user_path, split_user_path

__all__ = ["Target", "place", "replaced_size", "replaced_stat"]


@dataclass(frozen=True)
class Target:
    """The file an upload will become: ``user``'s normalised ``path`` (never the home)."""

    user: str
    parts: Parts
    path: str
    overwrite: bool

    @property
    def name(self) -> str:
        return self.parts[-1]

    @classmethod
    def locate(cls, user: str, path: str, cwd: str, overwrite: bool) -> Target:
        """Normalise a client path; ``BadPath``/``BadUsername``, ``IsADirectory`` for the home."""
        check_username(user)
        parts = split_user_path(path, cwd)
        shown = join_user_path(parts)
        if not parts:
            raise IsADirectory("is a folder", path=shown)
        return cls(user, parts, shown, overwrite)


def replaced_size(pfd: int, target: Target, *, at_commit: bool = False) -> int:
    """Size of the file ``target`` would replace in its folder ``pfd`` (0 if none).

    Raises if the upload may not go there: a symlink or a folder is in the way,
    or a file exists and ``overwrite`` was not asked for (at commit time: one
    appeared meanwhile), or a non-regular file is in the way.
    """
    st = replaced_stat(pfd, target, at_commit=at_commit)
    return 0 if st is None else st.st_size


def replaced_stat(pfd: int, target: Target, *, at_commit: bool = False) -> os.stat_result | None:
    """``replaced_size``'s check, returning the replaced file's ``lstat`` (None if none):
    a commit needs its inode to drop its hash-cache row (issue 13, item 15)."""
    path = target.path
    st = lstat_at(pfd, target.name, path)
    if st is None:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise symlink_error(path)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectory("is a folder", path=path)
    if not target.overwrite:
        raise Exists("file appeared meanwhile" if at_commit else "file exists", path=path)
    if not stat.S_ISREG(st.st_mode):
        raise BadPath("not a regular file", path=path)
    return st


def place(sfd: int, pfd: int, target: Target, part: str) -> None:
    """Move the partial ``part`` (in ``sfd``) to its target in ``pfd``: replace if
    allowed, else link (which fails if a file appeared) and unlink the partial."""
    try:
        if target.overwrite:
            os.replace(part, target.name, src_dir_fd=sfd, dst_dir_fd=pfd)
            return
        try:
            # link(2) refuses to replace atomically, unlike rename(2).
            os.link(part, target.name, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileExistsError:
            raise Exists("file appeared meanwhile", path=target.path)
        faults.crash_point("place.after_link")
        try:
            os.unlink(part, dir_fd=sfd)
        except OSError:
            pass  # a leftover name: recovery, begin or expiry removes it
    except OSError as exc:
        raise map_oserror(exc, target.path)
