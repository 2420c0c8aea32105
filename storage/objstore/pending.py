"""Unfinished uploads in PostgreSQL: reservations, recorded parts, the writer fence, publish.

An upload row names the target path, the declaration (size, SHA-256), the
quota it reserves, its blob id, S3 multipart upload id and part size; its
parts are rows of ``upload_parts``.  The resume offset is the sum of the
recorded part sizes, whichever node recorded them.

Quota: a reservation is taken in the same transaction that locks the user's
row (``FOR UPDATE``), so concurrent begins on any number of nodes are
serialised per user and the sum of usage and reservations never exceeds the
quota.  The user's unfinished uploads are counted in that transaction too, so
no number of nodes lets one user hold more than ``max_partials`` of them.

One writer per upload: the writer takes ``UploadLocks.acquire(id)`` (an
advisory lock on its node's lock session) and passes the token it got to
``record_part`` and ``publish``; both check, in the same statement, that the
token's session still holds the lock.  Publishing is one transaction: the
entry points at the blob, the old blob (if replaced) is queued for the
collector, the reservation becomes usage, the upload row goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import Exists, IsADirectory, NotFound, QuotaExceeded, TooManyPartials, UploadBusy
from ..paths import join_user_path
from .namespace import FILE_MODE, Node
from .pg import FENCE_SQL
from .schema import LOCK_NS_UPLOAD
from .writer import Part

__all__ = ["Pending", "UploadOps"]

_SHA_CHARS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Pending:
    """An unfinished upload as recorded; ``offset`` is where any node resumes."""

    id: int
    user: str
    path: str
    size: int
    sha256: str | None
    reserved: int
    blob: str
    mpu: str
    part_size: int
    parts: tuple[Part, ...]
    updated: float

    @property
    def offset(self) -> int:
        return sum(p.size for p in self.parts)


def _check_sha(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    if not isinstance(sha256, str):
        raise ValueError("sha256 must be 64 hex digits")
    sha = sha256.lower()
    if len(sha) != 64 or not set(sha) <= _SHA_CHARS:
        raise ValueError("sha256 must be 64 hex digits")
    return sha


class UploadOps:
    """Mixed into :class:`storage.objstore.meta.MetaStore` (with ``NamespaceOps``)."""

    db: Any
    clock: Any
    #: Unfinished uploads one user may hold (``ObjectStore(max_partials=)``).
    max_partials: int

    # provided by NamespaceOps
    locate: Any
    lock_user: Any
    walk: Any
    find_parent: Any
    child: Any
    drop_file: Any

    def _pending(self, conn: Any, row: dict[str, Any]) -> Pending:
        parts = conn.execute("SELECT number, size, etag FROM upload_parts WHERE upload = %s "
                             "ORDER BY number", (row["id"],)).fetchall()
        return Pending(id=row["id"], user=row["owner"], path=row["path"], size=row["size"],
                       sha256=row["sha256"], reserved=row["reserved"], blob=row["blob"],
                       mpu=row["mpu"], part_size=row["part_size"],
                       parts=tuple(Part(p["number"], p["size"], p["etag"]) for p in parts),
                       updated=row["updated"])

    def get_upload(self, user: str, path: str, cwd: str = "/") -> Pending | None:
        shown = join_user_path(self.locate(user, path, cwd))
        with self.db.tx() as conn:
            row = conn.execute("SELECT * FROM uploads WHERE owner = %s AND path = %s",
                               (user, shown)).fetchone()
            return None if row is None else self._pending(conn, row)

    def list_uploads(self, user: str) -> list[Pending]:
        with self.db.tx() as conn:
            rows = conn.execute("SELECT * FROM uploads WHERE owner = %s ORDER BY path",
                                (user,)).fetchall()
            return [self._pending(conn, r) for r in rows]

    def create_upload(self, user: str, path: str, size: int, sha256: str | None, *,
                      blob: str, mpu: str, part_size: int, cwd: str = "/",
                      overwrite: bool = False, replacing: int | None = None,
                      counted: bool = True) -> tuple[Pending, bool]:
        """Register a new upload and reserve its quota, in one transaction.

        Returns ``(upload, True)``; if an upload of that path already exists
        (begun by any node) returns ``(that upload, False)`` and reserves
        nothing: the caller aborts the multipart upload it started and resumes
        the existing one.  ``replacing`` names an existing upload of the path
        (with another declaration) to drop in the same transaction, so that a
        refused new upload (quota, target, busy) leaves the old one as it was.
        ``QuotaExceeded`` with ``free``/``needed``; ``Exists`` if the target is
        a file and not ``overwrite``; ``IsADirectory`` if it is a folder;
        ``TooManyPartials`` (details ``limit``) if the user already holds
        ``max_partials`` unfinished uploads and this one is new (a replace of
        ``replacing`` is not, as a restart is not on the local backend; nor is
        an inline put's, ``counted=False``, which its caller never leaves behind).

        The reservation is the whole size, also over a file it replaces (as the
        local backend does since issue 13, item 3: abandoned uploads of overwrites
        must be covered too); publishing counts only the difference.
        """
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("size must be a non-negative integer")
        sha = _check_sha(sha256)
        parts = self.locate(user, path, cwd)
        shown = join_user_path(parts)
        if not parts:
            raise IsADirectory("is a folder", path=shown)
        with self.db.tx() as conn:
            urow = self.lock_user(conn, user)
            old = conn.execute("SELECT * FROM uploads WHERE owner = %s AND path = %s",
                               (user, shown)).fetchone()
            if old is not None and old["id"] != replacing:
                return self._pending(conn, old), False
            parent = self.find_parent(conn, user, parts)
            target = self.child(conn, parent["id"], parts[-1])
            if target is not None:          # the target, then the writer: the local order
                if target["type"] == "dir":
                    raise IsADirectory("is a folder", path=shown)
                if not overwrite:
                    raise Exists("already exists", path=shown)
            if old is not None and not conn.execute(
                    "SELECT pg_try_advisory_xact_lock(%s::int, %s::int) AS ok",
                    (LOCK_NS_UPLOAD, old["id"])).fetchone()["ok"]:
                raise UploadBusy("an upload to this path is in progress", path=shown)
            need = size                 # whole, also over a file: see the docstring
            mine = conn.execute("SELECT COUNT(*) AS n, COALESCE(SUM(reserved), 0) AS s "
                                "FROM uploads WHERE owner = %s", (user,)).fetchone()
            if old is None and counted and mine["n"] >= self.max_partials:
                raise TooManyPartials("too many unfinished uploads; finish or abort one",
                                      limit=self.max_partials)
            others = mine["s"]
            if old is not None:
                others -= old["reserved"]
            free = urow["quota"] - urow["used"] - int(others)
            if need > free:
                raise QuotaExceeded("not enough quota for this upload", free=max(0, free),
                                    needed=need)
            if old is not None:
                self._drop_upload(conn, old)
            now = self.clock()
            row = conn.execute(
                "INSERT INTO uploads (owner, path, size, sha256, reserved, blob, mpu, part_size,"
                " created, updated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
                (user, shown, size, sha, need, blob, mpu, part_size, now, now)).fetchone()
            return self._pending(conn, row), True

    def record_part(self, upload_id: int, token: int, part: Part) -> None:
        """Record an uploaded part, if ``token`` still holds the upload's lock.

        ``UploadBusy`` if it does not (the lock was lost with its connection, or
        another node took over); ``NotFound`` if the upload was aborted.
        """
        import psycopg

        try:
            with self.db.tx() as conn:
                cur = conn.execute(
                    "INSERT INTO upload_parts (upload, number, size, etag) "
                    f"SELECT %(up)s, %(n)s, %(size)s, %(etag)s WHERE {FENCE_SQL} "
                    "ON CONFLICT (upload, number) DO UPDATE "
                    "SET size = EXCLUDED.size, etag = EXCLUDED.etag",
                    {"up": upload_id, "pid": token, "n": part.number, "size": part.size,
                     "etag": part.etag})
                if cur.rowcount != 1:
                    raise UploadBusy("this node no longer holds the upload's lock")
                conn.execute("UPDATE uploads SET updated = %s WHERE id = %s",
                             (self.clock(), upload_id))
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound("the upload was aborted")

    def publish(self, upload_id: int, token: int, sha256: str, *, overwrite: bool = False,
                mtime: float | None = None) -> Node:
        """Point the target entry at the completed, verified blob: one transaction.

        The caller has completed the multipart upload and verified the SHA-256.
        ``UploadBusy`` if ``token`` lost the lock; ``NotFound`` if the upload or
        the target's folder is gone; ``Exists``/``IsADirectory`` as at begin.
        On any error nothing changed and the blob is still unreferenced.
        """
        with self.db.tx() as conn:
            row = conn.execute("SELECT * FROM uploads WHERE id = %s", (upload_id,)).fetchone()
            if row is None:
                raise NotFound("the upload was aborted")
            user = row["owner"]
            self.lock_user(conn, user)
            fenced = conn.execute(f"SELECT {FENCE_SQL} AS ok",
                                  {"up": upload_id, "pid": token}).fetchone()
            if not fenced["ok"]:
                raise UploadBusy("this node no longer holds the upload's lock")
            parts = self.locate(user, row["path"])
            parent = self.find_parent(conn, user, parts)
            target = self.child(conn, parent["id"], parts[-1])
            if target is not None:
                if target["type"] == "dir":
                    raise IsADirectory("is a folder", path=row["path"])
                if not overwrite:
                    raise Exists("already exists", path=row["path"])
                self.drop_file(conn, user, target)
            now = self.clock() if mtime is None else mtime
            new = conn.execute(
                "INSERT INTO entries (owner, parent, name, type, size, mtime, mode, blob, sha256)"
                " VALUES (%s, %s, %s, 'file', %s, %s, %s, %s, %s) RETURNING *",
                (user, parent["id"], parts[-1], row["size"], now, FILE_MODE, row["blob"],
                 sha256)).fetchone()
            conn.execute("UPDATE users SET used = used + %s WHERE name = %s",
                         (row["size"], user))
            conn.execute("INSERT INTO hashes (blob, size, sha256) VALUES (%s, %s, %s) "
                         "ON CONFLICT DO NOTHING", (row["blob"], row["size"], sha256))
            conn.execute("DELETE FROM uploads WHERE id = %s", (upload_id,))
        return Node(id=new["id"], name=new["name"], path=row["path"], type="file",
                    size=new["size"], mtime=new["mtime"], mode=new["mode"], blob=new["blob"],
                    sha256=new["sha256"])

    def _drop_upload(self, conn: Any, row: dict[str, Any]) -> None:
        conn.execute("DELETE FROM uploads WHERE id = %s", (row["id"],))
        conn.execute("INSERT INTO garbage (blob, mpu, since) VALUES (%s, %s, %s) "
                     "ON CONFLICT DO NOTHING", (row["blob"], row["mpu"], self.clock()))

    def abort_upload(self, user: str, path: str, cwd: str = "/") -> str:
        """Forget an upload: its reservation is freed and its multipart upload queued for
        the collector.  ``UploadBusy`` while a writer (on any node) holds it."""
        shown = join_user_path(self.locate(user, path, cwd))
        with self.db.tx() as conn:
            row = conn.execute("SELECT * FROM uploads WHERE owner = %s AND path = %s",
                               (user, shown)).fetchone()
            if row is None:
                raise NotFound("no unfinished upload at this path", path=shown)
            if not conn.execute("SELECT pg_try_advisory_xact_lock(%s::int, %s::int) AS ok",
                                (LOCK_NS_UPLOAD, row["id"])).fetchone()["ok"]:
                raise UploadBusy("an upload to this path is in progress", path=shown)
            self._drop_upload(conn, row)
        return shown

    def forget_upload(self, upload_id: int) -> bool:
        """Drop the upload ``upload_id`` (not whatever now has its path) unless a writer
        holds it: what an inline put that failed leaves.  True if it was dropped."""
        with self.db.tx() as conn:
            row = conn.execute("SELECT * FROM uploads WHERE id = %s", (upload_id,)).fetchone()
            if row is None or not conn.execute(
                    "SELECT pg_try_advisory_xact_lock(%s::int, %s::int) AS ok",
                    (LOCK_NS_UPLOAD, upload_id)).fetchone()["ok"]:
                return False
            self._drop_upload(conn, row)
        return True

    def expire_uploads(self, ttl: float, now: float | None = None) -> int:
        """Abort uploads untouched for ``ttl`` seconds, skipping any a writer holds."""
        cutoff = (self.clock() if now is None else now) - ttl
        done = 0
        with self.db.tx() as conn:
            rows = conn.execute("SELECT * FROM uploads WHERE updated < %s FOR UPDATE SKIP LOCKED",
                                (cutoff,)).fetchall()
            for row in rows:
                if conn.execute("SELECT pg_try_advisory_xact_lock(%s::int, %s::int) AS ok",
                                (LOCK_NS_UPLOAD, row["id"])).fetchone()["ok"]:
                    self._drop_upload(conn, row)
                    done += 1
        return done

    def live_multipart_ids(self) -> frozenset[str]:
        """S3 upload ids still referenced (the collector must not abort these)."""
        with self.db.tx() as conn:
            return frozenset(r["mpu"] for r in conn.execute("SELECT mpu FROM uploads"))

    def take_garbage(self, limit: int = 100) -> list[tuple[str, str]]:
        """A batch of ``(blob, mpu)`` to delete (``mpu == ''``) or abort; see ``done_garbage``."""
        with self.db.tx() as conn:
            rows = conn.execute("SELECT blob, mpu FROM garbage ORDER BY since LIMIT %s",
                                (limit,)).fetchall()
        return [(r["blob"], r["mpu"]) for r in rows]

    def done_garbage(self, blob: str, mpu: str) -> None:
        with self.db.tx() as conn:
            conn.execute("DELETE FROM garbage WHERE blob = %s AND mpu = %s", (blob, mpu))
            if not mpu:
                conn.execute("DELETE FROM hashes WHERE blob = %s", (blob,))

