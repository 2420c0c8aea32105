"""PostgreSQL access: a connection pool, transactions, error mapping, upload locks.

psycopg 3 with ``psycopg_pool``.  Each pooled connection is checked before
it is handed out, so after a database restart the stale connections are
replaced on the next use: the node reconnects by itself.  While the database
is down every call fails fast with ``StorageIOError`` (``IO_ERROR``) instead
of hanging a worker.

The one-writer-per-upload rule is a session-level advisory lock held on a
dedicated connection (``UploadLocks``), never on a pooled one (a pooled
connection would carry the lock to whoever borrows it next).  If the node
dies, its connection closes and PostgreSQL releases every lock it held.  The
lock is also a fence: writes on behalf of an upload check in the same
statement that this node's lock session still holds it, so a node that lost
its lock (connection cut) cannot record parts or publish any more.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import StorageError, StorageIOError
from .schema import LOCK_NS_UPLOAD, migrate

__all__ = ["Database", "UploadLocks"]

_log = logging.getLogger(__name__)


def _unavailable(exc: BaseException) -> StorageIOError:
    # psycopg messages can quote the connection string; keep only the class and
    # the first line, which never holds the password.
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    _log.warning("metadata database error: %s: %s", type(exc).__name__, first[:200])
    return StorageIOError("metadata database unavailable", reason=type(exc).__name__)


class Database:
    """A pool of connections to one PostgreSQL database (thread-safe)."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8,
                 timeout: float = 5.0, connect_timeout: int = 3) -> None:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.url = url
        self.timeout = timeout
        self._psycopg = psycopg
        self._kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row,
                                        "connect_timeout": connect_timeout}
        try:
            with psycopg.connect(url, **self._kwargs) as conn:
                migrate(conn)
        except psycopg.Error as exc:
            raise _unavailable(exc)
        self.pool = ConnectionPool(url, min_size=min_size, max_size=max_size,
                                   kwargs=self._kwargs, timeout=timeout,
                                   check=ConnectionPool.check_connection,
                                   reconnect_timeout=0, open=False, name="ftpd-meta")
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close(timeout=1.0)   # a worker stuck reconnecting must not hold us up

    def connect(self) -> Any:
        """A new connection outside the pool (for ``UploadLocks``)."""
        try:
            return self._psycopg.connect(self.url, **self._kwargs)
        except self._psycopg.Error as exc:
            raise _unavailable(exc)

    @contextmanager
    def tx(self) -> Iterator[Any]:
        """One transaction on a pooled connection; yields the connection.

        Outage errors become ``StorageIOError``; ``StorageError``s raised inside
        roll the transaction back and pass through unchanged.
        """
        from psycopg_pool import PoolTimeout

        psycopg = self._psycopg
        try:
            with self.pool.connection() as conn, conn.transaction():
                yield conn
        except StorageError:
            raise
        except (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise _unavailable(exc)
        except psycopg.errors.QueryCanceled as exc:
            raise _unavailable(exc)

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        with self.tx() as conn:
            return conn.execute(sql, args).fetchone()

    def all(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.tx() as conn:
            return conn.execute(sql, args).fetchall()


class UploadLocks:
    """This node's upload locks, all held on one dedicated connection.

    ``acquire`` is non-blocking: the second writer of an upload is told
    ``False`` at once (the daemon answers ``UPLOAD_BUSY``).  ``session`` is the
    backend pid of the lock connection, the fence token that the metadata
    writes check against ``pg_locks``.  If the connection is lost, every lock
    it held is gone (PostgreSQL released them): ``acquire`` reconnects and the
    writers holding old locks fail their next fenced write.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._conn: Any = None
        self._held: set[int] = set()

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        if self._conn is not None:
            self._conn.close()
            self._held.clear()            # the server released them with the session
        self._conn = self.db.connect()
        return self._conn

    @property
    def session(self) -> int:
        """Backend pid of the lock connection (connects if needed)."""
        with self._lock:
            return int(self._connection().info.backend_pid)

    def acquire(self, upload_id: int) -> int | None:
        """Take the lock of ``upload_id``: the fence token (backend pid), or None if
        another session (any node) holds it."""
        psycopg = self.db._psycopg
        with self._lock:
            for attempt in (1, 2):
                try:
                    conn = self._connection()
                    if upload_id in self._held:
                        return None        # one writer per upload within a node too
                    row = conn.execute("SELECT pg_try_advisory_lock(%s::int, %s::int) AS ok",
                                       (LOCK_NS_UPLOAD, upload_id)).fetchone()
                    break
                except psycopg.OperationalError as exc:
                    # A session cut since its last use (database restarted): its locks
                    # are gone with it, so connect once more and ask again.
                    if attempt == 2 or not conn.broken:
                        raise _unavailable(exc)
                except psycopg.Error as exc:
                    raise _unavailable(exc)
            if not row["ok"]:
                return None
            self._held.add(upload_id)
            return int(conn.info.backend_pid)

    def release(self, upload_id: int) -> None:
        """Give the lock back (a lost connection has released it already)."""
        psycopg = self.db._psycopg
        with self._lock:
            if upload_id not in self._held:
                return
            self._held.discard(upload_id)
            if self._conn is None or self._conn.closed:
                return
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s::int, %s::int)",
                                   (LOCK_NS_UPLOAD, upload_id))
            except psycopg.Error:
                pass                       # connection gone: so is the lock

    def close(self) -> None:
        with self._lock:
            self._held.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None


#: SQL fragment: true while session ``%(pid)s`` holds the lock of upload ``%(up)s``.
#: The two-int advisory lock shows in pg_locks as classid = ns, objid = id, objsubid = 2.
FENCE_SQL = (
    "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    f"AND classid = {LOCK_NS_UPLOAD} AND objid::bigint = %(up)s AND objsubid = 2 "
    "AND pid = %(pid)s AND database = (SELECT oid FROM pg_database "
    "WHERE datname = current_database()))"
)
