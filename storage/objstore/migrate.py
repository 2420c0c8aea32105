"""``ftpd migrate``: copy a local data root into the object-store backend.

Users keep their password hashes as they are (same scrypt encoding on both
backends, so passwords keep working), their quota and disabled flag; folders
are created; each file goes through the normal upload path (multipart blob,
SHA-256 declared from the source, verified by the running hash before it is
published) with its mtime.  Symbolic links and special files are skipped and
reported.  The copy is idempotent: a user that exists is reused and a file
whose destination already has the same SHA-256 is skipped, so an interrupted
migration is simply run again.  The source is only read.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NotFound, UserExists
from ..store import DB_NAME, Store
from .store import ObjectStore

__all__ = ["MigrationReport", "migrate_root"]

_CHUNK = 1 << 20
#: Quota while a user's files are copied (the real one is set afterwards).
_COPYING_QUOTA = 2**53 - 1


@dataclass
class MigrationReport:
    users: int = 0
    folders: int = 0
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)   # "user:/path (why)"


def _accounts(root: Path) -> list[sqlite3.Row]:
    """Users with their hashes, read-only from the local catalogue."""
    conn = sqlite3.connect(f"file:{root / DB_NAME}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT name, pwhash, quota, disabled FROM users "
                            "ORDER BY name").fetchall()
    finally:
        conn.close()


def migrate_root(root: str | os.PathLike[str], dest: ObjectStore, *,
                 say: Callable[[str], None] = lambda _: None) -> MigrationReport:
    """Copy every user of the local data root ``root`` into ``dest``.  SLOW."""
    root = Path(root)
    if not (root / DB_NAME).is_file():
        raise FileNotFoundError(f"no data folder at {root}")
    report = MigrationReport()
    rows = _accounts(root)
    source = Store(root)
    try:
        for row in rows:
            name = row["name"]
            try:
                dest.create_user_with_hash(name, row["pwhash"], _COPYING_QUOTA)
            except UserExists:
                dest.set_quota(name, _COPYING_QUOTA)
            try:
                _copy_tree(source, dest, name, report, say)
            finally:
                dest.set_quota(name, int(row["quota"]))
            dest.set_disabled(name, bool(row["disabled"]))
            report.users += 1
            say(f"user {name}: done")
    finally:
        source.close()
    return report


def _copy_tree(source: Store, dest: ObjectStore, user: str, report: MigrationReport,
               say: Callable[[str], None]) -> None:
    folders = ["/"]
    while folders:
        folder = folders.pop()
        for entry in source.list_dir(user, folder):
            if entry.type == "dir":
                try:
                    dest.mkdir(user, entry.path)
                except Exception as exc:   # Exists from an earlier run is fine
                    if getattr(exc, "code", "") != "EXISTS":
                        raise
                report.folders += 1
                folders.append(entry.path)
            elif entry.type == "file":
                _copy_file(source, dest, user, entry.path, entry.mtime, report)
                say(f"user {user}: {entry.path}")
            else:
                report.skipped.append(f"{user}:{entry.path} ({entry.type})")


def _copy_file(source: Store, dest: ObjectStore, user: str, path: str, mtime: float,
               report: MigrationReport) -> None:
    # One open: the digest is of the very bytes copied (item 12), even if the source
    # file is replaced meanwhile.
    fd, size, sha256 = source.open_hashed(user, path)
    try:
        try:
            if dest.cached_hash(user, path) == (sha256, size):
                return                       # copied by an earlier run
        except NotFound:
            pass
        upload = dest.begin_upload(user, path, size, sha256, overwrite=True)
        try:
            offset = upload.offset            # resumes an interrupted copy
            while offset < size:
                chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
                if not chunk:
                    raise OSError(f"{path} shrank while being copied")
                upload.write(chunk)
                offset += len(chunk)
                if upload.offset % (16 * _CHUNK) == 0:
                    upload.flush()
            upload.commit(mtime=mtime)        # verifies the SHA-256 before publishing
        finally:
            upload.release()
    finally:
        os.close(fd)
    report.files += 1
    report.bytes += size
