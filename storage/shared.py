"""State that every daemon process on one data root shares while it runs.

``ftpd serve --workers N`` runs N reactors in N processes.  The limits that
span connections -- total and per-address connections, logged-in sessions per
user, upload slots per user -- must hold across all of them, so they cannot be
counters in one process's memory.  They live here, in a small SQLite database
``<root>/run/live.db``:

* one row per live connection, keyed by ``(pid, cid)`` (the worker's process id
  and the connection's number in it), with its address and, once logged in, its
  user; a connection's limits are checked and its row inserted in one
  ``BEGIN IMMEDIATE`` transaction, so two workers cannot both take the last slot;
* one row per ``(pid, user)`` holding the number of upload slots taken.

Why it cannot drift: every row names the process that holds it, and nothing
else holds it.  A worker that dies -- even by SIGKILL, which runs no clean-up --
leaves rows behind, but they are *its* rows: the supervisor deletes them when
it reaps the worker (``forget_pid``), a starting worker deletes any rows under
its own (possibly reused) pid and those of pids no longer alive
(``sweep_dead``), and the process holding the data-root lock empties the
database before any worker starts (``reset``: nothing can be live then).  The
database holds no durable data, so it runs with ``synchronous=OFF``: a power
cut loses it, and the next start empties it anyway.

Costs: a connection pays two small transactions (open, close), a login one more;
no fsync ever (measured in ``tests/test_shared_state.py``'s docstring: tens of
microseconds each).  No sockets here: ``storage`` never touches the network.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["RUN_DIR", "RootLocked", "SharedState", "lock_root", "pid_alive", "run_dir"]

RUN_DIR = "run"
_DB_NAME = "live.db"
_BUSY_TIMEOUT_MS = 5_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conns (
    pid  INTEGER NOT NULL,
    cid  INTEGER NOT NULL,
    ip   TEXT NOT NULL,
    user TEXT,
    PRIMARY KEY (pid, cid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conns_ip ON conns(ip);
CREATE INDEX IF NOT EXISTS conns_user ON conns(user) WHERE user IS NOT NULL;
CREATE TABLE IF NOT EXISTS upload_slots (
    pid  INTEGER NOT NULL,
    user TEXT NOT NULL,
    n    INTEGER NOT NULL CHECK (n > 0),
    PRIMARY KEY (user, pid)
) WITHOUT ROWID;
"""


def run_dir(root: str | os.PathLike[str]) -> Path:
    """``<root>/run``: files that only matter while a daemon runs (created on demand)."""
    path = Path(root) / RUN_DIR
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


class RootLocked(Exception):
    """Another daemon holds the data root (``lock_root``)."""


def lock_root(root: str | os.PathLike[str]) -> int:
    """Take the data-root lock: an exclusive ``flock`` on ``<root>/ftpd.lock``.

    Returns the descriptor, which holds the lock until it is closed or the
    process ends (the kernel drops a ``flock`` with its last descriptor, so a
    SIGKILLed daemon never leaves the root locked).  The holder's pid is written
    into the file for the message a second daemon prints.  Raises ``RootLocked``
    if another process holds it.  Only ``ftpd serve`` takes it: ``Store`` does
    not, because ``ftpd user ...`` runs beside a live daemon.
    """
    Path(root).mkdir(parents=True, exist_ok=True)
    path = Path(root) / "ftpd.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        raise RootLocked(f"another ftpd (pid {holder or '?'}) is serving {root}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def pid_alive(pid: int) -> bool:
    """Is there a process with this id (ours to signal or not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SharedState:
    """The live connections and upload slots of every process on one data root.

    ``pid`` is the process the rows are written for (this one by default).  One
    SQLite connection, used under a lock (the daemon uses it from its reactor
    thread only, so the lock is never contended there).
    """

    def __init__(self, root: str | os.PathLike[str], pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.path = run_dir(root) / _DB_NAME
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), isolation_level=None,
                                     check_same_thread=False,
                                     timeout=_BUSY_TIMEOUT_MS / 1000)
        self._conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=OFF")
        with self._write() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ----- housekeeping: nothing a dead process held stays held
    def reset(self) -> None:
        """Forget every row (only the holder of the data-root lock, before workers start)."""
        with self._write() as conn:
            conn.execute("DELETE FROM conns")
            conn.execute("DELETE FROM upload_slots")

    def forget_pid(self, pid: int) -> int:
        """Drop every row of process ``pid`` (it has exited); returns how many."""
        with self._write() as conn:
            gone = conn.execute("DELETE FROM conns WHERE pid = ?", (pid,)).rowcount
            gone += conn.execute("DELETE FROM upload_slots WHERE pid = ?", (pid,)).rowcount
        return gone

    def sweep_dead(self) -> int:
        """Drop the rows of processes that no longer exist, and any under our own pid
        (left by an earlier process that had it); returns how many rows went."""
        with self._lock:
            pids = {row[0] for row in self._conn.execute(
                "SELECT pid FROM conns UNION SELECT pid FROM upload_slots")}
        gone = 0
        for pid in pids:
            if pid == self.pid or not pid_alive(pid):
                gone += self.forget_pid(pid)
        return gone

    # ----- connections
    def open_connection(self, cid: int, ip: str, max_total: int, max_per_ip: int) -> str | None:
        """Record connection ``cid`` from ``ip`` unless a limit is reached.

        Returns None (recorded) or which limit refused it: ``"total"`` or ``"ip"``.
        """
        with self._write() as conn:
            if conn.execute("SELECT COUNT(*) FROM conns").fetchone()[0] >= max_total:
                return "total"
            if conn.execute("SELECT COUNT(*) FROM conns WHERE ip = ?",
                            (ip,)).fetchone()[0] >= max_per_ip:
                return "ip"
            conn.execute("INSERT OR REPLACE INTO conns (pid, cid, ip) VALUES (?, ?, ?)",
                         (self.pid, cid, ip))
        return None

    def close_connection(self, cid: int) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM conns WHERE pid = ? AND cid = ?", (self.pid, cid))

    def login(self, cid: int, user: str, limit: int) -> bool:
        """Mark connection ``cid`` as a session of ``user`` unless ``user`` already has
        ``limit`` sessions (on any process); False: nothing changed."""
        with self._write() as conn:
            held = conn.execute("SELECT COUNT(*) FROM conns WHERE user = ?",
                                (user,)).fetchone()[0]
            if held >= limit:
                return False
            conn.execute("UPDATE conns SET user = ? WHERE pid = ? AND cid = ?",
                         (user, self.pid, cid))
        return True

    def logout(self, cid: int) -> None:
        with self._write() as conn:
            conn.execute("UPDATE conns SET user = NULL WHERE pid = ? AND cid = ?",
                         (self.pid, cid))

    # ----- upload slots
    def take_upload(self, user: str, limit: int) -> bool:
        """Take one of ``user``'s upload slots unless ``limit`` are taken (on any process)."""
        with self._write() as conn:
            held = conn.execute("SELECT COALESCE(SUM(n), 0) FROM upload_slots WHERE user = ?",
                                (user,)).fetchone()[0]
            if held >= limit:
                return False
            conn.execute("INSERT INTO upload_slots (pid, user, n) VALUES (?, ?, 1) "
                         "ON CONFLICT (user, pid) DO UPDATE SET n = n + 1",
                         (self.pid, user))
        return True

    def free_upload(self, user: str) -> None:
        """Give back one of ``user``'s slots taken by this process (extra frees are ignored)."""
        with self._write() as conn:
            conn.execute("UPDATE upload_slots SET n = n - 1 WHERE pid = ? AND user = ? AND n > 1",
                         (self.pid, user))
            if conn.execute("SELECT changes()").fetchone()[0] == 0:
                conn.execute("DELETE FROM upload_slots WHERE pid = ? AND user = ?",
                             (self.pid, user))

    # ----- inspection (tests, logs)
    def connections(self, *, ip: str | None = None, user: str | None = None,
                    pid: int | None = None) -> int:
        where, args = [], []
        for column, value in (("ip", ip), ("user", user), ("pid", pid)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT COUNT(*) FROM conns" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock:
            return int(self._conn.execute(sql, args).fetchone()[0])

    def uploads(self, user: str) -> int:
        with self._lock:
            return int(self._conn.execute(
                "SELECT COALESCE(SUM(n), 0) FROM upload_slots WHERE user = ?",
                (user,)).fetchone()[0])
