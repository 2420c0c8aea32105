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
from .digests import BLAKE3, check_digest
from .errors import IntegrityError, NoSuchUser, NotFound, StorageError, TooManyPartials, UploadBusy
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
              overwrite: bool = False, blake3: str | None = None) -> Upload:
        target = Target.locate(user, path, cwd, overwrite)
        sha256 = check_declaration(size, sha256)
        blake3 = check_digest(blake3, BLAKE3)
        if sha256 is not None and blake3 is not None:
            raise ValueError("declare one digest, sha256 or blake3")
        shown = target.path
        with self.ctx.user_lock(user):
            with user_parent(self.ctx, user, target.parts) as pfd:
                replaced_size(pfd, target)      # raises if the upload may not go there
            # Claimed (across processes) before anything is discarded; see storage.registry.
            if not self.registry.try_claim(user, shown, PENDING):
                raise UploadBusy("an upload to this path is in progress", path=shown)
            try:
                upload = self._begin_claimed(target, size, sha256, blake3)
            except BaseException:
                self.registry.drop(user, shown, PENDING)
                raise
            self.registry.claim(user, shown, upload)
            return upload

    def _begin_claimed(self, target: Target, size: int, sha256: str | None,
                       blake3: str | None = None) -> Upload:
        """``begin`` once the target is claimed (user lock held)."""
        user, shown = target.user, target.path
        # The whole declared size, also for an overwrite (issue 13, item 3): the
        # replaced file stays counted until the commit replaces it, so the partial
        # must be covered on its own -- however often it is abandoned and its
        # target moved away, partials on disk never pass the quota.
        need = size
        db = self.ctx.db
        row = db.one("SELECT * FROM uploads WHERE user = ? AND path = ?", (user, shown))
        if row is not None and row["commit_ino"] is not None:
            commit_step.settle(self.ctx, user, shown)   # a commit left half-accounted
            row = db.one("SELECT * FROM uploads WHERE user = ? AND path = ?",
                         (user, shown))
        if row is None:
            self._check_partial_count(user)
        # Pre-check before discarding anything: a refused begin keeps the old partial.
        check_quota(db.conn(), user, shown, need)
        resume = row is not None and (row["size"], row["sha256"], row["blake3"]) == (
            size, sha256, blake3)
        now = self.ctx.clock()
        with self.ctx.staging(user, create=True) as sfd:
            pname = part_name(shown)
            try:
                if not resume:
                    unlink_quietly(sfd, pname)  # before the row changes: never splice
                    faults.crash_point("begin.after_unlink")
                with db.write() as conn:
                    check_quota(conn, user, shown, need)
                    upsert(conn, user, shown, size, sha256, need, now, resume, blake3)
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
                      restarted=row is not None and not resume, blake3=blake3)

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
        """Verify, make durable, move into place (:func:`storage.commit.commit`).

        A commit that fails releases the upload (issue 13, item 2): its descriptor is
        closed and its claim dropped, while the partial and its reservation stay, so
        the next ``put`` of that path resumes and ``abort`` discards it at once.
        An incomplete upload (``IntegrityError`` with ``got`` < ``expected``) is the
        one exception: nothing was tried yet, and its writer may go on writing."""
        try:
            return commit_step.commit(self.ctx, self.registry, upload, self.discard)
        except IntegrityError:
            raise          # incomplete: stays active; mismatch: already discarded
        except BaseException:
            if upload.active:
                self.release(upload)
            raise

    def _check_partial_count(self, user: str) -> None:
        """``TooManyPartials`` if ``user`` already holds ``max_partials`` unfinished
        uploads (issue 13, item 7); resuming or restarting one of them is always fine."""
        limit = self.ctx.max_partials
        row = self.ctx.db.one("SELECT COUNT(*) AS n FROM uploads WHERE user = ?", (user,))
        if row is not None and row["n"] >= limit:
            raise TooManyPartials("too many unfinished uploads; finish or abort one",
                                  limit=limit)

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
        return self._infos(user, rows)

    def page(self, user: str, after: str | None = None,
             limit: int = 100) -> tuple[list[PartialInfo], str | None]:
        """One page of ``user``'s unfinished uploads in path order, from the first path
        after ``after``: ``(infos, next_after)``, ``next_after`` None on the last page.
        One indexed range read of at most ``limit + 1`` rows, whatever the total."""
        check_username(user)
        if not isinstance(limit, int) or limit < 1:
            raise ValueError("limit must be a positive integer")
        rows = self.ctx.db.all(
            "SELECT * FROM uploads WHERE user = ? AND path > ? ORDER BY path LIMIT ?",
            (user, "" if after is None else after, limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        return self._infos(user, rows), (rows[-1]["path"] if more else None)

    def _infos(self, user: str, rows: Sequence[sqlite3.Row]) -> list[PartialInfo]:
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
                                          updated=updated, blake3=row["blake3"]))
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
