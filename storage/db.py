"""The SQLite catalogue (``users.db``): users, tokens, upload reservations, hash cache,
login throttle.

One connection per thread (``threading.local``) so that reads on the reactor
thread never wait for a worker's transaction; WAL lets them run side by side.
Writers use ``BEGIN IMMEDIATE`` so a read-then-write transaction can never fail
half-way with SQLITE_BUSY, and ``busy_timeout`` makes them queue instead.
``synchronous=NORMAL`` keeps small updates on the reactor free of fsync (WAL stays
consistent after a crash; only the last transactions can be lost on power loss).
The schema version lives in ``PRAGMA user_version``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .errors import NoSpace, StorageError, StorageIOError

__all__ = ["SCHEMA_VERSION", "Database", "to_i64"]

SCHEMA_VERSION = 4
_BUSY_TIMEOUT_MS = 10_000

_SCHEMA_V1 = """
CREATE TABLE users (
    name     TEXT PRIMARY KEY,
    pwhash   TEXT NOT NULL,
    quota    INTEGER NOT NULL CHECK (quota >= 0),
    used     INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
    created  REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE tokens (
    digest  TEXT PRIMARY KEY,          -- sha256(token) hex, the token itself is never stored
    user    TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    expires REAL NOT NULL
);
CREATE INDEX tokens_user ON tokens(user);
CREATE TABLE uploads (
    user       TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    path       TEXT NOT NULL,          -- normalised user path of the target
    size       INTEGER NOT NULL,
    sha256     TEXT,
    reserved   INTEGER NOT NULL CHECK (reserved >= 0),
    created    REAL NOT NULL,
    updated    REAL NOT NULL,
    commit_dev INTEGER,                -- set just before the rename into place, so a
    commit_ino INTEGER,                -- crash mid-commit can be finished at start-up
    commit_old INTEGER,
    PRIMARY KEY (user, path)
);
CREATE TABLE hashes (
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    PRIMARY KEY (dev, ino)
);
"""


#: Version 2 (issue 13): accounts get a never-reused ``uid`` and a ``generation`` bumped
#: whenever their sessions must end (new password, disabled, deleted), tokens name the
#: ``uid`` they were issued to, and the login throttle's state lives here so that every
#: daemon process shares it.  Only ``ALTER TABLE ... ADD COLUMN`` and new tables: an
#: existing data root is upgraded in place, its rows kept.
_SCHEMA_V2 = """
ALTER TABLE users ADD COLUMN uid INTEGER;
ALTER TABLE users ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tokens ADD COLUMN uid INTEGER;
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
UPDATE users SET uid = rowid;
INSERT INTO counters (name, value)
    VALUES ('next_uid', COALESCE((SELECT MAX(uid) FROM users), 0) + 1);
UPDATE tokens SET uid = (SELECT uid FROM users WHERE users.name = tokens.user);
CREATE UNIQUE INDEX users_uid ON users(uid);
CREATE TABLE login_failures (
    kind         INTEGER NOT NULL,     -- 0: a user name (known or not), 1: an address
    key          TEXT NOT NULL,
    failures     INTEGER NOT NULL,     -- failures not yet forgiven (one per decay period)
    since        REAL NOT NULL,        -- start of the decay period under way
    locked_until REAL NOT NULL DEFAULT 0,
    last         REAL NOT NULL,        -- last failure: the oldest rows go first
    PRIMARY KEY (kind, key)
);
CREATE INDEX login_failures_last ON login_failures(last);
CREATE TABLE login_trust (
    uid  INTEGER NOT NULL,             -- the account (never reused), not the name
    addr TEXT NOT NULL,
    last REAL NOT NULL,                -- last successful login of uid from addr
    PRIMARY KEY (uid, addr)
);
CREATE INDEX login_trust_last ON login_trust(last);
"""


#: Version 3 (issue 13, item 12): a hash-cache row also names the file's ``ctime_ns``, so
#: a file rewritten in place with its old size and mtime restored is a miss, never another
#: content's digest.  Rows of version 2 have none and are simply missed (re-hashed).
_SCHEMA_V3 = """
ALTER TABLE hashes ADD COLUMN ctime_ns INTEGER
"""


#: Version 4 (issue 17): BLAKE3 beside SHA-256.  An upload may declare a ``blake3`` instead
#: of a ``sha256``, and a hash-cache row may hold either or both, so the cache table is
#: rebuilt with both columns nullable (its rows are copied: nothing is re-hashed).
_SCHEMA_V4 = """
ALTER TABLE uploads ADD COLUMN blake3 TEXT;
CREATE TABLE hashes_v4 (
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER,
    sha256   TEXT,
    blake3   TEXT,
    PRIMARY KEY (dev, ino)
);
INSERT INTO hashes_v4 (dev, ino, size, mtime_ns, ctime_ns, sha256)
    SELECT dev, ino, size, mtime_ns, ctime_ns, sha256 FROM hashes;
DROP TABLE hashes;
ALTER TABLE hashes_v4 RENAME TO hashes
"""


def to_i64(value: int) -> int:
    """Fold an unsigned 64-bit st_dev/st_ino into SQLite's signed INTEGER range."""
    return value - (1 << 64) if value >= (1 << 63) else value


def _mapped(exc: sqlite3.OperationalError) -> StorageError:
    """SQLite's "database or disk is full" becomes NoSpace; anything else IO_ERROR."""
    if "full" in str(exc).lower():
        return NoSpace("the database cannot grow: disk full")
    return StorageIOError(f"database error: {exc}")


class Database:
    """Thread-safe access to one SQLite file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        conn = self.conn()
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageIOError("could not switch the database to WAL mode", mode=str(mode))
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False only so close() may close every thread's connection;
        # each connection is otherwise used by the thread that created it.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=_BUSY_TIMEOUT_MS / 1000)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        if self._closed:
            raise StorageIOError("the store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise StorageIOError("the store is closed")
                conn = self._connect()
                self._all.append(conn)
            self._local.conn = conn
        return conn

    def _migrate(self) -> None:
        with self.write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageIOError("database was written by a newer version",
                                     version=version, supported=SCHEMA_VERSION)
            for step, script in ((1, _SCHEMA_V1), (2, _SCHEMA_V2), (3, _SCHEMA_V3),
                                 (4, _SCHEMA_V4)):
                if version < step:
                    for statement in script.split(";"):
                        if statement.strip():
                            conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``), committed on success, rolled back on error."""
        conn = self.conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise _mapped(exc)
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise _mapped(exc)
            raise

    def no_checkpoints_on_this_thread(self) -> None:
        """WAL checkpoints fsync the database: never let one run on this thread.

        The daemon calls it on its reactor thread; checkpoints then happen on the
        worker threads' connections, or in ``checkpoint`` run by a worker.
        """
        self.conn().execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> tuple[int, int]:
        """Copy the WAL back into the database file (PASSIVE: never waits for readers).

        Returns (frames in the log, frames copied)."""
        _, frames, copied = self.conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return frames, copied

    def all(self, sql: str, args: Sequence[object] = ()) -> list[sqlite3.Row]:
        return self.conn().execute(sql, args).fetchall()

    def one(self, sql: str, args: Sequence[object] = ()) -> sqlite3.Row | None:
        return self.conn().execute(sql, args).fetchone()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
