"""Digests of open files and the hash cache that makes repeated hashing free.

Cache rows are keyed by ``(dev, ino)`` and only trusted while ``size`` and
``mtime_ns`` still match, so a rewritten or replaced file is a miss, never a
stale answer.  Files committed by uploads are recorded at commit time, when their
hash is already known.  A row holds a SHA-256, a BLAKE3 or both (``algo``
names the column; see storage.digests): storing one digest keeps the other only
while the row still describes the same file.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from .db import Database, to_i64
from .digests import BLAKE3, SHA256, new_hasher
from .errors import StorageIOError

__all__ = ["CHUNK", "PrefixHasher", "cache_forget", "cache_lookup", "cache_renamed", "cache_store",
           "cached_fd",
           "fd_sha256", "sha256_fd"]

CHUNK = 1 << 20


def _column(algo: str) -> str:
    """The cache column of ``algo`` (never interpolate anything else into SQL)."""
    if algo not in (SHA256, BLAKE3):
        raise ValueError(f"unknown digest {algo!r}")
    return algo


def sha256_fd(fd: int, algo: str = SHA256) -> tuple[str, int]:
    """Hash a whole file from offset 0 with ``pread`` (the fd's position is untouched);
    SHA-256 unless ``algo`` names another digest."""
    digest = new_hasher(algo)
    pos = 0
    while True:
        block = os.pread(fd, CHUNK, pos)
        if not block:
            return digest.hexdigest(), pos
        digest.update(block)
        pos += len(block)


class PrefixHasher:
    """SHA-256 of a growing file's prefix, read back from the file in the background.

    An upload's bytes are hashed behind the writer, on a worker thread, while
    more bytes arrive; at commit only the tail that was written since is left
    to hash.  ``advance`` may run on any thread; a lock keeps two callers from
    interleaving, and ``upto`` only ever covers bytes really read from the file.
    """

    def __init__(self, algo: str = SHA256) -> None:
        self.algo = algo
        self._digest = new_hasher(algo)
        self._lock = threading.Lock()
        self.upto = 0

    def advance(self, fd: int, end: int) -> int:
        """Hash the file from ``upto`` to ``end`` (or its real end, if shorter)."""
        with self._lock:
            if self.upto >= end:
                return self.upto
            # A buffer per call, so an idle upload holds none.
            view = memoryview(bytearray(min(CHUNK, end - self.upto)))
            while self.upto < end:
                n = os.preadv(fd, [view[:min(len(view), end - self.upto)]], self.upto)
                if n <= 0:
                    break
                self._digest.update(view[:n])
                self.upto += n
            return self.upto

    def finish(self, fd: int, end: int) -> tuple[str, int]:
        """Hash the rest up to ``end``; returns (hex digest, bytes hashed)."""
        upto = self.advance(fd, end)
        with self._lock:
            return self._digest.hexdigest(), upto


def cache_lookup(db: Database, st: os.stat_result, algo: str = SHA256) -> str | None:
    """The cached ``algo`` digest of the file ``st`` describes, if its row still matches
    it all: inode, size, mtime and ctime (a rewrite in place that restores the mtime
    still changes the ctime)."""
    column = _column(algo)
    row = db.one(
        f"SELECT {column} FROM hashes WHERE dev=? AND ino=? AND size=? AND mtime_ns=?"
        " AND ctime_ns=?",
        (to_i64(st.st_dev), to_i64(st.st_ino), st.st_size, st.st_mtime_ns, st.st_ctime_ns),
    )
    return None if row is None else row[column]


def cache_store(conn: sqlite3.Connection, st: os.stat_result, digest: str,
                algo: str = SHA256) -> None:
    """Record the ``algo`` ``digest`` for the file described by ``st`` (call inside a
    write transaction).  The row's other digest stays only if the row described this
    very file (same size, mtime and ctime); otherwise it belonged to an older file.

    ``st`` must be taken after the file got its final name: a link or rename changes
    the ctime, and a row with an older one is never matched."""
    column = _column(algo)
    other = BLAKE3 if column == SHA256 else SHA256
    conn.execute(
        f"INSERT INTO hashes (dev, ino, size, mtime_ns, ctime_ns, {column})"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dev, ino) DO UPDATE SET"
        f" {other} = CASE WHEN size = excluded.size AND mtime_ns = excluded.mtime_ns"
        f" AND ctime_ns IS excluded.ctime_ns THEN {other} ELSE NULL END,"
        " size = excluded.size, mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns,"
        f" {column} = excluded.{column}",
        (to_i64(st.st_dev), to_i64(st.st_ino), st.st_size, st.st_mtime_ns, st.st_ctime_ns,
         digest),
    )


def cache_forget(conn: sqlite3.Connection, st: os.stat_result) -> None:
    """Drop the row of a file that is being removed or replaced (its inode may be reused)."""
    conn.execute("DELETE FROM hashes WHERE dev=? AND ino=?",
                 (to_i64(st.st_dev), to_i64(st.st_ino)))


def cache_renamed(conn: sqlite3.Connection, before: os.stat_result,
                  after: os.stat_result) -> None:
    """A file got a new name: its row follows it (a rename changes only the ctime)."""
    conn.execute(
        "UPDATE hashes SET ctime_ns=? WHERE dev=? AND ino=? AND size=? AND mtime_ns=?"
        " AND ctime_ns=?",
        (after.st_ctime_ns, to_i64(before.st_dev), to_i64(before.st_ino), before.st_size,
         before.st_mtime_ns, before.st_ctime_ns))


def cached_fd(db: Database, fd: int, algo: str = SHA256) -> tuple[str, int] | None:
    """``(digest, size)`` of the file open as ``fd`` if its cache row matches its ``fstat``
    and holds an ``algo`` digest."""
    st = os.fstat(fd)
    cached = cache_lookup(db, st, algo)
    return None if cached is None else (cached, st.st_size)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return ((a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns)
            == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns, b.st_ctime_ns))


def fd_sha256(db: Database, fd: int, *, tries: int = 3, algo: str = SHA256) -> tuple[int, str]:
    """``(size, digest)`` of the file open as ``fd`` -- never of whatever now has its name;
    the SHA-256 unless ``algo`` names another digest.

    The cache is asked with the descriptor's own ``fstat`` (dev, ino, size, mtime_ns,
    ctime_ns); on a miss the descriptor is read whole and the digest kept only if the
    file did not change meanwhile.  A file that keeps changing while it is read
    (``tries`` times) is ``StorageIOError``: no digest is better than a wrong one.
    SLOW on a miss: a worker's job.
    """
    for _ in range(tries):
        st = os.fstat(fd)
        cached = cache_lookup(db, st, algo)
        if cached is not None:
            return st.st_size, cached
        digest, length = sha256_fd(fd, algo)
        after = os.fstat(fd)
        if _same_file(st, after) and length == st.st_size:
            with db.write() as conn:
                cache_store(conn, after, digest, algo)
            return length, digest
    raise StorageIOError("the file kept changing while it was hashed")
