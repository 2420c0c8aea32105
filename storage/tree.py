"""The confined file tree: listing, stat, mkdir/rmdir/remove/rename, reading, hashing.

All methods take client paths, normalise them with :mod:`storage.paths` and reach
the disk only through :mod:`storage.confine`, so a symlink inside a home is never
followed: operations that meet one raise ``BadPath``; ``list_dir`` shows it as
type "other".  Operations that change the tree and the quota together run under
the user's lock so the accounting stays exact under concurrency.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from .confine import (
    entry_type,
    lstat_at,
    map_oserror,
    open_regular_file,
    symlink_error,
    walk,
)
from .context import Parts, StoreContext, open_user_dir, start_fd, user_dir, user_parent
from .errors import BadPath, Exists, IsADirectory, NotADirectory, NotFound
from .hashing import cache_forget, cache_lookup, cache_renamed, fd_sha256
from .models import Entry
from .names import check_username
from .paths import join_user_path, split_user_path
from .reservations import check_quota

__all__ = ["FileTree", "open_user_dir", "start_fd", "user_parent"]


def _make_entry(name: str, path: str, st: os.stat_result) -> Entry:
    kind = entry_type(st)
    # Folder sizes are file-system noise; report 0 so listings are deterministic.
    return Entry(name=name, path=path, type=kind, size=st.st_size if kind == "file" else 0,
                 mtime=st.st_mtime)


def _lstat_existing(dir_fd: int, name: str, path: str) -> os.stat_result:
    st = lstat_at(dir_fd, name, path)
    if st is None:
        raise NotFound("no such file or folder", path=path)
    if stat.S_ISLNK(st.st_mode):
        raise symlink_error(path)
    return st


def _pages(fd: int, parts: Parts, page_size: int) -> Iterator[list[Entry]]:
    """``FileTree.iter_dir``'s generator: owns ``fd`` and closes it when done or closed."""
    try:
        with os.scandir(fd) as it:
            page: list[Entry] = []
            for de in it:
                try:
                    de.name.encode("utf-8")
                    st = de.stat(follow_symlinks=False)
                except (UnicodeEncodeError, FileNotFoundError):
                    continue  # not nameable on the wire / removed while listing
                page.append(_make_entry(de.name, join_user_path((*parts, de.name)), st))
                if len(page) >= page_size:
                    yield page
                    page = []
            if page:
                yield page
    finally:
        os.close(fd)


class FileTree:
    """The confined file tree of every user: what a client sees under its home.

    Owns nothing but its reference to the shared ``StoreContext``.  It may
    change files and folders inside ``homes/<user>/`` and give bytes back to
    ``users.used`` when a file leaves the tree (remove, replace by rename), both
    under the user's lock.  It may not touch ``staging/``, upload rows or
    reservations: those belong to the ``UploadManager``; and it never follows
    a symbolic link.
    """

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    @staticmethod
    def locate(user: str, path: str, cwd: str = "/") -> Parts:
        check_username(user)
        return split_user_path(path, cwd)

    def resolve(self, user: str, path: str, cwd: str = "/") -> str:
        return join_user_path(self.locate(user, path, cwd))

    def list_dir(self, user: str, path: str, cwd: str = "/") -> list[Entry]:
        parts = self.locate(user, path, cwd)
        entries = []
        with user_dir(self.ctx, user, parts, cwd) as fd, os.scandir(fd) as it:
            for de in it:
                try:
                    de.name.encode("utf-8")
                except UnicodeEncodeError:
                    continue  # not UTF-8 on disk: cannot be named on the wire
                try:
                    st = de.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while listing
                entries.append(_make_entry(de.name, join_user_path((*parts, de.name)), st))
        entries.sort(key=lambda e: e.name)
        return entries

    def iter_dir(self, user: str, path: str, cwd: str = "/",
                 page_size: int = 256) -> Iterator[list[Entry]]:
        """The folder's entries in pages of at most ``page_size``, in directory order
        (unsorted: sorting needs the whole listing).  The folder is opened now (errors
        as ``list_dir``); the pages are read from disk only as they are asked for, so
        memory stays one page whatever the folder holds.  Close the iterator (or
        exhaust it) to release its descriptor."""
        if not isinstance(page_size, int) or page_size < 1:
            raise ValueError("page_size must be a positive integer")
        parts = self.locate(user, path, cwd)
        fd = open_user_dir(self.ctx, user, parts, cwd)
        return _pages(fd, parts, page_size)

    def stat(self, user: str, path: str, cwd: str = "/") -> Entry:
        parts = self.locate(user, path, cwd)
        shown = join_user_path(parts)
        if not parts:
            with user_dir(self.ctx, user, parts, cwd) as fd:
                return _make_entry("/", "/", os.fstat(fd))
        with user_parent(self.ctx, user, parts, cwd) as pfd:
            return _make_entry(parts[-1], shown, _lstat_existing(pfd, parts[-1], shown))

    def is_dir(self, user: str, path: str, cwd: str = "/") -> str:
        parts = self.locate(user, path, cwd)
        with user_dir(self.ctx, user, parts, cwd):
            return join_user_path(parts)

    def mkdir(self, user: str, path: str, cwd: str = "/", parents: bool = False) -> str:
        parts = self.locate(user, path, cwd)
        shown = join_user_path(parts)
        if not parts:
            if parents:
                return shown
            raise Exists("already exists", path=shown)
        with self.ctx.user_lock(user):
            fd, done = start_fd(self.ctx, user, parts[:-1], cwd)   # the last is always made
            try:
                for i, name in enumerate(parts):
                    if i < done:
                        continue
                    here = join_user_path(parts[: i + 1])
                    last = i == len(parts) - 1
                    st = lstat_at(fd, name, here)
                    if st is None:
                        if not (last or parents):
                            raise NotFound("parent folder does not exist", path=here)
                        self._charge_folders(user, 1)     # QuotaExceeded before it exists
                        try:
                            os.mkdir(name, dir_fd=fd)
                        except OSError as exc:
                            self._charge_folders(user, -1)
                            raise map_oserror(exc, here)
                    elif stat.S_ISLNK(st.st_mode):
                        raise symlink_error(here)
                    elif last:
                        if parents and stat.S_ISDIR(st.st_mode):
                            return shown
                        raise Exists("already exists", path=here)
                    elif not stat.S_ISDIR(st.st_mode):
                        raise NotADirectory("not a folder", path=here)
                    if not last:
                        nxt = walk(fd, (name,))
                        os.close(fd)
                        fd = nxt
            finally:
                os.close(fd)
        return shown

    def rmdir(self, user: str, path: str, cwd: str = "/") -> str:
        parts = self.locate(user, path, cwd)
        shown = join_user_path(parts)
        if not parts:
            raise BadPath("the home folder cannot be removed", path=shown)
        with self.ctx.user_lock(user), user_parent(self.ctx, user, parts, cwd) as pfd:
            st = _lstat_existing(pfd, parts[-1], shown)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectory("not a folder", path=shown)
            try:
                os.rmdir(parts[-1], dir_fd=pfd)
            except OSError as exc:
                raise map_oserror(exc, shown)
            self._charge_folders(user, -1)
        return shown

    def remove(self, user: str, path: str, cwd: str = "/") -> str:
        parts = self.locate(user, path, cwd)
        shown = join_user_path(parts)
        if not parts:
            raise IsADirectory("is a folder", path=shown)
        with self.ctx.user_lock(user), user_parent(self.ctx, user, parts, cwd) as pfd:
            st = _lstat_existing(pfd, parts[-1], shown)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectory("is a folder; use rmdir", path=shown)
            try:
                os.unlink(parts[-1], dir_fd=pfd)
            except OSError as exc:
                raise map_oserror(exc, shown)
            if stat.S_ISREG(st.st_mode):
                self._give_back(user, st)
        return shown

    def _charge_folders(self, user: str, count: int) -> None:
        """``count`` folders made (> 0) or removed (< 0): each costs ``folder_cost`` bytes of
        quota, as the block it takes on disk (issue 13, item 8), so folders are not free.
        Made ones must fit beside what is used and reserved (``QuotaExceeded``).  Caller
        holds the user lock."""
        cost = count * self.ctx.folder_cost
        if cost == 0:
            return
        with self.ctx.db.write() as conn:
            if cost > 0:
                check_quota(conn, user, "", cost)   # "" is no upload: every one counts
            conn.execute("UPDATE users SET used = MAX(0, used + ?) WHERE name = ?",
                         (cost, user))

    def _give_back(self, user: str, st: os.stat_result) -> None:
        """A file left the tree: return its bytes to the quota, forget its hash."""
        with self.ctx.db.write() as conn:
            conn.execute("UPDATE users SET used = MAX(0, used - ?) WHERE name = ?",
                         (st.st_size, user))
            cache_forget(conn, st)

    def rename(self, user: str, src: str, dst: str, cwd: str = "/",
               overwrite: bool = False) -> tuple[str, str]:
        sparts = self.locate(user, src, cwd)
        dparts = self.locate(user, dst, cwd)
        sshown, dshown = join_user_path(sparts), join_user_path(dparts)
        if not sparts:
            raise BadPath("the home folder cannot be moved", path=sshown)
        if not dparts:
            raise BadPath("the home folder cannot be replaced", path=dshown)
        if dparts[: len(sparts)] == sparts and dparts != sparts:
            raise BadPath("a folder cannot be moved inside itself", path=dshown)
        with (self.ctx.user_lock(user), user_parent(self.ctx, user, sparts, cwd) as sfd,
              user_parent(self.ctx, user, dparts, cwd) as dfd):
            sst = _lstat_existing(sfd, sparts[-1], sshown)
            if sparts == dparts:
                return sshown, dshown
            dst_st = lstat_at(dfd, dparts[-1], dshown)
            if dst_st is not None:
                if stat.S_ISLNK(dst_st.st_mode):
                    raise symlink_error(dshown)
                if not overwrite:
                    raise Exists("destination exists", path=dshown)
                if stat.S_ISDIR(dst_st.st_mode) and not stat.S_ISDIR(sst.st_mode):
                    raise IsADirectory("destination is a folder", path=dshown)
                if not stat.S_ISDIR(dst_st.st_mode) and stat.S_ISDIR(sst.st_mode):
                    raise NotADirectory("destination is not a folder", path=dshown)
            try:
                os.rename(sparts[-1], dparts[-1], src_dir_fd=sfd, dst_dir_fd=dfd)
            except OSError as exc:
                raise map_oserror(exc, dshown)
            if dst_st is not None and stat.S_ISREG(dst_st.st_mode):
                self._give_back(user, dst_st)
            elif dst_st is not None and stat.S_ISDIR(dst_st.st_mode):
                self._charge_folders(user, -1)        # an empty folder was replaced
            if stat.S_ISREG(sst.st_mode):
                moved = lstat_at(dfd, dparts[-1], dshown)
                if moved is not None:
                    with self.ctx.db.write() as conn:
                        cache_renamed(conn, sst, moved)
        return sshown, dshown

    def open_read(self, user: str, path: str, cwd: str = "/") -> tuple[int, int]:
        parts = self.locate(user, path, cwd)
        shown = join_user_path(parts)
        if not parts:
            raise IsADirectory("is a folder", path=shown)
        with user_parent(self.ctx, user, parts, cwd) as pfd:
            fd, st = open_regular_file(pfd, parts[-1], shown)
        return fd, st.st_size

    def file_hash(self, user: str, path: str, cwd: str = "/") -> tuple[str, int]:
        fd, _ = self.open_read(user, path, cwd)
        try:
            length, digest = fd_sha256(self.ctx.db, fd)
            return digest, length
        finally:
            os.close(fd)

    def open_hashed(self, user: str, path: str, cwd: str = "/") -> tuple[int, int, str]:
        """``(fd, size, sha256)`` of one and the same file: opened first, then hashed
        (or looked up in the cache) through that descriptor, so a concurrent
        overwrite can never pair these bytes with another file's digest.  The
        caller closes ``fd``."""
        fd, _ = self.open_read(user, path, cwd)
        try:
            size, digest = fd_sha256(self.ctx.db, fd)
        except BaseException:
            os.close(fd)
            raise
        return fd, size, digest

    def cached_hash(self, user: str, path: str, cwd: str = "/") -> tuple[str, int] | None:
        parts = self.locate(user, path, cwd)
        shown = join_user_path(parts)
        if not parts:
            raise IsADirectory("is a folder", path=shown)
        with user_parent(self.ctx, user, parts, cwd) as pfd:
            st = _lstat_existing(pfd, parts[-1], shown)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectory("is a folder", path=shown)
        if not stat.S_ISREG(st.st_mode):
            raise BadPath("not a regular file", path=shown)
        cached = cache_lookup(self.ctx.db, st)
        return None if cached is None else (cached, st.st_size)
