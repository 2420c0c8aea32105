"""State shared by the store's parts: the data root's fds, the catalogue, the locks.

Lock order (outer to inner): an ``Upload``'s own lock, then a user lock, then the
registry lock.  User locks serialise everything that changes a user's tree *and*
its quota accounting together (stat-then-rename-then-account must not interleave
with another thread's remove of the same file); they are held only for quick
steps, never while hashing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .confine import open_dir_at
from .db import Database
from .errors import NoSuchUser, NotFound
from .names import check_username

if TYPE_CHECKING:
    from .upload import Upload

__all__ = ["HOMES", "STAGING", "StoreContext"]

HOMES = "homes"
STAGING = "staging"


class StoreContext:
    def __init__(self, root: str, db: Database, clock: Callable[[], float],
                 partial_ttl: float, default_quota: int) -> None:
        self.root = root
        self.db = db
        self.clock = clock
        self.partial_ttl = partial_ttl
        self.default_quota = default_quota
        # The root itself may legitimately sit behind an admin's symlink; below it
        # nothing is followed.
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.homes_fd = self._ensure_dir(self.root_fd, HOMES)
        self.staging_fd = self._ensure_dir(self.root_fd, STAGING)
        self.registry: dict[tuple[str, str], Upload] = {}
        self.registry_lock = threading.Lock()
        self._user_locks: dict[str, threading.RLock] = {}

    @staticmethod
    def _ensure_dir(dir_fd: int, name: str) -> int:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass
        return open_dir_at(dir_fd, name, name)

    def user_lock(self, user: str) -> threading.RLock:
        with self.registry_lock:
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
