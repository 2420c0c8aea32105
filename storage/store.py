"""``Store``: the one object the daemon talks to for everything kept on disk.

Layout under the data root::

    root/users.db            catalogue (users, tokens, upload reservations, hash cache)
    root/homes/<user>/       each user's confined file tree
    root/staging/<user>/     partial uploads, outside the home so never visible there

The class only wires the parts together (accounts, confined tree, uploads) and
documents the contract; every public method is thread-safe.  Quick methods may
run on the reactor thread; those marked SLOW (``verify_password``,
``file_hash``, ``Upload.commit``) belong in a worker thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from . import streams
from .accounts import Accounts, TokenRecords
from .context import StoreContext
from .db import Database
from .digests import SHA256, supported
from .errors import StorageError
from .hashing import cached_fd, fd_sha256
from .logins import USER, LoginLedger
from .models import CommitResult, Entry, PartialInfo, SmallFile, Usage, UserInfo
from .passwords import PasswordHasher, ScryptParams
from .paths import join_user_path
from .tree import FileTree, open_user_dir
from .upload import Upload
from .uploads import UploadManager
from .workdir import WorkDir

__all__ = ["DB_NAME", "DEFAULT_FOLDER_COST", "DEFAULT_MAX_PARTIALS", "Store"]

DB_NAME = "users.db"
#: Unfinished uploads one user may hold at once (issue 13, item 7).
DEFAULT_MAX_PARTIALS = 1000
#: Quota one folder costs, in bytes: the block it takes on disk (issue 13, item 8).
DEFAULT_FOLDER_COST = 4096


class Store:
    """Users, their confined homes, and resumable verified uploads under ``root``.

    Symbolic links inside a home are never followed: any operation whose path
    meets one raises ``BadPath`` (``list_dir`` shows them as type "other").

    ``clock`` (default ``time.time``) stamps rows and decides token and partial
    expiry; tests pass a fake one.

    Limits against one user's hoarding (issue 13, docs/SECURITY.md):
    ``max_partials`` unfinished uploads per user (``TooManyPartials`` past it) and
    ``folder_cost`` bytes of quota per folder (0 makes folders free again).

    ``digests``: what uploads may be verified with and the hash cache keeps --
    SHA-256, and BLAKE3 where the package is installed (the daemon offers BLAKE3
    at ``hello`` only from a store that lists it; issue 17).
    """

    digests: tuple[str, ...] = supported()

    def __init__(self, root: str | os.PathLike[str], *, scrypt_n: int = 2**14, scrypt_r: int = 8,
                 scrypt_p: int = 1, partial_ttl: float = 7 * 86400,
                 default_quota: int = 1 << 30,
                 clock: Callable[[], float] = time.time,
                 max_partials: int = DEFAULT_MAX_PARTIALS,
                 folder_cost: int = DEFAULT_FOLDER_COST) -> None:
        params = ScryptParams(scrypt_n, scrypt_r, scrypt_p)
        if not isinstance(default_quota, int) or default_quota < 0:
            raise ValueError("default_quota must be a non-negative integer")
        if not isinstance(max_partials, int) or max_partials < 1:
            raise ValueError("max_partials must be a positive integer")
        if not isinstance(folder_cost, int) or folder_cost < 0:
            raise ValueError("folder_cost must be a non-negative integer")
        self.root = os.fspath(root)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self._closed = False
        self._close_lock = threading.Lock()
        db = Database(os.path.join(self.root, DB_NAME))
        try:
            self._ctx = StoreContext(self.root, db, clock, partial_ttl, default_quota,
                                     max_partials=max_partials, folder_cost=folder_cost)
        except BaseException:
            db.close()
            raise
        self._hasher = PasswordHasher(params)
        self._accounts = Accounts(self._ctx, self._hasher)
        self._tree = FileTree(self._ctx)
        self._uploads = UploadManager(self._ctx)
        self._uploads.recover()

    def no_checkpoints_on_this_thread(self) -> None:
        """Keep the database's fsyncing checkpoints off the calling thread (the reactor)."""
        self._ctx.db.no_checkpoints_on_this_thread()

    def checkpoint(self) -> tuple[int, int]:
        """Fold the write-ahead log into the database; SLOW (fsync): call from a worker.

        Returns (frames in the log, frames copied)."""
        return self._ctx.db.checkpoint()

    def close(self) -> None:
        """Close active uploads (without release: they stay resumable), the DB and fds.

        Idempotent.  Stop worker threads first: their uploads are cut off.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._uploads.revoke()
        self._uploads.registry.close()
        self._ctx.db.close()
        self._ctx.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- users
    @property
    def hash_calls(self) -> int:
        """Number of scrypt invocations so far (thread-safe counter)."""
        return self._hasher.calls

    def create_user(self, name: str, password: str, quota: int | None = None) -> UserInfo:
        """New user with ``quota`` bytes (default ``default_quota``). SLOW-ish: one scrypt.

        Raises BadUsername, BadPassword, UserExists.
        """
        return self._accounts.create(name, password, quota)

    def delete_user(self, name: str) -> None:
        """Remove the user, their home, their partials and tokens; active uploads are cut off."""
        self._uploads.revoke(name)
        self._accounts.delete(name)
        self._uploads.revoke(name)  # any begun meanwhile: their partials are gone now

    def set_password(self, name: str, password: str) -> None:
        """New password (one scrypt); all the user's tokens are revoked."""
        self._accounts.set_password(name, password)

    def set_quota(self, name: str, quota: int) -> None:
        self._accounts.set_quota(name, quota)

    def set_disabled(self, name: str, disabled: bool) -> None:
        self._accounts.set_disabled(name, disabled)

    def get_user(self, name: str) -> UserInfo | None:
        return self._accounts.get(name)

    def list_users(self) -> list[UserInfo]:
        return self._accounts.list()

    def verify_password(self, name: str, password: str) -> UserInfo:
        """SLOW (exactly one scrypt).  AuthFailed for unknown user or wrong password alike;
        AccountDisabled only after a correct password."""
        return self._accounts.verify_password(name, password)

    def issue_token(self, name: str, ttl: float = 86400) -> str:
        return self._accounts.issue_token(name, ttl)

    def verify_token(self, token: str) -> UserInfo:
        """Fast.  AuthFailed if unknown, expired, revoked, or the user is disabled/deleted."""
        return self._accounts.verify_token(token)

    def verify_token_with_records(self, token: str, addr: str) -> TokenRecords:
        """``verify_token`` and, read by the same statement, the login throttle's
        records (``self.logins``) of ``addr`` and of the token's user name."""
        return self._accounts.verify_token_with_records(token, addr)

    def revoke_token(self, token: str) -> None:
        self._accounts.revoke_token(token)

    def usage(self, name: str) -> Usage:
        return self._accounts.usage(name)

    # ----- confined file tree
    def resolve(self, user: str, path: str, cwd: str = "/") -> str:
        """Normalise ``path`` against ``cwd`` (no disk access); BadPath if unacceptable."""
        return self._tree.resolve(user, path, cwd)

    def list_dir(self, user: str, path: str, cwd: str = "/") -> list[Entry]:
        return self._tree.list_dir(user, path, cwd)

    def iter_dir(self, user: str, path: str, cwd: str = "/",
                 page_size: int = 256) -> Iterator[list[Entry]]:
        """A streaming ``list_dir``: pages of at most ``page_size`` entries in directory
        order (unsorted), read from disk only as they are asked for, so memory stays
        one page however large the folder.  Errors (NotFound, NotADirectory, BadPath)
        come from this call itself; each page is SLOW-ish (one ``lstat`` per entry):
        iterate on a worker and close the iterator if you stop early."""
        return self._tree.iter_dir(user, path, cwd, page_size)

    def stat(self, user: str, path: str, cwd: str = "/") -> Entry:
        return self._tree.stat(user, path, cwd)

    def is_dir(self, user: str, path: str, cwd: str = "/") -> str:
        return self._tree.is_dir(user, path, cwd)

    def mkdir(self, user: str, path: str, cwd: str = "/", parents: bool = False) -> str:
        return self._tree.mkdir(user, path, cwd, parents)

    def rmdir(self, user: str, path: str, cwd: str = "/") -> str:
        return self._tree.rmdir(user, path, cwd)

    def remove(self, user: str, path: str, cwd: str = "/") -> str:
        return self._tree.remove(user, path, cwd)

    def rename(self, user: str, src: str, dst: str, cwd: str = "/",
               overwrite: bool = False) -> tuple[str, str]:
        return self._tree.rename(user, src, dst, cwd, overwrite)

    def open_read(self, user: str, path: str, cwd: str = "/") -> tuple[int, int]:
        """``(fd, size)`` of a regular file opened O_RDONLY|O_NOFOLLOW; the caller closes fd."""
        return self._tree.open_read(user, path, cwd)

    def file_hash(self, user: str, path: str, cwd: str = "/") -> tuple[str, int]:
        """SLOW on a cache miss: ``(sha256 hex, size)``, cached by (dev, ino, size, mtime_ns)."""
        return self._tree.file_hash(user, path, cwd)

    def open_hashed(self, user: str, path: str, cwd: str = "/") -> tuple[int, int, str]:
        """``get``: ``(fd, size, sha256)`` of one and the same file.  SLOW on a cache miss.

        The file is opened first; its digest is then looked up in the cache by that
        descriptor's own (dev, ino, size, mtime_ns, ctime_ns), or computed by reading
        that descriptor, so a concurrent overwrite can never pair these bytes with
        another file's SHA-256 (issue 13, item 12).  ``StorageIOError`` if the file
        keeps changing while it is read.  The caller closes ``fd``."""
        return self._tree.open_hashed(user, path, cwd)

    def cached_hash_fd(self, fd: int, algo: str = SHA256) -> tuple[str, int] | None:
        """``(sha256, size)`` of the file open as ``fd`` if the cache knows it, else None
        (the BLAKE3 with ``algo="blake3"``).  Fast (one ``fstat``, one indexed read):
        the loop may ask it.  By the descriptor, never by a path another session may
        have replaced (item 12)."""
        return cached_fd(self._ctx.db, fd, algo)

    def hash_fd(self, fd: int, algo: str = SHA256) -> tuple[str, int]:
        """``(sha256, size)`` of the file open as ``fd`` (cached, or read through ``fd``;
        the BLAKE3 with ``algo="blake3"``).  SLOW on a cache miss: a worker's job; the
        caller keeps ``fd`` open meanwhile.  ``StorageIOError`` if the file keeps
        changing while it is read."""
        size, digest = fd_sha256(self._ctx.db, fd, algo=algo)
        return digest, size

    def cached_hash(self, user: str, path: str, cwd: str = "/") -> tuple[str, int] | None:
        return self._tree.cached_hash(user, path, cwd)

    # ----- resumable uploads
    def begin_upload(self, user: str, path: str, size: int, sha256: str | None, *,
                     cwd: str = "/", overwrite: bool = False,
                     blake3: str | None = None) -> Upload:
        """Start or resume the upload of ``size`` bytes to ``path``; see :mod:`storage.uploads`.
        ``blake3`` declares a BLAKE3 instead of ``sha256`` (one of the two at most).

        ``ValueError`` for a negative size or a malformed digest (64 hex digits).
        """
        return self._uploads.begin(user, path, size, sha256, cwd=cwd, overwrite=overwrite,
                                   blake3=blake3)

    def begin_stream(self, user: str, path: str, *, cwd: str = "/", overwrite: bool = False,
                     size_hint: int | None = None) -> Upload:
        """Begin an upload of unknown length at offset 0 (:mod:`storage.streams`): call
        ``reserve_stream`` before writing past ``upload.size``, ``seal_stream`` before
        ``commit``."""
        return streams.begin_stream(self._uploads, user, path, cwd=cwd, overwrite=overwrite,
                                    size_hint=size_hint)

    def reserve_stream(self, upload: Upload, end: int) -> None:
        """Charge the quota for a stream's bytes up to ``end``; ``QuotaExceeded`` if full."""
        streams.reserve(upload, end)

    def seal_stream(self, upload: Upload) -> None:
        """A stream's declared size becomes the bytes held (before its commit)."""
        streams.seal(upload)

    def store_small_files(self, user: str,
                          files: Sequence[SmallFile]) -> list[CommitResult | StorageError]:
        """Store several whole small files at once, sharing their syncs (group commit).

        One result per file, in order: its ``CommitResult`` once it is fsynced
        and visible, or the ``StorageError`` that refused it.  SLOW: a worker's
        job.  See ``UploadManager.store_small``.
        """
        return self._uploads.store_small(user, files)

    def list_uploads(self, user: str) -> list[PartialInfo]:
        """Every unfinished upload at once (kept for compatibility: prefer the pages)."""
        return self._uploads.list(user)

    def list_uploads_page(self, user: str, after: str | None = None,
                          limit: int = 100) -> tuple[list[PartialInfo], str | None]:
        """One page of unfinished uploads in path order, from the first path after
        ``after``: ``(infos, next_after)``, ``next_after`` None on the last page.  Reads
        at most ``limit + 1`` rows (one indexed range) and stats ``limit`` partials."""
        return self._uploads.page(user, after, limit)

    def iter_uploads(self, user: str, page_size: int = 100) -> Iterator[list[PartialInfo]]:
        """``uploads``: the listing as pages (``list_uploads_page`` in a loop), each read
        from the database only when asked for.  Run it on a worker."""
        after: str | None = None
        while True:
            page, after = self._uploads.page(user, after, page_size)
            if page:
                yield page
            if after is None:
                return

    def abort_upload(self, user: str, path: str, cwd: str = "/") -> str:
        return self._uploads.abort(user, path, cwd)

    def expire_uploads(self, now: float | None = None) -> int:
        return self._uploads.expire(now)

    # ----- sessions and the login throttle (issue 13)
    def login_stamp(self, name: str) -> tuple[int, int] | None:
        """``(uid, generation)`` of the enabled account called ``name``, None if there is
        none (deleted, disabled).  Fast: one indexed read."""
        return self._accounts.login_stamp(name)

    def login_valid(self, name: str, uid: int, generation: int) -> bool:
        """Whether a session that logged in as ``name`` (``UserInfo.uid`` and
        ``.generation`` of its login) may go on.  False once the account was given a new
        password, disabled, deleted, or deleted and created again.  Fast: one indexed
        read, so a session may ask before every request (or on a short timer)."""
        return self._accounts.login_valid(name, uid, generation)

    @property
    def logins(self) -> LoginLedger:
        """The login throttle's shared records (failures, lockouts, trusted addresses)."""
        ledger = self.__dict__.get("_logins")
        if ledger is None:
            ledger = self.__dict__.setdefault("_logins", LoginLedger(self._ctx.db))
        return ledger

    def unlock_user(self, name: str) -> bool:
        """End a lockout of the user name ``name`` and forget its failures (``ftpd user
        unlock``); True if there was a record.  Addresses keep theirs."""
        return self.logins.clear(USER, name)

    # ----- a session's working folder held open (issue 13, item 1)
    def open_workdir(self, user: str, path: str, cwd: str = "/") -> WorkDir:
        """``cd``: open the folder ``path`` (relative to ``cwd``) and return it as a
        ``WorkDir``: its normalised path (a ``str``, usable wherever ``cwd`` is) holding
        an open descriptor.  Passed back as ``cwd``, it lets every tree operation on a
        path below it walk only the components past it.  The caller closes it (on the
        next ``cd``, logout, or the end of the session).  Errors as ``is_dir``:
        NotFound, NotADirectory, BadPath (symlink, too deep)."""
        parts = self._tree.locate(user, path, cwd)
        fd = open_user_dir(self._ctx, user, parts, cwd)
        return WorkDir(join_user_path(parts), user, parts, fd)
