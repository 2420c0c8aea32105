"""State shared by the store's parts: the data root's fds, the catalogue, the user locks.

Lock order (outer to inner): an ``Upload``'s own lock, then a user lock, then the
writer registry's lock (:mod:`storage.registry`).  User locks serialise
everything that changes a user's tree *and* its quota accounting together
(stat-then-rename-then-account must not interleave with another thread's remove
of the same file); they are held only for quick steps, never while hashing.

This module is a leaf of the storage package's parts: it imports only the
low-level helpers (``confine``, ``db``, ``names``), never the tree or uploads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .confine import open_dir_at, walk
from .db import Database
from .errors import NoSuchUser, NotFound
from .names import check_username
from .workdir import WorkDir

__all__ = ["HOMES", "STAGING", "Parts", "StoreContext", "open_user_dir", "user_dir",
           "user_parent"]

HOMES = "homes"
STAGING = "staging"

Parts = tuple[str, ...]


class StoreContext:
    """The data root's open folders, the catalogue, the clock and one lock per user.

    Owns the fds of ``root``, ``homes`` and ``staging`` (closed by ``close``)
    and the per-user locks.  It knows nothing of uploads or trees: the parts
    that do (``FileTree``, ``UploadManager``) share it.
    """

    def __init__(self, root: str, db: Database, clock: Callable[[], float],
                 partial_ttl: float, default_quota: int, *, max_partials: int = 1000,
                 folder_cost: int = 4096) -> None:
        self.root = root
        self.db = db
        self.clock = clock
        self.partial_ttl = partial_ttl
        self.default_quota = default_quota
        #: Unfinished uploads one user may hold (issue 13, item 7).
        self.max_partials = max_partials
        #: Bytes of quota one folder costs (issue 13, item 8): a folder takes a block.
        self.folder_cost = folder_cost
        # The root itself may legitimately sit behind an admin's symlink; below it
        # nothing is followed.
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.homes_fd = self._ensure_dir(self.root_fd, HOMES)
        self.staging_fd = self._ensure_dir(self.root_fd, STAGING)
        self._locks_lock = threading.Lock()
        self._user_locks: dict[str, threading.RLock] = {}

    @staticmethod
    def _ensure_dir(dir_fd: int, name: str) -> int:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass
        return open_dir_at(dir_fd, name, name)

    def user_lock(self, user: str) -> threading.RLock:
        with self._locks_lock:
            lock = self._user_locks.get(user)
            if lock is None:
                lock = self._user_locks[user] = threading.RLock()
            return lock

    def home_fd(self, user: str) -> int:
        """Open ``homes/<user>``; ``NoSuchUser`` if it does not exist."""
        return self._user_dir(self.homes_fd, user)

    def staging_dir_fd(self, user: str, create: bool = False) -> int:
        """Open ``staging/<user>`` (optionally creating it) where the user's partials live."""
        if create:
            try:
                os.mkdir(check_username(user), 0o700, dir_fd=self.staging_fd)
            except FileExistsError:
                pass
        return self._user_dir(self.staging_fd, user)

    @contextmanager
    def staging(self, user: str, create: bool = False) -> Iterator[int]:
        """``staging_dir_fd`` as a context manager that closes the fd."""
        fd = self.staging_dir_fd(user, create)
        try:
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def _user_dir(base_fd: int, user: str) -> int:
        name = check_username(user)
        try:
            return open_dir_at(base_fd, name, "/")
        except NotFound:
            raise NoSuchUser("no such user", user=name)

    def close(self) -> None:
        for fd in (self.staging_fd, self.homes_fd, self.root_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def start_fd(ctx: StoreContext, user: str, parts: Parts, cwd: str = "/") -> tuple[int, int]:
    """``(fd, n)``: an open folder (caller closes) holding ``parts[:n]``, from which the
    rest is to be walked.  The session's working folder when ``cwd`` is a ``WorkDir`` of
    this user and ``parts`` lie below it; else the home (n = 0)."""
    if isinstance(cwd, WorkDir) and cwd.user == user:
        depth = len(cwd.parts)
        if parts[:depth] == cwd.parts:
            fd = cwd.dup()
            if fd is not None:
                return fd, depth
    return ctx.home_fd(user), 0


def open_user_dir(ctx: StoreContext, user: str, parts: Parts, cwd: str = "/") -> int:
    """fd of the folder ``parts`` in ``user``'s home (caller closes)."""
    base, done = start_fd(ctx, user, parts, cwd)
    try:
        return walk(base, parts[done:], parts[:done])
    finally:
        os.close(base)


@contextmanager
def user_dir(ctx: StoreContext, user: str, parts: Parts, cwd: str = "/") -> Iterator[int]:
    fd = open_user_dir(ctx, user, parts, cwd)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def user_parent(ctx: StoreContext, user: str, parts: Parts, cwd: str = "/") -> Iterator[int]:
    """fd of the folder that holds the last component of ``parts`` (which must be non-empty)."""
    with user_dir(ctx, user, parts[:-1], cwd) as fd:
        yield fd
