"""State that every daemon process on one data root shares while it runs.

``ftpd serve --workers N`` runs N reactors in N processes.  The limits that
span connections -- total and per-address connections, logged-in sessions per
user, upload slots per user -- must hold across all of them, so they cannot be
counters in one process's memory.  They live here, in a small SQLite database
``<root>/run/live.db``:

one row per ``(key, pid)``: how many of ``key`` the process ``pid`` holds, where
the key is ``*`` (open connections), ``ip:ADDR`` (connections from an address),
``user:NAME`` (logged-in sessions of a user) or ``up:NAME`` (a user's upload
slots).  A limit is checked and the count taken in one ``BEGIN IMMEDIATE``
transaction (the sum over at most N rows, one per worker), so two workers cannot
both take the last slot; each process writes only its own rows.

Why it cannot drift: every row names the process that holds it, and nothing
else holds it.  A worker that dies -- even by SIGKILL, which runs no clean-up --
leaves rows behind, but they are *its* rows: the supervisor deletes them when
it reaps the worker (``forget_pid``), a starting worker deletes any rows under
its own (possibly reused) pid and those of pids no longer alive
(``sweep_dead``), and the process holding the data-root lock empties the
database before any worker starts (``reset``: nothing can be live then).  The
database holds no durable data, so it runs with ``synchronous=OFF``: a power
cut loses it, and the next start empties it anyway.

Costs: a connection pays two small transactions (open, close), a login and an
upload one more each; no fsync ever, and no cost growing with the number of
connections (docs/ARCHITECTURE.md has the measured figures).  No sockets here:
``storage`` never touches the network.
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
CREATE TABLE IF NOT EXISTS held (
    key  TEXT NOT NULL,        -- '*' (connections), 'ip:' addr, 'user:' name, 'up:' name
    pid  INTEGER NOT NULL,     -- the process holding them
    n    INTEGER NOT NULL CHECK (n > 0),
    PRIMARY KEY (key, pid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS held_pid ON held(pid);
"""
TOTAL = "*"


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
            conn.execute("DELETE FROM held")

    def forget_pid(self, pid: int) -> int:
        """Drop every row of process ``pid`` (it has exited); returns how many."""
        with self._write() as conn:
            return conn.execute("DELETE FROM held WHERE pid = ?", (pid,)).rowcount

    def sweep_dead(self) -> int:
        """Drop the rows of processes that no longer exist, and any under our own pid
        (left by an earlier process that had it); returns how many rows went."""
        with self._lock:
            pids = [row[0] for row in self._conn.execute("SELECT DISTINCT pid FROM held")]
        return sum(self.forget_pid(pid) for pid in pids
                   if pid == self.pid or not pid_alive(pid))

    # ----- the counters: each process writes only its own rows
    @staticmethod
    def _held(conn: sqlite3.Connection, key: str) -> int:
        return int(conn.execute("SELECT COALESCE(SUM(n), 0) FROM held WHERE key = ?",
                                (key,)).fetchone()[0])

    def _add(self, conn: sqlite3.Connection, key: str) -> None:
        conn.execute("INSERT INTO held (key, pid, n) VALUES (?, ?, 1) "
                     "ON CONFLICT (key, pid) DO UPDATE SET n = n + 1", (key, self.pid))

    def _sub(self, conn: sqlite3.Connection, key: str) -> None:
        """One less of ``key`` held by this process (never below zero)."""
        if conn.execute("UPDATE held SET n = n - 1 WHERE key = ? AND pid = ? AND n > 1",
                        (key, self.pid)).rowcount == 0:
            conn.execute("DELETE FROM held WHERE key = ? AND pid = ?", (key, self.pid))

    # ----- connections
    def open_connection(self, ip: str, max_total: int, max_per_ip: int) -> str | None:
        """Count a connection from ``ip`` unless a limit is reached.

        Returns None (counted: ``close_connection`` must follow) or which limit
        refused it: ``"total"`` or ``"ip"``.
        """
        with self._write() as conn:
            if self._held(conn, TOTAL) >= max_total:
                return "total"
            if self._held(conn, "ip:" + ip) >= max_per_ip:
                return "ip"
            self._add(conn, TOTAL)
            self._add(conn, "ip:" + ip)
        return None

    def close_connection(self, ip: str) -> None:
        with self._write() as conn:
            self._sub(conn, TOTAL)
            self._sub(conn, "ip:" + ip)

    def login(self, user: str, limit: int) -> bool:
        """Count a session of ``user`` unless it has ``limit`` (on all processes
        together); False: nothing counted.  ``logout`` gives it back."""
        return self.take("user:" + user, limit)

    def logout(self, user: str) -> None:
        self.give("user:" + user)

    # ----- upload slots
    def take_upload(self, user: str, limit: int) -> bool:
        """Take one of ``user``'s upload slots unless ``limit`` are taken (on any process)."""
        return self.take("up:" + user, limit)

    def free_upload(self, user: str) -> None:
        """Give back one of ``user``'s slots taken by this process (extra frees are ignored)."""
        self.give("up:" + user)

    def take(self, key: str, limit: int) -> bool:
        """Count one more of ``key`` for this process unless ``limit`` are held in all."""
        with self._write() as conn:
            if self._held(conn, key) >= limit:
                return False
            self._add(conn, key)
        return True

    def give(self, key: str) -> None:
        """One less of ``key`` for this process (never below zero)."""
        with self._write() as conn:
            self._sub(conn, key)

    # ----- inspection (tests, logs)
    def count(self, key: str) -> int:
        """Held on every process: ``"*"`` (connections), ``"ip:ADDR"``, ``"user:NAME"``
        (sessions), ``"up:NAME"`` (upload slots)."""
        with self._lock:
            return self._held(self._conn, key)
