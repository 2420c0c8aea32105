"""``ObjectStore``: the ``Store`` facade over PostgreSQL metadata and S3 blobs.

Same public methods as :class:`storage.store.Store` (the ones the daemon and
``ftpd user`` call), so the daemon picks a backend once (``ftpd.backend``) and
never asks which it has, except in two places: ``remote`` is True here (the
daemon then runs even its quick tree operations on workers, since each is a
database round trip), and ``open_read`` hands back a :class:`BlobSource`
instead of a file descriptor (the download producer streams ranged GETs).

Password hashing stays here (``PasswordHasher``, same encoding as the local
backend, so ``ftpd migrate`` copies hashes as they are).  Every method that
touches PostgreSQL or S3 is network I/O: call it from a worker thread.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Sequence

from .. import faults
from ..errors import (
    AccountDisabled,
    AuthFailed,
    Exists,
    IsADirectory,
    NoSuchUser,
    NotFound,
    StorageError,
    UploadBusy,
)
from ..logins import USER
from ..models import CommitResult, Entry, PartialInfo, SmallFile, Usage, UserInfo
from ..names import MAX_PASSWORD_CHARS, check_password, is_valid_username
from ..passwords import PasswordHasher, ScryptParams
from ..workdir import WorkDir
from .blobs import DEFAULT_PART_SIZE, BlobStore, parse_blob_url
from .collector import collect
from .logins import CachedLedger, PgLoginLedger
from .meta import DEFAULT_FOLDER_COST, DEFAULT_MAX_PARTIALS, MetaStore, check_limits
from .pending import Pending
from .upload import ObjectUpload
from .writer import choose_part_size

__all__ = ["DEFAULT_SPOOL_LIMIT", "BlobSource", "ObjectStore"]

#: Default bound on the bytes one node's uploads spool locally (docs/OBJSTORE.md).
DEFAULT_SPOOL_LIMIT = 1 << 30

#: Rounds of read-lock-check ``begin_upload`` makes before it answers ``UPLOAD_BUSY``.
_BEGIN_ROUNDS = 5


class BlobSource:
    """What ``open_read`` returns: a blob to stream with ranged GETs (no fd)."""

    __slots__ = ("blobs", "blob", "size")

    def __init__(self, blobs: BlobStore, blob: str, size: int) -> None:
        self.blobs = blobs
        self.blob = blob
        self.size = size

    def close(self) -> None:
        """Nothing held until a read starts; the producer closes its own stream."""


class ObjectStore:
    """Users, trees and resumable uploads shared by every node (see docs/OBJSTORE.md)."""

    #: The daemon keeps every call of this store off the reactor thread.
    remote = True
    #: Uploads are verified, and digests kept, with SHA-256 only: the daemon never
    #: offers BLAKE3 at ``hello`` from this store (issue 17).
    digests: tuple[str, ...] = ("sha256",)

    def __init__(self, metadata_url: str, blob_url: str, *, scrypt_n: int = 2**14,
                 scrypt_r: int = 8, scrypt_p: int = 1, partial_ttl: float = 7 * 86400,
                 default_quota: int = 1 << 30, part_size: int = DEFAULT_PART_SIZE,
                 spool_dir: str | None = None, clock: Callable[[], float] = time.time,
                 metadata_timeout: float = 5.0, spool_limit: int = DEFAULT_SPOOL_LIMIT,
                 blob_config_overrides: dict[str, object] | None = None,
                 max_partials: int = DEFAULT_MAX_PARTIALS,
                 folder_cost: int = DEFAULT_FOLDER_COST) -> None:
        # Settings first: a bad one must not leave a pool or a client behind.
        check_limits(max_partials, folder_cost)     # Store's limits, defaults and checks
        self._hasher = PasswordHasher(ScryptParams(scrypt_n, scrypt_r, scrypt_p))
        config = parse_blob_url(blob_url)
        if blob_config_overrides:
            config = dataclasses.replace(config, **blob_config_overrides)  # type: ignore
        self.blobs = BlobStore(config)
        self.blobs.ensure_bucket()
        self.meta = MetaStore(metadata_url, default_quota=default_quota, clock=clock,
                              timeout=metadata_timeout, max_partials=max_partials,
                              folder_cost=folder_cost)
        self.partial_ttl = partial_ttl
        self.part_size = part_size
        self.spool_dir = spool_dir
        #: Bytes all of this node's uploads may hold in their local spools at once.
        self.spool_limit = spool_limit
        self._spooled = 0
        self._spool_lock = threading.Lock()
        #: This node's writers, so that deleting a user ends theirs (as ``Store`` does).
        self._writers: weakref.WeakSet[ObjectUpload] = weakref.WeakSet()
        self._releaser = concurrent.futures.ThreadPoolExecutor(1, "ftpd-lock-release")
        self._releasing: dict[int, concurrent.futures.Future[None]] = {}
        self._logins: CachedLedger | None = None
        self._closed = False

    def close(self) -> None:
        """Stop: this node's upload locks go with its lock session.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._releaser.shutdown(wait=True)
        if self._logins is not None:
            self._logins.close()
        self.meta.close()

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- what the local backend has and this one does not need
    def no_checkpoints_on_this_thread(self) -> None:
        """No local database on the reactor thread here."""

    def checkpoint(self) -> tuple[int, int]:
        return (0, 0)

    # ----- users
    @property
    def hash_calls(self) -> int:
        return self._hasher.calls

    def create_user(self, name: str, password: str, quota: int | None = None) -> UserInfo:
        check_password(password)
        return self._stamped(self.meta.create_user(name, self._hasher.hash(password), quota))

    def create_user_with_hash(self, name: str, pwhash: str, quota: int | None = None
                              ) -> UserInfo:
        """For ``ftpd migrate``: the encoded scrypt hash as the local backend stored it."""
        return self.meta.create_user(name, pwhash, quota)

    def delete_user(self, name: str) -> None:
        """Remove the user; this node's writers of their uploads stop at once (another
        node's writer finds the upload gone at its next part or publish)."""
        self.meta.delete_user(name)
        for upload in list(self._writers):
            if upload.user == name:
                upload.release()

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        self.meta.set_password(name, self._hasher.hash(password))

    def set_quota(self, name: str, quota: int) -> None:
        self.meta.set_quota(name, quota)

    def set_disabled(self, name: str, disabled: bool) -> None:
        self.meta.set_disabled(name, disabled)

    def get_user(self, name: str) -> UserInfo | None:
        info = self.meta.get_user(name)
        return None if info is None else self._stamped(info)

    def list_users(self) -> list[UserInfo]:
        return self.meta.list_users()

    def verify_password(self, name: str, password: str) -> UserInfo:
        """Exactly one scrypt for a known or unknown name alike (the dummy-hash rule)."""
        found = self.meta.password_hash(name) if isinstance(name, str) else None
        valid = isinstance(password, str) and 1 <= len(password) <= MAX_PASSWORD_CHARS
        ok = self._hasher.verify(password if valid else "",
                                 None if found is None else found[0])
        if not (ok and valid) or found is None:
            raise AuthFailed("invalid user name or password")
        if found[1].disabled:
            raise AccountDisabled("account is disabled", user=name)
        return self._stamped(found[1])

    def issue_token(self, name: str, ttl: float = 86400) -> str:
        info = self.meta.get_user(name)
        if info is None:
            raise NoSuchUser("no such user", user=name if isinstance(name, str) else None)
        if info.disabled:
            raise AccountDisabled("account is disabled", user=name)
        return self.meta.issue_token(name, ttl)

    def verify_token(self, token: str) -> UserInfo:
        return self._stamped(self.meta.verify_token(token))

    def _stamped(self, info: UserInfo) -> UserInfo:
        """``info`` carrying the ``(uid, generation)`` that ``login_valid`` checks later."""
        stamp = self.login_stamp(info.name)
        if stamp is None:
            return info
        return dataclasses.replace(info, uid=stamp[0], generation=stamp[1])

    def revoke_token(self, token: str) -> None:
        self.meta.revoke_token(token)

    def usage(self, name: str) -> Usage:
        return self.meta.usage(name)

    def login_stamp(self, name: str) -> tuple[int, int] | None:
        """``(uid, generation)``: the creation time stands for the uid (a re-created
        name gets a new one) and a checksum of the password hash for the generation
        (a new password changes it); disabled accounts have none."""
        if not is_valid_username(name):
            return None
        row = self.meta.db.one("SELECT created, pwhash, disabled FROM users WHERE name = %s",
                               (name,))
        if row is None or row["disabled"]:
            return None
        return int(row["created"] * 1e6), zlib.crc32(row["pwhash"].encode())

    def login_valid(self, name: str, uid: int, generation: int) -> bool:
        return self.login_stamp(name) == (uid, generation)

    @property
    def logins(self) -> CachedLedger:
        """The login throttle's records, shared by every node (in PostgreSQL), behind a
        cache the daemon's reactor reads: ``logins.refresh`` on a worker before each
        login (ftpd/backend.py), changes sent from a background thread."""
        if self._logins is None:
            self._logins = CachedLedger(PgLoginLedger(self.meta.db), self.meta.clock)
        return self._logins

    def unlock_user(self, name: str) -> bool:
        """``ftpd user unlock``: straight to the database (on every node at once)."""
        return PgLoginLedger(self.meta.db).clear(USER, name)

    # ----- tree: metadata transactions only
    def resolve(self, user: str, path: str, cwd: str = "/") -> str:
        return self.meta.resolve(user, path, cwd)

    def list_dir(self, user: str, path: str, cwd: str = "/") -> list[Entry]:
        """Every entry, fetched page by page (keyset pagination in the database)."""
        out: list[Entry] = []
        after: str | None = None
        while True:
            page = self.meta.ls(user, path, cwd, after=after)
            out += [node.entry() for node in page]
            if len(page) < 1000:
                return out
            after = page[-1].name

    def stat(self, user: str, path: str, cwd: str = "/") -> Entry:
        return self.meta.stat(user, path, cwd).entry()

    def is_dir(self, user: str, path: str, cwd: str = "/") -> str:
        return self.meta.is_dir(user, path, cwd)

    def open_workdir(self, user: str, path: str, cwd: str = "/") -> WorkDir:
        """``cd``: a ``WorkDir`` holding no descriptor (there is no local folder)."""
        shown = self.is_dir(user, path, cwd)
        return WorkDir(shown, user, tuple(self.meta.locate(user, shown)), -1)

    def mkdir(self, user: str, path: str, cwd: str = "/", parents: bool = False) -> str:
        return self.meta.mkdir(user, path, cwd, parents)

    def rmdir(self, user: str, path: str, cwd: str = "/") -> str:
        return self.meta.rmdir(user, path, cwd)

    def remove(self, user: str, path: str, cwd: str = "/") -> str:
        return self.meta.remove(user, path, cwd)

    def rename(self, user: str, src: str, dst: str, cwd: str = "/",
               overwrite: bool = False) -> tuple[str, str]:
        return self.meta.rename(user, src, dst, cwd, overwrite=overwrite)

    def open_read(self, user: str, path: str, cwd: str = "/") -> tuple[BlobSource, int]:
        """``(BlobSource, size)`` of a regular file (nothing is opened yet)."""
        from ..errors import IsADirectory

        node = self.meta.stat(user, path, cwd)
        if node.type != "file" or node.blob is None:
            raise IsADirectory("is a folder", path=node.path)
        return BlobSource(self.blobs, node.blob, node.size), node.size

    def cached_hash(self, user: str, path: str, cwd: str = "/") -> tuple[str, int] | None:
        from ..errors import IsADirectory

        node = self.meta.stat(user, path, cwd)
        if node.type != "file" or node.blob is None:
            raise IsADirectory("is a folder", path=node.path)
        if node.sha256:
            return node.sha256, node.size
        return self.meta.cached_hash(node.blob)

    def hash_fd(self, source: BlobSource) -> tuple[str, int]:
        """``(sha256, size)`` of the blob ``open_read`` returned -- never of whatever
        the path names now (issue 13, item 12): ``get`` announces it for the bytes it
        streams.  SLOW on a miss (the blob is read back; its id is the whole key)."""
        import hashlib

        cached = self.meta.cached_hash(source.blob)
        if cached is not None:
            return cached
        h = hashlib.sha256()
        for chunk in self.blobs.read(source.blob, end=source.size):
            h.update(chunk)
        self.meta.remember_hash(source.blob, h.hexdigest(), source.size)
        return h.hexdigest(), source.size

    def file_hash(self, user: str, path: str, cwd: str = "/") -> tuple[str, int]:
        """SLOW on a miss: the blob is read back and its hash remembered (blobs are
        immutable, so the id is the whole key)."""
        import hashlib

        from ..errors import IsADirectory

        node = self.meta.stat(user, path, cwd)
        if node.type != "file" or node.blob is None:
            raise IsADirectory("is a folder", path=node.path)
        cached = node.sha256 and (node.sha256, node.size) or self.meta.cached_hash(node.blob)
        if cached:
            return cached
        h = hashlib.sha256()
        for chunk in self.blobs.read(node.blob, end=node.size):   # (an empty range: no GET)
            h.update(chunk)
        self.meta.remember_hash(node.blob, h.hexdigest(), node.size)
        return h.hexdigest(), node.size

    # ----- uploads
    def spool_take(self, size: int) -> bool:
        """Take ``size`` bytes of the node's spool budget; False if it would pass it."""
        with self._spool_lock:
            if self._spooled + size > self.spool_limit:
                return False
            self._spooled += size
            return True

    def spool_give(self, size: int) -> None:
        with self._spool_lock:
            self._spooled = max(0, self._spooled - size)

    @property
    def spooled(self) -> int:
        """Bytes this node's uploads hold in their spools now."""
        return self._spooled

    def release_lock_later(self, upload_id: int) -> None:
        """Give an upload's lock back on the background thread (never on the reactor)."""
        if self._closed:
            return
        self._releasing[upload_id] = self._releaser.submit(self.meta.locks.release, upload_id)

    def _settle_release(self, upload_id: int) -> None:
        future = self._releasing.pop(upload_id, None)
        if future is not None:
            future.result(timeout=10)

    def begin_upload(self, user: str, path: str, size: int, sha256: str | None, *,
                     cwd: str = "/", overwrite: bool = False, inline: bool = False
                     ) -> ObjectUpload:
        """Start or resume (on any node) the upload of ``size`` bytes to ``path``.

        As ``storage.objstore.begin_upload``: an upload of the path with another
        declaration is aborted first (``restarted``); ``UploadBusy`` while a
        writer on any node holds it; ``TooManyPartials`` for a new path past
        ``max_partials`` unless ``inline``.  SLOW (network): a worker's job.
        """
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("size must be a non-negative integer")
        if sha256 is not None and not isinstance(sha256, str):
            raise ValueError("sha256 must be 64 hex digits")
        sha = sha256.lower() if sha256 else None
        if sha is not None and (len(sha) != 64 or not set(sha) <= set("0123456789abcdef")):
            raise ValueError("sha256 must be 64 hex digits")
        restarted = False
        # Bounded: each round loses only to another writer that finished or replaced
        # the upload between our read and our lock.
        for _ in range(_BEGIN_ROUNDS):
            pending = self.meta.get_upload(user, path, cwd)
            if pending is None or (pending.size, pending.sha256) != (size, sha):
                replacing = None if pending is None else pending.id
                if replacing is not None:
                    self._settle_release(replacing)
                pending, created = self._create(user, path, size, sha, cwd, overwrite,
                                                replacing, not inline)
                restarted = restarted or (replacing is not None and created)
            else:       # a resume: the checks create_upload makes, before the writer's
                self._check_target(user, path, cwd, overwrite)
            self._settle_release(pending.id)
            token = self.meta.locks.acquire(pending.id)
            if token is None:
                raise UploadBusy("an upload to this path is in progress", path=pending.path)
            # Read it again under the lock: published, aborted or replaced meanwhile
            # (try again), or more parts recorded by the writer before us.
            current = self.meta.get_upload(user, path, cwd)
            if current is not None and current.id == pending.id and \
                    (current.size, current.sha256) == (size, sha):
                upload = ObjectUpload(self, current, token, overwrite=overwrite,
                                      restarted=restarted)
                self._writers.add(upload)
                return upload
            self.meta.locks.release(pending.id)
        raise UploadBusy("an upload to this path keeps changing", path=pending.path)

    def _check_target(self, user: str, path: str, cwd: str, overwrite: bool) -> None:
        """A resumed upload meets the target checks a new one meets in ``create_upload``
        (a folder there, a file without ``overwrite``) before the writer check: the
        local backend's order, so that both answer ``EXISTS`` while another writer
        holds the path."""
        try:
            node = self.meta.stat(user, path, cwd)
        except NotFound:
            return
        if node.type == "dir":
            raise IsADirectory("is a folder", path=node.path)
        if not overwrite:
            raise Exists("already exists", path=node.path)

    def _create(self, user: str, path: str, size: int, sha: str | None, cwd: str,
                overwrite: bool, replacing: int | None, counted: bool
                ) -> tuple[Pending, bool]:
        blob = self.blobs.new_blob_id()
        mpu = self.blobs.start_multipart(blob)
        faults.crash_point("object.after_start_multipart")
        try:
            pending, created = self.meta.create_upload(
                user, path, size, sha, blob=blob, mpu=mpu, cwd=cwd, overwrite=overwrite,
                part_size=choose_part_size(size, self.part_size), replacing=replacing,
                counted=counted)
        except BaseException:
            self._abort_quietly(blob, mpu)
            raise
        if not created:                         # another node began it meanwhile
            self._abort_quietly(blob, mpu)
        return pending, created

    def _abort_quietly(self, blob: str, mpu: str) -> None:
        try:
            self.blobs.abort(blob, mpu)
        except StorageError:
            pass                                # the collector's (abort_stale)

    def store_small_files(self, user: str,
                          files: Sequence[SmallFile]) -> list[CommitResult | StorageError]:
        """Each file through the same begin/write/commit as a resumable upload; one
        that fails leaves nothing behind (as the local group commit), so these uploads
        are not counted against ``max_partials``."""
        results: list[CommitResult | StorageError] = []
        for f in files:
            try:
                upload = self.begin_upload(user, f.path, len(f.data), f.sha256, cwd=f.cwd,
                                           overwrite=f.overwrite, inline=True)
                try:
                    upload.write(f.data)
                    results.append(upload.commit())
                except BaseException:       # nothing left behind (see above)
                    upload.release()
                    self._settle_release(upload.upload_id)
                    self.meta.forget_upload(upload.upload_id)
                    raise
                finally:
                    upload.release()
            except StorageError as exc:
                results.append(exc)
        return results

    def list_uploads(self, user: str) -> list[PartialInfo]:
        return [PartialInfo(path=p.path, size=p.size, offset=p.offset, sha256=p.sha256,
                            updated=p.updated) for p in self.meta.list_uploads(user)]

    def abort_upload(self, user: str, path: str, cwd: str = "/") -> str:
        """``UploadBusy`` while a writer holds it; this node's released writers do not."""
        self._settle_releases()
        return self.meta.abort_upload(user, path, cwd)

    def _settle_releases(self) -> None:
        """Wait for this node's lock releases still on the background thread."""
        for upload_id in list(self._releasing):
            self._settle_release(upload_id)

    def expire_uploads(self, now: float | None = None) -> int:
        """The periodic clean-up: expire stale uploads, then one collector pass.

        This node's released uploads are not in use: their lock releases (on the
        background thread) are waited for first, so expiry does not skip them."""
        self._settle_releases()
        return collect(self.meta, self.blobs, self.partial_ttl, now=now).expired

