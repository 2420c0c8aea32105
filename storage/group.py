"""The group commit: several whole small files stored at once, sharing their syncs.

Each file goes through exactly what ``begin`` + ``write`` + ``commit`` would do
to it, in the same crash-safe order (:mod:`storage.commit`), but every step is
done for the whole group at once: one transaction to begin them all, one
write-back kick before the fsyncs, one transaction to mark them, one to account
them, one fsync per target folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from . import faults
from .confine import map_oserror
from .context import StoreContext, user_parent
from .errors import BadPath, IntegrityError, StorageError, UploadBusy
from .hashing import cache_store
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
from .placement import Target, place, replaced_size
from .registry import INLINE, WriterRegistry
from .reservations import CommitMark, account, check_quota, mark, upsert

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
    mtime: float | None = None # storage.metadata, applied before the fsync
    mode: int | None = None


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
            group.append(Pending(i, f.data, sha256, target, mtime=f.mtime, mode=f.mode))
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
                                            sha256=p.sha256)

    def _begin(self, user: str, group: list[Pending], results: Results) -> list[Pending]:
        """1. Under the lock, one transaction: check, reserve, claim every file."""
        live: list[Pending] = []
        with self.ctx.user_lock(user), self.ctx.staging(user, create=True) as sfd:
            now = self.ctx.clock()
            try:
                with self.ctx.db.write() as conn:
                    for p in group:
                        target = p.target
                        try:
                            with user_parent(self.ctx, user, target.parts) as pfd:
                                replaced = replaced_size(pfd, target)
                            if self.registry.is_active(user, target.path):
                                raise UploadBusy("an upload to this path is in progress",
                                                 path=target.path)
                            need = max(0, len(p.data) - replaced)
                            check_quota(conn, user, target.path, need)
                            # Before the row changes: never splice (storage.commit).
                            unlink_quietly(sfd, part_name(target.path))
                        except StorageError as exc:
                            results[p.index] = exc
                            continue
                        except OSError as exc:
                            results[p.index] = map_oserror(exc, target.path)
                            continue
                        upsert(conn, user, target.path, len(p.data), p.sha256, need, now,
                               resume=False)
                        live.append(p)
            except StorageError as exc:       # the transaction failed: none of them begun
                for p in group:
                    if results[p.index] is None:
                        results[p.index] = exc
                return []
            for p in live:
                self.registry.claim(user, p.target.path, INLINE)
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
                    for p in ready:
                        try:
                            pfd = folders.get(p.target.parts[:-1])
                            if pfd is None:
                                pfd = stack.enter_context(
                                    user_parent(self.ctx, user, p.target.parts))
                                folders[p.target.parts[:-1]] = pfd
                            p.pfd = pfd
                            p.old = replaced_size(pfd, p.target, at_commit=True)
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
                with db.write() as conn:
                    for p in unmark:
                        mark(conn, user, p.target.path, None)
                    for p in done:
                        account(conn, user, p.target.path, len(p.data) - p.old)
                        if p.sha256 is not None:
                            cache_store(conn, os.fstat(p.fd), p.sha256)
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
