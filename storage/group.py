"""The group commit: several whole small files stored at once, sharing their syncs.

Each file goes through exactly what ``begin`` + ``write`` + ``commit`` would do
to it, in the same crash-safe order (:mod:`storage.commit`), but every step is
done for the whole group at once: one transaction to begin them all, one
write-back kick before the fsyncs, one transaction to mark them, one to account
them, one fsync per target folder.  Each of the first two transactions reads
the quota once for all its files (:class:`storage.reservations.QuotaLedger`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from . import faults
from .commit import settle
from .confine import map_oserror
from .context import StoreContext, user_parent
from .digests import BLAKE3, check_digest, digest_of
from .errors import BadPath, IntegrityError, StorageError, UploadBusy
from .hashing import cache_forget, cache_store
from .metadata import apply_metadata
from .models import CommitResult, SmallFile
from .names import check_username
from .partials import (
    check_declaration,
    drop_partial,
    fsync_dir,
    open_partial,
    part_name,
    unlink_quietly,
    write_all,
)
from .placement import Target, place, replaced_size, replaced_stat
from .registry import INLINE, WriterRegistry
from .reservations import CommitMark, QuotaLedger, account, mark, upsert

__all__ = ["GroupCommit"]

Results = list[CommitResult | StorageError | None]


@dataclass
class Pending:
    """One file of a group on its way in; ``fd``, ``pfd`` and ``old`` fill in as it goes."""

    index: int                 # its place in the caller's list (and in the results)
    data: bytes
    sha256: str | None         # declared, lower case
    target: Target
    fd: int = -1               # its partial, once written
    pfd: int = -1              # its folder, while placing (owned by an ExitStack)
    old: int = 0               # size of the file it replaces
    old_st: os.stat_result | None = None   # and its lstat, to drop its hash-cache row
    mtime: float | None = None # storage.metadata, applied before the fsync
    mode: int | None = None
    blake3: str | None = None  # declared instead of sha256, lower case (issue 17)


class GroupCommit:
    """Stores groups of whole small files for ``Store.store_small_files``.

    Owns nothing across calls: the partials, rows and claims of a group live
    only while ``store`` runs.  It claims its targets in the same registry as
    uploads, so an upload and a group never write the same target at once.
    """

    def __init__(self, ctx: StoreContext, registry: WriterRegistry) -> None:
        self.ctx = ctx
        self.registry = registry

    def store(self, user: str, files: Sequence[SmallFile]) -> list[CommitResult | StorageError]:
        """One result per file, in order: its ``CommitResult`` once fsynced and visible,
        or the ``StorageError`` that refused it.

        Every file replaces any unfinished upload to its path (it is never resumed).
        A file that fails leaves nothing behind: no partial, no reservation.  Files
        of one call that name the same target are stored one group after the
        other, in order.
        """
        check_username(user)
        results: Results = [None] * len(files)
        group: list[Pending] = []
        seen: set[str] = set()
        for i, f in enumerate(files):
            try:
                target = Target.locate(user, f.path, f.cwd, f.overwrite)
                sha256 = check_declaration(len(f.data), f.sha256)
                blake3 = check_digest(f.blake3, BLAKE3)
            except StorageError as exc:
                results[i] = exc
                continue
            except ValueError as exc:
                results[i] = BadPath(str(exc), path=f.path)
                continue
            if target.path in seen:
                self._store_group(user, group, results)
                group, seen = [], set()
            seen.add(target.path)
            group.append(Pending(i, f.data, sha256, target, mtime=f.mtime, mode=f.mode,
                                 blake3=blake3))
        if group:
            self._store_group(user, group, results)
        return results  # type: ignore[return-value]

    def _store_group(self, user: str, group: list[Pending], results: Results) -> None:
        live = self._begin(user, group, results)
        if not live:
            return
        placed: list[Pending] = []
        try:
            self._write(user, live, results)
            placed = self._place(user, live, results)
        finally:
            for p in live:
                if p.fd >= 0:
                    os.close(p.fd)
                self.registry.drop(user, p.target.path, INLINE)
        failed = [p.target.path for p in live if results[p.index] is not None]
        if failed:
            self._forget(user, failed)
        for p in placed:
            results[p.index] = CommitResult(path=p.target.path, size=len(p.data),
                                            sha256=p.sha256, blake3=p.blake3)

    def _begin(self, user: str, group: list[Pending], results: Results) -> list[Pending]:
        """1. Under the lock, one transaction: check, reserve, claim every file."""
        live: list[Pending] = []
        with self.ctx.user_lock(user), self.ctx.staging(user, create=True) as sfd:
            # A commit whose accounting failed after its file was placed left a marked
            # row: finish it before a new row replaces it (one indexed read per group).
            targets = {p.target.path for p in group}
            for row in self.ctx.db.all("SELECT path FROM uploads WHERE user = ?"
                                       " AND commit_ino IS NOT NULL", (user,)):
                if row["path"] in targets and not self.registry.is_active(user, row["path"]):
                    settle(self.ctx, user, row["path"])
            now = self.ctx.clock()
            try:
                with self.ctx.db.write() as conn, contextlib.ExitStack() as opened:
                    ledger = QuotaLedger(conn, user, [p.target.path for p in group])
                    folders: dict[tuple[str, ...], int] = {}   # each folder opened once
                    for p in group:
                        target = p.target
                        claimed = False
                        try:
                            pfd = folders.get(target.parts[:-1])
                            if pfd is None:
                                pfd = opened.enter_context(
                                    user_parent(self.ctx, user, target.parts))
                                folders[target.parts[:-1]] = pfd
                            replaced_size(pfd, target)
                            claimed = self.registry.try_claim(user, target.path, INLINE)
                            if not claimed:       # across processes: storage.registry
                                raise UploadBusy("an upload to this path is in progress",
                                                 path=target.path)
                            need = len(p.data)    # the whole file (storage.uploads)
                            ledger.check(target.path, need)
                            # Before the row changes: never splice (storage.commit).
                            unlink_quietly(sfd, part_name(target.path))
                        except (StorageError, OSError) as exc:
                            if claimed:
                                self.registry.drop(user, target.path, INLINE)
                            results[p.index] = (exc if isinstance(exc, StorageError)
                                                else map_oserror(exc, target.path))
                            continue
                        live.append(p)            # claimed: dropped if anything below fails
                        upsert(conn, user, target.path, len(p.data), p.sha256, need, now,
                               resume=False, blake3=p.blake3)
                        ledger.reserve(target.path, need)
            except StorageError as exc:       # the transaction failed: none of them begun
                for p in live:
                    self.registry.drop(user, p.target.path, INLINE)
                for p in group:
                    if results[p.index] is None:
                        results[p.index] = exc
                return []
        faults.crash_point("group.after_begin")
        return live

    def _write(self, user: str, live: list[Pending], results: Results) -> None:
        """2. Outside the lock: verify, write, then make every file durable."""
        with self.ctx.staging(user) as sfd:
            for p in live:
                try:
                    if p.sha256 is not None and hashlib.sha256(p.data).hexdigest() != p.sha256:
                        raise IntegrityError("content does not match the declared SHA-256;"
                                             " nothing was stored", path=p.target.path,
                                             expected=p.sha256)
                    if p.blake3 is not None and \
                            digest_of(BLAKE3, p.data) != p.blake3:
                        raise IntegrityError("content does not match the declared BLAKE3;"
                                             " nothing was stored", path=p.target.path,
                                             expected=p.blake3)
                    p.fd, _ = open_partial(sfd, part_name(p.target.path), len(p.data),
                                           truncate=True)
                    write_all(p.fd, p.data)
                    apply_metadata(p.fd, p.mtime, p.mode)
                except StorageError as exc:
                    results[p.index] = exc
                except OSError as exc:
                    results[p.index] = map_oserror(exc, p.target.path)
        faults.crash_point("group.after_write")
        written = [p for p in live if p.fd >= 0 and results[p.index] is None]
        # Start the write-back of all of them, then wait for each: one journal
        # commit then carries most files' blocks instead of one commit per file.
        kick = getattr(os, "posix_fadvise", None)
        if kick is not None:
            for p in written:
                try:
                    kick(p.fd, 0, 0, os.POSIX_FADV_DONTNEED)
                except OSError:
                    pass
        for p in written:
            try:
                os.fsync(p.fd)
            except OSError as exc:
                results[p.index] = map_oserror(exc, p.target.path)
        faults.crash_point("group.after_fsync")

    def _place(self, user: str, live: list[Pending], results: Results) -> list[Pending]:
        """3. Under the lock: mark, link, account; then 4. fsync each folder once."""
        ready = [p for p in live if results[p.index] is None]
        if not ready:
            return []
        db = self.ctx.db
        done: list[Pending] = []
        with contextlib.ExitStack() as stack:
            folders: dict[tuple[str, ...], int] = {}
            with self.ctx.user_lock(user):
                marked: list[Pending] = []
                with db.write() as conn:
                    ledger = QuotaLedger(conn, user, [p.target.path for p in ready])
                    for p in ready:
                        try:
                            pfd = folders.get(p.target.parts[:-1])
                            if pfd is None:
                                pfd = stack.enter_context(
                                    user_parent(self.ctx, user, p.target.parts))
                                folders[p.target.parts[:-1]] = pfd
                            p.pfd = pfd
                            p.old_st = replaced_stat(pfd, p.target, at_commit=True)
                            p.old = 0 if p.old_st is None else p.old_st.st_size
                            # The quota again, as at a commit (issue 13, item 4).
                            ledger.check(p.target.path, len(p.data) - p.old)
                            st = os.fstat(p.fd)
                        except StorageError as exc:
                            results[p.index] = exc
                            continue
                        except OSError as exc:
                            results[p.index] = map_oserror(exc, p.target.path)
                            continue
                        mark(conn, user, p.target.path, CommitMark.of(st, p.old))
                        marked.append(p)
                faults.crash_point("group.after_mark")
                unmark: list[Pending] = []
                with self.ctx.staging(user) as sfd:
                    for p in marked:
                        try:
                            place(sfd, p.pfd, p.target, part_name(p.target.path))
                        except StorageError as exc:
                            results[p.index] = exc
                            unmark.append(p)
                            continue
                        faults.crash_point("group.after_place")
                        done.append(p)
                try:
                    with db.write() as conn:
                        for p in unmark:
                            mark(conn, user, p.target.path, None)
                        for p in done:
                            account(conn, user, p.target.path, len(p.data) - p.old)
                            if p.old_st is not None:
                                cache_forget(conn, p.old_st)    # issue 13, item 15
                            if p.sha256 is not None:
                                cache_store(conn, os.fstat(p.fd), p.sha256)
                            if p.blake3 is not None:
                                cache_store(conn, os.fstat(p.fd), p.blake3, BLAKE3)
                except (StorageError, OSError):
                    # The placed files are visible: they succeeded.  Their rows stay
                    # marked for storage.commit.settle / recover; the unplaced ones
                    # are dropped by _forget as failures.
                    pass
                faults.crash_point("group.after_account")
            # Outside the lock (storage.commit, step 3): one fsync per folder.
            for pfd in dict.fromkeys(p.pfd for p in done):
                fsync_dir(pfd)
            faults.crash_point("group.after_dir_fsync")
        return done

    def _forget(self, user: str, paths: list[str]) -> None:
        """Drop what failed files left: their partials and rows (best effort)."""
        with self.ctx.user_lock(user):
            for path in paths:
                try:
                    drop_partial(self.ctx, user, path)
                except StorageError:
                    pass  # a leftover partial is expired later; it was never visible
