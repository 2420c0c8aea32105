"""Resumable uploads: partial files in ``staging/<user>/`` plus reservations in the DB.

A partial is named ``sha256(target path).hex + ".part"`` and lives outside the
home, so it is never visible at its target.  Its declaration (size, sha256) and
its quota reservation are rows of the ``uploads`` table, so both survive restarts;
the bytes held are always the partial's real length, never a number remembered
elsewhere.  Ordering rules keep crashes harmless:

* begin: an old partial with another declaration is unlinked *before* the row is
  rewritten, so a crash can never let new data be appended to old bytes;
* commit: the row is marked with the partial's inode before the rename into
  place, so a crash between the rename and the accounting is finished at start-up.

Why a commit is durable when ``put.done`` goes out, step by step (``commit`` and
the group commit ``store_small`` follow the same order):

1. the partial's bytes are written and ``fsync``ed (``store_small`` first starts
   the write-back of every file of its group, then fsyncs them one by one: the
   first fsync's journal commit carries most of the others' blocks, so the
   rest are cheap);
2. under the user lock: the target is checked, the row is *marked* with the
   partial's (dev, ino) in one transaction, the partial is linked (or renamed)
   into place, and the reservation becomes usage in a second transaction;
3. the lock is released, *then* the target folder is ``fsync``ed (one fsync per
   folder for a whole group) -- only now is the link durable;
4. only then does the caller report success.

A crash (SIGKILL) anywhere leaves either an ordinary partial (before the mark:
never visible, resumable or expired later), or a marked row that ``recover``
finishes (the target holds the marked inode: account it) or rolls back (it does
not: the mark is cleared and the partial stays resumable).  Nothing is ever
reported done before step 3, so no acknowledged file can be missing after a
crash.  The folder fsync runs outside the user lock so that commits of one user
on several workers overlap their syncs (ext4 then batches them into fewer
journal commits); accounting stays inside the lock with the link, so a
concurrent ``rm`` of the same file cannot interleave between them.  The one
thing a *power loss* between steps 2 and 3 can leave is a usage counter that
counts a link which did not reach the disk -- a quota over-count, never a lost
or half-visible file; with ``synchronous=NORMAL`` the catalogue's last
transactions were already best-effort on power loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import stat
from collections.abc import Sequence

from .confine import lstat_at, map_oserror, symlink_error
from .context import StoreContext
from .db import to_i64
from .errors import (
    BadPath,
    Exists,
    IntegrityError,
    IsADirectory,
    NoSuchUser,
    NotFound,
    QuotaExceeded,
    StorageError,
    UploadBusy,
)
from .hashing import cache_store
from .models import CommitResult, PartialInfo, SmallFile
from .names import check_username
from .paths import join_user_path, split_user_path
from .tree import user_parent
from .upload import Upload

__all__ = ["UploadManager", "part_name"]

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_PART_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def part_name(path: str) -> str:
    """Staging file name of the partial for the normalised target ``path``."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest() + ".part"


def _check_declaration(size: object, sha256: object) -> str | None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("size must be a non-negative integer")
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256.lower()):
        raise ValueError("sha256 must be 64 hexadecimal digits")
    return sha256.lower()


def _fsync_dir(dir_fd: int) -> None:
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems cannot fsync folders; the link already happened


class _InlineWriter:
    """Stands in the registry for a path that ``store_small`` is writing."""

    __slots__ = ()

    def _revoke(self) -> None:
        pass  # nothing to close: store_small owns its descriptors until it returns


_INLINE = _InlineWriter()


def _unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


class _Probe:
    """What ``_placement_check`` and ``_place`` need of an upload, for ``store_small``."""

    __slots__ = ("user", "_parts", "path", "overwrite")

    def __init__(self, user: str, parts: tuple[str, ...], path: str, overwrite: bool) -> None:
        self.user = user
        self._parts = parts
        self.path = path
        self.overwrite = overwrite


def live_path(live: list[tuple[int, SmallFile, tuple[str, ...], str]], index: int) -> str:
    return next(shown for i, _, _, shown in live if i == index)


class UploadManager:
    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    # ----- registry of active writers
    def _is_active(self, user: str, path: str) -> bool:
        with self.ctx.registry_lock:
            return (user, path) in self.ctx.registry

    def _unregister(self, upload: Upload) -> None:
        with self.ctx.registry_lock:
            if self.ctx.registry.get((upload.user, upload.path)) is upload:
                del self.ctx.registry[(upload.user, upload.path)]

    def revoke(self, user: str | None = None) -> None:
        """Close active writers (all, or one user's) without touching their partials."""
        with self.ctx.registry_lock:
            victims = [u for (owner, _), u in self.ctx.registry.items()
                       if user is None or owner == user]
        for upload in victims:
            upload._revoke()
            self._unregister(upload)

    # ----- begin
    def begin(self, user: str, path: str, size: int, sha256: str | None, *, cwd: str = "/",
              overwrite: bool = False) -> Upload:
        check_username(user)
        parts = split_user_path(path, cwd)
        shown = join_user_path(parts)
        sha256 = _check_declaration(size, sha256)
        if not parts:
            raise IsADirectory("is a folder", path=shown)
        with self.ctx.user_lock(user):
            replaced = self._replaced_size(user, parts, shown, overwrite)
            if self._is_active(user, shown):
                raise UploadBusy("an upload to this path is in progress", path=shown)
            need = max(0, size - replaced)
            db = self.ctx.db
            row = db.one("SELECT * FROM uploads WHERE user = ? AND path = ?", (user, shown))
            # Pre-check before discarding anything: a refused begin keeps the old partial.
            self._check_quota(db.conn(), user, shown, need)
            resume = row is not None and row["size"] == size and row["sha256"] == sha256
            now = self.ctx.clock()
            sfd = self.ctx.staging_dir_fd(user, create=True)
            try:
                pname = part_name(shown)
                if not resume:
                    _unlink_quietly(sfd, pname)  # before the row changes: never splice
                with db.write() as conn:
                    self._check_quota(conn, user, shown, need)
                    self._upsert_row(conn, user, shown, size, sha256, need, now, resume)
                fd = os.open(pname, _PART_FLAGS, 0o600, dir_fd=sfd)
            except OSError as exc:
                raise map_oserror(exc, shown)
            finally:
                os.close(sfd)
            try:
                length = os.fstat(fd).st_size
                if length > size:
                    os.ftruncate(fd, size)
                    length = size
                os.lseek(fd, length, os.SEEK_SET)
            except OSError as exc:
                os.close(fd)
                raise map_oserror(exc, shown)
            upload = Upload(self, user=user, path=shown, parts=parts, size=size, sha256=sha256,
                            overwrite=overwrite, fd=fd, offset=length,
                            restarted=row is not None and not resume)
            with self.ctx.registry_lock:
                self.ctx.registry[(user, shown)] = upload
            return upload

    def _replaced_size(self, user: str, parts: tuple[str, ...], shown: str,
                       overwrite: bool) -> int:
        """Size of the file an upload to ``parts`` would replace (0 if none); checks the rules."""
        with user_parent(self.ctx, user, parts) as pfd:
            st = lstat_at(pfd, parts[-1], shown)
        if st is None:
            return 0
        if stat.S_ISLNK(st.st_mode):
            raise symlink_error(shown)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectory("is a folder", path=shown)
        if not overwrite:
            raise Exists("file exists", path=shown)
        if not stat.S_ISREG(st.st_mode):
            raise BadPath("not a regular file", path=shown)
        return st.st_size

    @staticmethod
    def _upsert_row(conn: sqlite3.Connection, user: str, path: str, size: int,
                    sha256: str | None, reserved: int, now: float, resume: bool) -> None:
        """The upload's row, new or replacing the old one (no commit mark); a
        resumed upload keeps its creation time."""
        conn.execute(
            "INSERT INTO uploads (user, path, size, sha256, reserved, created, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user, path) DO UPDATE SET"
            " size = excluded.size, sha256 = excluded.sha256,"
            " reserved = excluded.reserved, updated = excluded.updated,"
            " created = CASE WHEN ? THEN uploads.created ELSE excluded.created END,"
            " commit_dev = NULL, commit_ino = NULL, commit_old = NULL",
            (user, path, size, sha256, reserved, now, now, resume))

    @staticmethod
    def _check_quota(conn: sqlite3.Connection, user: str, path: str, need: int) -> None:
        row = conn.execute(
            "SELECT quota, used, (SELECT COALESCE(SUM(reserved), 0) FROM uploads"
            " WHERE user = ? AND path != ?) AS others FROM users WHERE name = ?",
            (user, path, user)).fetchone()
        if row is None:
            raise NoSuchUser("no such user", user=user)
        free = row["quota"] - row["used"] - row["others"]
        if need > free:
            raise QuotaExceeded("not enough quota for this upload", free=max(0, free),
                                needed=need)

    # ----- ending a writer (caller holds upload._lock)
    def release(self, upload: Upload) -> None:
        try:
            with self.ctx.db.write() as conn:
                conn.execute("UPDATE uploads SET updated = ? WHERE user = ? AND path = ?",
                             (self.ctx.clock(), upload.user, upload.path))
        except (StorageError, sqlite3.Error):
            pass  # only a timestamp; the partial itself is intact
        finally:
            upload._close("released")
            self._unregister(upload)

    def discard(self, upload: Upload) -> None:
        try:
            with self.ctx.user_lock(upload.user):
                self._drop_partial(upload.user, upload.path)
        finally:
            upload._close("discarded")
            self._unregister(upload)

    def _drop_partial(self, user: str, path: str) -> None:
        """Unlink the partial, then forget its row and reservation (caller holds user lock)."""
        try:
            sfd = self.ctx.staging_dir_fd(user)
        except NoSuchUser:
            pass
        else:
            try:
                _unlink_quietly(sfd, part_name(path))
            except OSError as exc:
                raise map_oserror(exc, path)
            finally:
                os.close(sfd)
        with self.ctx.db.write() as conn:
            conn.execute("DELETE FROM uploads WHERE user = ? AND path = ?", (user, path))

    def commit(self, upload: Upload) -> CommitResult:
        fd, size, path = upload._fd, upload.size, upload.path
        try:
            length = os.fstat(fd).st_size
        except OSError as exc:
            raise map_oserror(exc, path)
        if length != size:
            upload._resync()
            raise IntegrityError("upload is incomplete", path=path, expected=size, got=length)
        # Without a declared SHA-256 there is nothing to verify against: skip the
        # full re-read (the size was checked above); `file_hash` computes it on demand.
        if upload.hasher is not None:
            digest, hashed = upload.hasher.finish(fd, size)   # usually only the tail is left
        else:
            digest, hashed = None, size
        if hashed != size or (upload.sha256 is not None and digest != upload.sha256):
            self.discard(upload)
            raise IntegrityError("content does not match the declared SHA-256 and size;"
                                 " the partial upload was discarded", path=path,
                                 expected=upload.sha256, got=digest)
        try:
            os.fsync(fd)
            st = os.fstat(fd)
        except OSError as exc:
            raise map_oserror(exc, path)
        with contextlib.ExitStack() as stack:
            with self.ctx.user_lock(upload.user):
                pfd = stack.enter_context(user_parent(self.ctx, upload.user, upload._parts))
                old = self._placement_check(pfd, upload)
                self._mark_commit(upload, st, old)
                try:
                    self._place(pfd, upload)
                except BaseException:
                    self._mark_commit(upload, None, 0)
                    raise
                with self.ctx.db.write() as conn:
                    self._account(conn, upload.user, path, size - old)
                    if digest is not None:
                        cache_store(conn, st, digest)
                upload._close("committed")
                self._unregister(upload)
            # Outside the lock (module docstring, step 3): other commits overlap with it.
            _fsync_dir(pfd)
        return CommitResult(path=path, size=size, sha256=digest)

    @staticmethod
    def _placement_check(pfd: int, upload: Upload) -> int:
        """Re-check the target at commit time; returns the size of the file replaced."""
        name, path = upload._parts[-1], upload.path
        st = lstat_at(pfd, name, path)
        if st is None:
            return 0
        if stat.S_ISLNK(st.st_mode):
            raise symlink_error(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectory("is a folder", path=path)
        if not upload.overwrite:
            raise Exists("file appeared meanwhile", path=path)
        if not stat.S_ISREG(st.st_mode):
            raise BadPath("not a regular file", path=path)
        return st.st_size

    def _mark_commit(self, upload: Upload, st: os.stat_result | None, old: int) -> None:
        dev, ino = (None, None) if st is None else (to_i64(st.st_dev), to_i64(st.st_ino))
        with self.ctx.db.write() as conn:
            conn.execute("UPDATE uploads SET commit_dev = ?, commit_ino = ?, commit_old = ?"
                         " WHERE user = ? AND path = ?",
                         (dev, ino, None if st is None else old, upload.user, upload.path))

    def _place(self, pfd: int, upload: Upload) -> None:
        """Move the partial to its target: replace if allowed, else link (fails if it exists)."""
        pname, name, path = part_name(upload.path), upload._parts[-1], upload.path
        sfd = self.ctx.staging_dir_fd(upload.user)
        try:
            if upload.overwrite:
                os.replace(pname, name, src_dir_fd=sfd, dst_dir_fd=pfd)
                return
            try:
                # link(2) refuses to replace atomically, unlike rename(2).
                os.link(pname, name, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileExistsError:
                raise Exists("file appeared meanwhile", path=path)
            try:
                os.unlink(pname, dir_fd=sfd)
            except OSError:
                pass  # a leftover name with no row is removed by begin/expiry
        except OSError as exc:
            raise map_oserror(exc, path)
        finally:
            os.close(sfd)

    @staticmethod
    def _account(conn: sqlite3.Connection, user: str, path: str, delta: int) -> None:
        """Turn the reservation into usage: the upload row goes, ``used`` grows by ``delta``."""
        conn.execute("UPDATE users SET used = MAX(0, used + ?) WHERE name = ?", (delta, user))
        conn.execute("DELETE FROM uploads WHERE user = ? AND path = ?", (user, path))

    # ----- group commit of whole small files
    def store_small(self, user: str,
                    files: Sequence[SmallFile]) -> list[CommitResult | StorageError]:
        """Store whole small files together, each exactly as ``begin`` + ``write`` + ``commit``
        would, but with shared syncs: one transaction per step for the whole group,
        one write-back kick before the fsyncs, one fsync per target folder.

        Every file replaces any unfinished upload to its path (it is never resumed).
        A file that fails leaves nothing behind: no partial, no reservation.  The
        crash-safety argument is the module docstring's; files of one call that name
        the same target are stored one group after the other, in order.
        """
        check_username(user)
        results: list[CommitResult | StorageError | None] = [None] * len(files)
        group: list[tuple[int, SmallFile, tuple[str, ...], str]] = []
        seen: set[str] = set()
        for i, f in enumerate(files):
            try:
                parts = split_user_path(f.path, f.cwd)
                shown = join_user_path(parts)
                if not parts:
                    raise IsADirectory("is a folder", path=shown)
                _check_declaration(len(f.data), f.sha256)
            except StorageError as exc:
                results[i] = exc
                continue
            except ValueError as exc:
                results[i] = BadPath(str(exc), path=f.path)
                continue
            if shown in seen:
                self._store_group(user, group, results)
                group, seen = [], set()
            seen.add(shown)
            group.append((i, f, parts, shown))
        if group:
            self._store_group(user, group, results)
        return results  # type: ignore[return-value]

    def _store_group(self, user: str, group: list[tuple[int, SmallFile, tuple[str, ...], str]],
                     results: list[CommitResult | StorageError | None]) -> None:
        db = self.ctx.db
        live: list[tuple[int, SmallFile, tuple[str, ...], str]] = []
        # 1. Begin, all in one transaction: check, reserve, register as being written.
        with self.ctx.user_lock(user):
            now = self.ctx.clock()
            sfd = self.ctx.staging_dir_fd(user, create=True)
            try:
                with db.write() as conn:
                    for item in group:
                        i, f, parts, shown = item
                        try:
                            replaced = self._replaced_size(user, parts, shown, f.overwrite)
                            if self._is_active(user, shown):
                                raise UploadBusy("an upload to this path is in progress",
                                                 path=shown)
                            need = max(0, len(f.data) - replaced)
                            self._check_quota(conn, user, shown, need)
                            # Before the row changes: never splice (module docstring).
                            _unlink_quietly(sfd, part_name(shown))
                        except StorageError as exc:
                            results[i] = exc
                            continue
                        except OSError as exc:
                            results[i] = map_oserror(exc, shown)
                            continue
                        self._upsert_row(conn, user, shown, len(f.data),
                                         f.sha256 and f.sha256.lower(), need, now, resume=False)
                        live.append(item)
            except StorageError as exc:       # the transaction failed: none of them begun
                for i, *_ in group:
                    if results[i] is None:
                        results[i] = exc
                live = []
            finally:
                os.close(sfd)
            with self.ctx.registry_lock:
                for _, _, _, shown in live:
                    self.ctx.registry[(user, shown)] = _INLINE  # type: ignore[assignment]
        if not live:
            return
        fds: dict[int, int] = {}
        try:
            self._write_group(user, live, results, fds)
            placed = self._place_group(user, live, results, fds)
        finally:
            for fd in fds.values():
                os.close(fd)
            with self.ctx.registry_lock:
                for _, _, _, shown in live:
                    if self.ctx.registry.get((user, shown)) is _INLINE:
                        del self.ctx.registry[(user, shown)]
        failed = [shown for i, _, _, shown in live if results[i] is not None]
        if failed:
            self._forget_partials(user, failed)
        for i, f, _, shown in placed:
            results[i] = CommitResult(path=shown, size=len(f.data),
                                      sha256=f.sha256.lower() if f.sha256 else None)

    def _write_group(self, user: str, live: list[tuple[int, SmallFile, tuple[str, ...], str]],
                     results: list[CommitResult | StorageError | None],
                     fds: dict[int, int]) -> None:
        """2. Outside the lock: write, verify, then make every file durable."""
        sfd = self.ctx.staging_dir_fd(user)
        try:
            for i, f, _, shown in live:
                try:
                    if f.sha256 is not None and \
                            hashlib.sha256(f.data).hexdigest() != f.sha256.lower():
                        raise IntegrityError("content does not match the declared SHA-256;"
                                             " nothing was stored", path=shown,
                                             expected=f.sha256.lower())
                    fd = os.open(part_name(shown), _PART_FLAGS | os.O_TRUNC, 0o600,
                                 dir_fd=sfd)
                    fds[i] = fd
                    view, done = memoryview(f.data), 0
                    while done < len(view):
                        done += os.write(fd, view[done:])
                except StorageError as exc:
                    results[i] = exc
                except OSError as exc:
                    results[i] = map_oserror(exc, shown)
        finally:
            os.close(sfd)
        # Start the write-back of all of them, then wait for each: one journal
        # commit then carries most files' blocks instead of one commit per file.
        kick = getattr(os, "posix_fadvise", None)
        for i, fd in fds.items():
            if results[i] is None and kick is not None:
                try:
                    kick(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                except OSError:
                    pass
        for i, fd in fds.items():
            if results[i] is None:
                try:
                    os.fsync(fd)
                except OSError as exc:
                    results[i] = map_oserror(exc, live_path(live, i))

    def _place_group(self, user: str, live: list[tuple[int, SmallFile, tuple[str, ...], str]],
                     results: list[CommitResult | StorageError | None],
                     fds: dict[int, int]) -> list[tuple[int, SmallFile, tuple[str, ...], str]]:
        """3. Under the lock: mark, link, account; then 4. fsync each folder once."""
        ready = [item for item in live if results[item[0]] is None]
        placed: list[tuple[int, SmallFile, tuple[str, ...], str]] = []
        if not ready:
            return placed
        db = self.ctx.db
        with contextlib.ExitStack() as stack:
            folders: dict[tuple[str, ...], int] = {}
            with self.ctx.user_lock(user):
                marked: list[tuple[int, SmallFile, tuple[str, ...], str, int, int]] = []
                with db.write() as conn:
                    for i, f, parts, shown in ready:
                        try:
                            pfd = folders.get(parts[:-1])
                            if pfd is None:
                                pfd = stack.enter_context(user_parent(self.ctx, user, parts))
                                folders[parts[:-1]] = pfd
                            st = os.fstat(fds[i])
                            probe = _Probe(user, parts, shown, f.overwrite)
                            old = self._placement_check(pfd, probe)  # type: ignore[arg-type]
                        except StorageError as exc:
                            results[i] = exc
                            continue
                        except OSError as exc:
                            results[i] = map_oserror(exc, shown)
                            continue
                        conn.execute("UPDATE uploads SET commit_dev = ?, commit_ino = ?,"
                                     " commit_old = ? WHERE user = ? AND path = ?",
                                     (to_i64(st.st_dev), to_i64(st.st_ino), old, user, shown))
                        marked.append((i, f, parts, shown, pfd, old))
                done: list[tuple[int, SmallFile, tuple[str, ...], str, int, int]] = []
                unmark: list[str] = []
                for item in marked:
                    i, f, parts, shown, pfd, old = item
                    try:
                        self._place(pfd, _Probe(user, parts, shown, f.overwrite))  # type: ignore[arg-type]
                    except StorageError as exc:
                        results[i] = exc
                        unmark.append(shown)
                        continue
                    done.append(item)
                with db.write() as conn:
                    for shown in unmark:
                        conn.execute("UPDATE uploads SET commit_dev = NULL, commit_ino = NULL,"
                                     " commit_old = NULL WHERE user = ? AND path = ?",
                                     (user, shown))
                    for i, f, _, shown, _, old in done:
                        self._account(conn, user, shown, len(f.data) - old)
                        if f.sha256 is not None:
                            cache_store(conn, os.fstat(fds[i]), f.sha256.lower())
            # Outside the lock (module docstring, step 3): one fsync per folder.
            for pfd in {item[4] for item in done}:
                _fsync_dir(pfd)
            placed = [(i, f, parts, shown) for i, f, parts, shown, _, _ in done]
        return placed

    def _forget_partials(self, user: str, paths: list[str]) -> None:
        """Drop what failed files left: their partials and rows (best effort)."""
        with self.ctx.user_lock(user):
            for path in paths:
                try:
                    self._drop_partial(user, path)
                except StorageError:
                    pass  # a leftover partial is expired later; it was never visible

    def recover(self) -> None:
        """Finish or roll back commits interrupted by a crash (rows still carrying a mark)."""
        for row in self.ctx.db.all("SELECT * FROM uploads WHERE commit_ino IS NOT NULL"):
            user, path = row["user"], row["path"]
            with self.ctx.user_lock(user):
                st = None
                try:
                    parts = split_user_path(path)
                    with user_parent(self.ctx, user, parts) as pfd:
                        st = lstat_at(pfd, parts[-1], path)
                except StorageError:
                    pass
                placed = (st is not None and stat.S_ISREG(st.st_mode)
                          and (to_i64(st.st_dev), to_i64(st.st_ino))
                          == (row["commit_dev"], row["commit_ino"]))
                if not placed:
                    with self.ctx.db.write() as conn:
                        conn.execute("UPDATE uploads SET commit_dev = NULL, commit_ino = NULL,"
                                     " commit_old = NULL WHERE user = ? AND path = ?",
                                     (user, path))
                    continue
                try:
                    sfd = self.ctx.staging_dir_fd(user)
                except StorageError:
                    pass
                else:
                    try:
                        pst = lstat_at(sfd, part_name(path), path)
                        if pst is not None and pst.st_ino == st.st_ino:
                            _unlink_quietly(sfd, part_name(path))
                    finally:
                        os.close(sfd)
                with self.ctx.db.write() as conn:
                    self._account(conn, user, path, row["size"] - (row["commit_old"] or 0))
                    if row["sha256"] is not None:
                        cache_store(conn, st, row["sha256"])

    # ----- inspection and clean-up
    def list(self, user: str) -> list[PartialInfo]:
        check_username(user)
        rows = self.ctx.db.all("SELECT * FROM uploads WHERE user = ? ORDER BY path", (user,))
        if not rows:
            return []
        result = []
        sfd = self.ctx.staging_dir_fd(user, create=True)
        try:
            for row in rows:
                st = lstat_at(sfd, part_name(row["path"]), row["path"])
                held = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0
                updated = max(row["updated"], st.st_mtime if st is not None else 0.0)
                result.append(PartialInfo(path=row["path"], size=row["size"],
                                          offset=min(held, row["size"]), sha256=row["sha256"],
                                          updated=updated))
        finally:
            os.close(sfd)
        return result

    def abort(self, user: str, path: str, cwd: str = "/") -> str:
        check_username(user)
        shown = join_user_path(split_user_path(path, cwd))
        with self.ctx.user_lock(user):
            if self._is_active(user, shown):
                raise UploadBusy("an upload to this path is in progress", path=shown)
            if self.ctx.db.one("SELECT 1 FROM uploads WHERE user = ? AND path = ?",
                               (user, shown)) is None:
                raise NotFound("no unfinished upload for this path", path=shown)
            self._drop_partial(user, shown)
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
        rows = self.ctx.db.all("SELECT * FROM uploads WHERE user = ?", (user,))
        for row in rows:
            path = row["path"]
            pname = part_name(path)
            known.add(pname)
            if self._is_active(user, path) or row["commit_ino"] is not None:
                continue
            st = lstat_at(sfd, pname, path)
            updated = max(row["updated"], st.st_mtime if st is not None else 0.0)
            if now - updated >= ttl:
                self._drop_partial(user, path)
                removed += 1
        for name in os.listdir(sfd):
            if not name.endswith(".part") or name in known:
                continue
            st = lstat_at(sfd, name, "/")
            if st is not None and now - st.st_mtime >= ttl:
                _unlink_quietly(sfd, name)
                removed += 1
        return removed
