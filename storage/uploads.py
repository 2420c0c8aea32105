"""Resumable uploads: partial files in ``staging/<user>/`` plus reservations in the DB.

A partial's declaration (size, sha256) and its quota reservation are rows of the
``uploads`` table, so both survive restarts; the bytes held are always the
partial's real length (:mod:`storage.partials`).  The parts:

* :mod:`storage.upload` -- ``Upload``, the one active writer of a partial;
* :mod:`storage.commit` -- the crash-safe commit and the start-up recovery, with
  the step-by-step argument why a commit is durable when ``put.done`` goes out;
* :mod:`storage.group` -- the group commit of whole small files;
* this module -- ``UploadManager``, which begins, ends, lists and expires them.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Sequence

from . import commit as commit_step
from . import faults
from .confine import lstat_at, map_oserror
from .context import StoreContext, user_parent
from .errors import NoSuchUser, NotFound, StorageError, UploadBusy
from .group import GroupCommit
from .models import CommitResult, PartialInfo, SmallFile
from .names import check_username
from .partials import check_declaration, drop_partial, open_partial, part_name, unlink_quietly
from .paths import join_user_path, split_user_path
from .placement import Target, replaced_size
from .registry import PENDING, WriterRegistry
from .reservations import check_quota, touch, upsert
from .upload import Upload

__all__ = ["UploadManager"]


class UploadManager:
    """Every unfinished upload of every user: begun, resumed, committed, listed, expired.

    Owns the ``uploads`` rows (declarations, reservations, commit marks), the
    staging folders ``staging/<user>/`` and the registry of active writers; it
    moves files into ``homes/`` only through a commit, and it adds to
    ``users.used`` only when a commit is accounted.  It may not create or remove
    anything else in a home (that is ``FileTree``'s), nor touch accounts.
    """

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx
        self.registry = WriterRegistry(os.path.join(ctx.root, "run", "writers.lock"))
        self._group = GroupCommit(ctx, self.registry)

    def revoke(self, user: str | None = None) -> None:
        """Close active writers (all, or one user's) without touching their partials."""
        self.registry.revoke(user)

    # ----- begin
    def begin(self, user: str, path: str, size: int, sha256: str | None, *, cwd: str = "/",
              overwrite: bool = False) -> Upload:
        target = Target.locate(user, path, cwd, overwrite)
        sha256 = check_declaration(size, sha256)
        shown = target.path
        with self.ctx.user_lock(user):
            with user_parent(self.ctx, user, target.parts) as pfd:
                replaced = replaced_size(pfd, target)
            # Claimed (across processes) before anything is discarded; see storage.registry.
            if not self.registry.try_claim(user, shown, PENDING):
                raise UploadBusy("an upload to this path is in progress", path=shown)
            try:
                upload = self._begin_claimed(target, size, sha256, replaced)
            except BaseException:
                self.registry.drop(user, shown, PENDING)
                raise
            self.registry.claim(user, shown, upload)
            return upload

    def _begin_claimed(self, target: Target, size: int, sha256: str | None,
                       replaced: int) -> Upload:
        """``begin`` once the target is claimed (user lock held)."""
        user, shown = target.user, target.path
        need = max(0, size - replaced)
        db = self.ctx.db
        row = db.one("SELECT * FROM uploads WHERE user = ? AND path = ?", (user, shown))
        # Pre-check before discarding anything: a refused begin keeps the old partial.
        check_quota(db.conn(), user, shown, need)
        resume = row is not None and row["size"] == size and row["sha256"] == sha256
        now = self.ctx.clock()
        with self.ctx.staging(user, create=True) as sfd:
            pname = part_name(shown)
            try:
                if not resume:
                    unlink_quietly(sfd, pname)  # before the row changes: never splice
                    faults.crash_point("begin.after_unlink")
                with db.write() as conn:
                    check_quota(conn, user, shown, need)
                    upsert(conn, user, shown, size, sha256, need, now, resume)
            except OSError as exc:
                raise map_oserror(exc, shown)
            faults.crash_point("begin.after_row")
            try:
                fd, length = open_partial(sfd, pname, size)
            except OSError as exc:
                if not resume:      # nothing of it may stay reserved: begin failed
                    self._forget_quietly(user, shown)
                raise map_oserror(exc, shown)
        return Upload(self, target, size=size, sha256=sha256, fd=fd, offset=length,
                      restarted=row is not None and not resume)

    # ----- ending a writer (the caller holds upload._lock)
    def release(self, upload: Upload) -> None:
        try:
            with self.ctx.db.write() as conn:
                touch(conn, upload.user, upload.path, self.ctx.clock())
        except (StorageError, sqlite3.Error):
            pass  # only a timestamp; the partial itself is intact
        finally:
            upload._close("released")
            self.registry.drop(upload.user, upload.path, upload)

    def discard(self, upload: Upload) -> None:
        try:
            with self.ctx.user_lock(upload.user):
                drop_partial(self.ctx, upload.user, upload.path)
        finally:
            upload._close("discarded")
            self.registry.drop(upload.user, upload.path, upload)

    def commit(self, upload: Upload) -> CommitResult:
        """Verify, make durable, move into place (:func:`storage.commit.commit`)."""
        return commit_step.commit(self.ctx, self.registry, upload, self.discard)

    def store_small(self, user: str,
                    files: Sequence[SmallFile]) -> list[CommitResult | StorageError]:
        """The group commit (:class:`storage.group.GroupCommit`)."""
        return self._group.store(user, files)

    def recover(self) -> None:
        """Finish or roll back commits interrupted by a crash (:func:`storage.commit.recover`)."""
        commit_step.recover(self.ctx, self.registry)

    def _forget_quietly(self, user: str, path: str) -> None:
        try:
            drop_partial(self.ctx, user, path)
        except StorageError:
            pass  # a row left behind holds nothing; it expires

    # ----- inspection and clean-up
    def list(self, user: str) -> list[PartialInfo]:
        check_username(user)
        rows = self.ctx.db.all("SELECT * FROM uploads WHERE user = ? ORDER BY path", (user,))
        if not rows:
            return []
        result = []
        with self.ctx.staging(user, create=True) as sfd:
            for row in rows:
                st = lstat_at(sfd, part_name(row["path"]), row["path"])
                held = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0
                updated = max(row["updated"], st.st_mtime if st is not None else 0.0)
                result.append(PartialInfo(path=row["path"], size=row["size"],
                                          offset=min(held, row["size"]), sha256=row["sha256"],
                                          updated=updated))
        return result

    def abort(self, user: str, path: str, cwd: str = "/") -> str:
        check_username(user)
        shown = join_user_path(split_user_path(path, cwd))
        with self.ctx.user_lock(user), self.registry.holding(user, shown) as claimed:
            if not claimed:
                raise UploadBusy("an upload to this path is in progress", path=shown)
            if self.ctx.db.one("SELECT 1 FROM uploads WHERE user = ? AND path = ?",
                               (user, shown)) is None:
                raise NotFound("no unfinished upload for this path", path=shown)
            drop_partial(self.ctx, user, shown)
        return shown

    def expire(self, now: float | None = None) -> int:
        """Drop inactive partials untouched for ``partial_ttl`` (row time or file mtime).

        Stray ``.part`` files without a row (left by a crash) go by the same rule.
        """
        now = self.ctx.clock() if now is None else now
        ttl = self.ctx.partial_ttl
        removed = 0
        for user_row in self.ctx.db.all("SELECT name FROM users"):
            user = user_row["name"]
            with self.ctx.user_lock(user):
                try:
                    sfd = self.ctx.staging_dir_fd(user)
                except NoSuchUser:
                    continue
                try:
                    removed += self._expire_user(user, sfd, now, ttl)
                finally:
                    os.close(sfd)
        return removed

    def _expire_user(self, user: str, sfd: int, now: float, ttl: float) -> int:
        removed = 0
        known = set()
        for row in self.ctx.db.all("SELECT * FROM uploads WHERE user = ?", (user,)):
            path = row["path"]
            pname = part_name(path)
            known.add(pname)
            if row["commit_ino"] is not None:
                continue
            st = lstat_at(sfd, pname, path)
            updated = max(row["updated"], st.st_mtime if st is not None else 0.0)
            if now - updated < ttl:
                continue
            # Stale, unless a writer (in any process) holds it: claimed while it goes.
            with self.registry.holding(user, path) as claimed:
                if claimed:
                    drop_partial(self.ctx, user, path)
                    removed += 1
        for name in os.listdir(sfd):
            if not name.endswith(".part") or name in known:
                continue
            st = lstat_at(sfd, name, "/")
            if st is not None and now - st.st_mtime >= ttl:
                unlink_quietly(sfd, name)
                removed += 1
        return removed
