"""The crash-safe commit of one upload, and the start-up recovery that completes it.

Why a commit is durable when ``put.done`` goes out, step by step (the group
commit, :mod:`storage.group`, follows the same order for a whole group):

1. the partial's bytes are written and ``fsync``ed (the group commit first starts
   the write-back of every file of its group, then fsyncs them one by one: the
   first fsync's journal commit carries most of the others' blocks, so the
   rest are cheap);
2. under the user lock: the target is checked, the row is *marked* with the
   partial's (dev, ino) in one transaction, the partial is linked (or renamed)
   into place, and the reservation becomes usage in a second transaction;
3. the lock is released, *then* the target folder is ``fsync``ed (one fsync per
   folder for a whole group) -- only now is the link durable;
4. only then does the caller report success.

``begin`` adds one rule of its own: an old partial with another declaration is
unlinked *before* the row is rewritten, so a crash can never let new data be
appended to old bytes.

A crash (SIGKILL) anywhere leaves either an ordinary partial (before the mark:
never visible, resumable or expired later), or a marked row that ``recover``
finishes (the target holds the marked inode: drop a staging name still linked
to it, then account it) or rolls back (it does not: the mark is cleared and the
partial stays resumable).  Nothing is ever reported done before step 3, so no
acknowledged file can be missing after a crash.  The folder fsync runs outside
the user lock so that commits of one user on several workers overlap their
syncs (ext4 then batches them into fewer journal commits); accounting stays
inside the lock with the link, so a concurrent ``rm`` of the same file cannot
interleave between them.  The one thing a *power loss* between steps 2 and 3
can leave is a usage counter that counts a link which did not reach the disk
-- a quota over-count, never a lost or half-visible file; with
``synchronous=NORMAL`` the catalogue's last transactions were already
best-effort on power loss.

Every step boundary is a named crash point (:mod:`storage.faults`);
``tests/test_storage_crashpoints.py`` kills a real process at each of them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable

from . import faults
from .confine import lstat_at, map_oserror
from .context import StoreContext, user_parent
from .digests import BLAKE3, SHA256
from .errors import IntegrityError, StorageError, StorageIOError
from .hashing import cache_forget, cache_store
from .metadata import apply_metadata
from .models import CommitResult
from .partials import fsync_dir, part_name, unlink_quietly
from .paths import split_user_path
from .placement import place, replaced_stat
from .registry import WriterRegistry
from .reservations import CommitMark, account, check_quota, mark
from .upload import Upload

__all__ = ["commit", "recover", "settle"]


def commit(ctx: StoreContext, registry: WriterRegistry, upload: Upload,
           discard: Callable[[Upload], None]) -> CommitResult:
    """Verify ``upload``, make it durable and move it into place (caller holds its lock).

    ``IntegrityError`` if incomplete (partial kept) or the SHA-256 differs
    (``discard`` is called first).  ``QuotaExceeded`` if what it adds no longer fits
    (the quota was lowered, the file it was to replace went away).  On any error
    the upload is left unmarked and resumable; the caller (``UploadManager``)
    releases it.  Once the partial is in place the commit reports success: a
    failure to account it then leaves the row marked for ``settle``/``recover``,
    never a visible file reported as failed.
    """
    fd, size, path, target = upload._fd, upload.size, upload.path, upload._target
    try:
        length = os.fstat(fd).st_size
    except OSError as exc:
        raise map_oserror(exc, path)
    if length != size:
        upload._resync()
        raise IntegrityError("upload is incomplete", path=path, expected=size, got=length)
    # Without a declared SHA-256 there is nothing to verify against: skip the
    # full re-read (the size was checked above); `file_hash` computes it on demand.
    algo = SHA256
    if upload.hasher is not None:
        algo = upload.hasher.algo                         # SHA-256, or BLAKE3 (issue 17)
        digest, hashed = _hash_tail(upload, fd, size)     # usually only the tail is left
    else:
        digest, hashed = None, size
    declared = upload.declared()
    if hashed != size or (declared is not None and digest != declared):
        discard(upload)
        name = "SHA-256" if algo == SHA256 else "BLAKE3"
        raise IntegrityError(f"content does not match the declared {name} and size;"
                             " the partial upload was discarded", path=path,
                             expected=declared, got=digest)
    lost = upload._flush_error
    if lost is not None:
        # A background flush failed: the kernel may have dropped those pages, and it
        # reported the error there, not to this descriptor's fsync.  Nothing can say
        # which bytes reached the disk, so the partial is not kept for a resume.
        discard(upload)
        reason = os.strerror(lost.errno or errno.EIO)
        raise StorageIOError(f"writing the upload to disk failed ({reason}); the partial"
                             " upload was discarded", path=path, errno=lost.errno)
    try:
        apply_metadata(fd, upload.mtime, upload.mode)          # before fsync and link
        os.fsync(fd)                                           # step 1
        st = os.fstat(fd)
    except OSError as exc:
        raise map_oserror(exc, path)
    faults.crash_point("commit.after_fsync")
    with contextlib.ExitStack() as stack:
        with ctx.user_lock(target.user):                       # step 2
            pfd = stack.enter_context(user_parent(ctx, target.user, target.parts))
            old_st = replaced_stat(pfd, target, at_commit=True)
            old = 0 if old_st is None else old_st.st_size
            with ctx.db.write() as conn:
                # Re-check: the reservation plus the free space must cover what the
                # file adds now (issue 13, item 4).
                check_quota(conn, target.user, path, size - old)
                mark(conn, target.user, path, CommitMark.of(st, old))
            faults.crash_point("commit.after_mark")
            try:
                with ctx.staging(target.user) as sfd:
                    place(sfd, pfd, target, part_name(path))
            except BaseException:
                with ctx.db.write() as conn:
                    mark(conn, target.user, path, None)
                raise
            faults.crash_point("commit.after_place")
            try:
                with ctx.db.write() as conn:
                    account(conn, target.user, path, size - old)
                    if old_st is not None:
                        cache_forget(conn, old_st)     # issue 13, item 15
                    if digest is not None:
                        cache_store(conn, os.fstat(fd), digest, algo)
            except (StorageError, OSError):
                pass    # it is in place: the marked row is settled later (settle, recover)
            faults.crash_point("commit.after_account")
            upload._close("committed")
            registry.drop(target.user, path, upload)
        fsync_dir(pfd)                                         # step 3, outside the lock
        faults.crash_point("commit.after_dir_fsync")
    return CommitResult(path=path, size=size,                  # step 4
                        sha256=digest if algo == SHA256 else None,
                        blake3=digest if algo == BLAKE3 else None)


#: A hash tail at least this long is hashed while a helper thread flushes the file.
OVERLAP_MIN = 8 << 20


def _hash_tail(upload: Upload, fd: int, size: int) -> tuple[str, int]:
    """Finish the upload's hash; with a long tail left, flush the file meanwhile.

    When the workers fell behind the writer (both cores busy receiving), the
    commit is left with hundreds of MiB to hash *and* to write back.  One after
    the other, the disk idles while the hash runs; here a helper thread's
    ``fdatasync`` writes the dirty pages back while this thread hashes, so the
    fsync of step 1 has (almost) nothing left.  The helper writes through a
    duplicate of the descriptor and records a failure, which fails the commit
    (``Upload._sync_copy``); a digest that does not match discards the partial
    as before, the flush only having been wasted.
    """
    hasher = upload.hasher
    assert hasher is not None
    if size - hasher.upto < OVERLAP_MIN:
        return hasher.finish(fd, size)
    try:
        dup = os.dup(fd)
    except OSError:
        return hasher.finish(fd, size)      # out of descriptors: one after the other

    def flush() -> None:
        try:
            upload._sync_copy(dup)
        except OSError:
            pass                        # kept in upload._flush_error: the commit fails
        finally:
            os.close(dup)

    helper = threading.Thread(target=flush, name="ftpd-commit-flush", daemon=True)
    try:
        helper.start()
    except RuntimeError:                    # no thread to be had: one after the other
        os.close(dup)
        return hasher.finish(fd, size)
    try:
        return hasher.finish(fd, size)
    finally:
        helper.join()


def recover(ctx: StoreContext, registry: WriterRegistry | None = None) -> None:
    """Finish or roll back commits interrupted by a crash (rows still carrying a mark).

    Itself crash-safe: each row is finished by steps that can be repeated, so a
    crash during recovery leaves rows the next start-up recovers again.  With a
    ``registry``, a row whose target another process holds is left alone: that is
    a commit in progress (another worker of ``--workers N``), not an interrupted one.
    """
    for row in ctx.db.all("SELECT user, path FROM uploads WHERE commit_ino IS NOT NULL"
                          " ORDER BY user, path"):
        held = (registry.holding(row["user"], row["path"]) if registry
                else contextlib.nullcontext(True))
        with held as mine:
            if mine:
                settle(ctx, row["user"], row["path"])


def settle(ctx: StoreContext, user: str, path: str) -> None:
    """Finish (account) or roll back (unmark) the marked row of ``user``'s ``path``, if
    it still has one: a crash, or a commit whose accounting failed after the file was
    in place, left it.  Takes the user lock and re-reads the row under it, so it never
    accounts a row twice.  The caller holds the target's writer claim (or, at start-up,
    knows no other process does)."""
    with ctx.user_lock(user):
        row = ctx.db.one("SELECT * FROM uploads WHERE user = ? AND path = ?"
                         " AND commit_ino IS NOT NULL", (user, path))
        if row is None:
            return
        marked = CommitMark(row["commit_dev"], row["commit_ino"], row["commit_old"] or 0)
        st = None
        try:
            parts = split_user_path(path)
            with user_parent(ctx, user, parts) as pfd:
                st = lstat_at(pfd, parts[-1], path)
                if st is None or not stat.S_ISREG(st.st_mode) or not marked.matches(st):
                    st = None
                else:
                    _unlink_linked_partial(ctx, user, path, st)
                    st = lstat_at(pfd, parts[-1], path)   # the unlink changed its ctime
        except StorageError:
            st = None
        if st is None or not marked.matches(st):
            with ctx.db.write() as conn:             # never placed: roll back
                mark(conn, user, path, None)
            faults.crash_point("recover.after_unmark")
            return
        with ctx.db.write() as conn:                 # placed: account it
            account(conn, user, path, row["size"] - marked.old)
            if row["sha256"] is not None:
                cache_store(conn, st, row["sha256"])
            elif row["blake3"] is not None:
                cache_store(conn, st, row["blake3"], BLAKE3)
        faults.crash_point("recover.after_account")


def _unlink_linked_partial(ctx: StoreContext, user: str, path: str,
                           st: os.stat_result) -> None:
    """A crash between link and unlink leaves the staging name linked to the published
    file: remove it, so no second name of a published file stays where partials are
    written (nothing may ever write through it)."""
    try:
        sfd = ctx.staging_dir_fd(user)
    except StorageError:
        return
    try:
        pst = lstat_at(sfd, part_name(path), path)
        if pst is not None and (pst.st_dev, pst.st_ino) == (st.st_dev, st.st_ino):
            unlink_quietly(sfd, part_name(path))
            faults.crash_point("recover.after_unlink")
    finally:
        os.close(sfd)
