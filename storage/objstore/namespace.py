"""The folder tree in PostgreSQL: stat, ls, mkdir, rmdir, rm, mv as single transactions.

Same contract as :class:`storage.tree.FileTree` (paths normalised by
:mod:`storage.paths`, the same errors for the same cases), but nothing here
touches a blob: removing a file queues its blob for the collector in the same
transaction, and moving a folder is one ``UPDATE`` of its row.

Every folder costs ``folder_cost`` bytes of quota, as on the local backend
(issue 13, item 8): ``mkdir`` charges each folder it makes in the same
transaction as its row, ``rmdir`` and a ``mv`` over an empty folder give it back.

Path lookup is one recursive query that walks the components from the
user's root.  Every changing transaction first locks the user's row
(``SELECT ... FOR UPDATE``): a user's tree changes one transaction at a time
across every node, which keeps the quota exact and makes "a folder moved into
itself" a plain path-prefix check, while different users never wait for
each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import (
    BadPath,
    Exists,
    IsADirectory,
    NoSuchUser,
    NotADirectory,
    NotEmpty,
    NotFound,
    QuotaExceeded,
)
from ..models import Entry
from ..names import check_username
from ..paths import join_user_path, split_user_path

__all__ = ["Node", "NamespaceOps", "DEFAULT_PAGE"]

Parts = tuple[str, ...]
DEFAULT_PAGE = 1000
_MAX_PAGE = 10_000
DIR_MODE = 0o755
FILE_MODE = 0o644

_WALK = """
WITH RECURSIVE walk(id, depth) AS (
    SELECT id, 0 FROM entries WHERE owner = %(owner)s AND parent IS NULL
  UNION ALL
    SELECT e.id, w.depth + 1 FROM walk w
      JOIN entries e ON e.parent = w.id AND e.name = (%(names)s::text[])[w.depth + 1]
     WHERE w.depth < cardinality(%(names)s::text[])
)
SELECT e.*, w.depth FROM walk w JOIN entries e ON e.id = w.id ORDER BY w.depth DESC LIMIT 1
"""


@dataclass(frozen=True)
class Node:
    """One row of the tree; ``entry()`` gives the daemon's ``Entry``."""

    id: int
    name: str
    path: str
    type: str
    size: int
    mtime: float
    mode: int
    blob: str | None
    sha256: str | None

    def entry(self) -> Entry:
        return Entry(name=self.name, path=self.path, type=self.type,  # type: ignore[arg-type]
                     size=self.size, mtime=self.mtime)


def _node(row: dict[str, Any], path: str) -> Node:
    """The home folder is called "/" as the local backend calls it (its row's name is '')."""
    name = row["name"] if row["parent"] is not None else "/"
    return Node(id=row["id"], name=name, path=path, type=row["type"], size=row["size"],
                mtime=row["mtime"], mode=row["mode"], blob=row["blob"], sha256=row["sha256"])


def _child_path(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


class NamespaceOps:
    """Mixed into :class:`storage.objstore.meta.MetaStore` (needs ``db`` and ``clock``)."""

    db: Any
    clock: Any
    #: Quota bytes one folder costs (``ObjectStore(folder_cost=)``; 0: folders are free).
    folder_cost: int

    # ----- helpers usable inside a caller's transaction
    @staticmethod
    def locate(user: str, path: str, cwd: str = "/") -> Parts:
        check_username(user)
        return split_user_path(path, cwd)

    @staticmethod
    def lock_user(conn: Any, user: str) -> dict[str, Any]:
        """Lock the user's row for the rest of the transaction (serialises their changes)."""
        row = conn.execute("SELECT * FROM users WHERE name = %s FOR UPDATE", (user,)).fetchone()
        if row is None:
            raise NoSuchUser("no such user", user=user)
        return row

    @staticmethod
    def walk(conn: Any, user: str, parts: Parts) -> tuple[dict[str, Any] | None, int]:
        """Deepest existing entry along ``parts`` and its depth; (None, -1) without a root."""
        row = conn.execute(_WALK, {"owner": user, "names": list(parts)}).fetchone()
        return (None, -1) if row is None else (row, row["depth"])

    def find(self, conn: Any, user: str, parts: Parts) -> dict[str, Any]:
        """The entry at ``parts``: ``NotFound``/``NotADirectory`` as the file system says."""
        row, depth = self.walk(conn, user, parts)
        shown = join_user_path(parts)
        if row is None:                 # every user has a root: no root, no user
            raise NoSuchUser("no such user", user=user)
        if depth < len(parts):
            if row["type"] != "dir":
                raise NotADirectory("not a folder", path=join_user_path(parts[:depth]))
            raise NotFound("no such file or folder", path=shown)
        return row

    def find_parent(self, conn: Any, user: str, parts: Parts) -> dict[str, Any]:
        """The folder that holds (or would hold) ``parts[-1]``."""
        row = self.find(conn, user, parts[:-1])
        if row["type"] != "dir":
            raise NotADirectory("not a folder", path=join_user_path(parts[:-1]))
        return row

    @staticmethod
    def child(conn: Any, parent_id: int, name: str) -> dict[str, Any] | None:
        return conn.execute("SELECT * FROM entries WHERE parent = %s AND name = %s",
                            (parent_id, name)).fetchone()

    @staticmethod
    def free_quota(conn: Any, urow: dict[str, Any]) -> int:
        """Quota left beside what is used and what every unfinished upload reserves
        (``urow`` is the user's row, locked by ``lock_user``); negative when over."""
        reserved = conn.execute("SELECT COALESCE(SUM(reserved), 0) AS s FROM uploads "
                                "WHERE owner = %s", (urow["name"],)).fetchone()["s"]
        return int(urow["quota"] - urow["used"] - reserved)

    def give_back_folder(self, conn: Any, user: str) -> None:
        """A folder left the tree: its ``folder_cost`` goes back (``used`` never below 0;
        folders made before the cost existed were never counted)."""
        if self.folder_cost:
            conn.execute("UPDATE users SET used = GREATEST(0, used - %s) WHERE name = %s",
                         (self.folder_cost, user))

    def drop_file(self, conn: Any, user: str, row: dict[str, Any]) -> None:
        """Delete a file row: its bytes go back to the quota, its blob to the collector."""
        conn.execute("DELETE FROM entries WHERE id = %s", (row["id"],))
        conn.execute("UPDATE users SET used = GREATEST(0, used - %s) WHERE name = %s",
                     (row["size"], user))
        conn.execute("INSERT INTO garbage (blob, since) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                     (row["blob"], self.clock()))

    # ----- reads
    def resolve(self, user: str, path: str, cwd: str = "/") -> str:
        return join_user_path(self.locate(user, path, cwd))

    def stat(self, user: str, path: str, cwd: str = "/") -> Node:
        parts = self.locate(user, path, cwd)
        with self.db.tx() as conn:
            return _node(self.find(conn, user, parts), join_user_path(parts))

    def ls(self, user: str, path: str, cwd: str = "/", *, after: str | None = None,
           limit: int = DEFAULT_PAGE) -> list[Node]:
        """One page of a folder, by name (byte order), names greater than ``after``.

        Keyset pagination: the next page starts after the last name of this one,
        so each page is one index range scan however large the folder.
        """
        if not 1 <= limit <= _MAX_PAGE:
            raise ValueError(f"limit must be 1..{_MAX_PAGE}")
        parts = self.locate(user, path, cwd)
        shown = join_user_path(parts)
        with self.db.tx() as conn:
            folder = self.find(conn, user, parts)
            if folder["type"] != "dir":
                raise NotADirectory("not a folder", path=shown)
            rows = conn.execute(
                'SELECT * FROM entries WHERE parent = %s AND name > %s ORDER BY name LIMIT %s',
                (folder["id"], after or "", limit)).fetchall()
        return [_node(r, _child_path(shown, r["name"])) for r in rows]

    def is_dir(self, user: str, path: str, cwd: str = "/") -> str:
        node = self.stat(user, path, cwd)
        if node.type != "dir":
            raise NotADirectory("not a folder", path=node.path)
        return node.path

    # ----- changes
    def mkdir(self, user: str, path: str, cwd: str = "/", parents: bool = False) -> str:
        parts = self.locate(user, path, cwd)
        shown = join_user_path(parts)
        refused: QuotaExceeded | None = None
        with self.db.tx() as conn:
            urow = self.lock_user(conn, user)
            row, depth = self.walk(conn, user, parts)
            if row is None:
                raise NoSuchUser("no such user", user=user)
            if depth == len(parts):
                if parents and row["type"] == "dir":
                    return shown
                raise Exists("already exists", path=shown)
            if row["type"] != "dir":
                raise NotADirectory("not a folder", path=join_user_path(parts[:depth]))
            if depth < len(parts) - 1 and not parents:
                raise NotFound("parent folder does not exist",
                               path=join_user_path(parts[: depth + 1]))
            parent, now, cost = row["id"], self.clock(), self.folder_cost
            free = self.free_quota(conn, urow) if cost else 0
            made = 0
            for name in parts[depth:]:
                # Each folder must fit beside what is used and reserved, checked level by
                # level as the local backend (and mkdir -p) does: the levels that fit are
                # kept, the first that does not is refused with the local details.
                if cost and cost > free - made * cost:
                    refused = QuotaExceeded("not enough quota for this upload",
                                            free=max(0, free - made * cost), needed=cost)
                    break
                parent = conn.execute(
                    "INSERT INTO entries (owner, parent, name, type, mtime, mode) "
                    "VALUES (%s, %s, %s, 'dir', %s, %s) RETURNING id",
                    (user, parent, name, now, DIR_MODE)).fetchone()["id"]
                made += 1
            if made and cost:
                conn.execute("UPDATE users SET used = used + %s WHERE name = %s",
                             (made * cost, user))
        if refused is not None:
            raise refused
        return shown

    def rmdir(self, user: str, path: str, cwd: str = "/") -> str:
        parts = self.locate(user, path, cwd)
        shown = join_user_path(parts)
        if not parts:
            raise BadPath("the home folder cannot be removed", path=shown)
        with self.db.tx() as conn:
            self.lock_user(conn, user)
            row = self.find(conn, user, parts)
            if row["type"] != "dir":
                raise NotADirectory("not a folder", path=shown)
            if conn.execute("SELECT 1 FROM entries WHERE parent = %s LIMIT 1",
                            (row["id"],)).fetchone():
                raise NotEmpty("folder is not empty", path=shown)
            conn.execute("DELETE FROM entries WHERE id = %s", (row["id"],))
            self.give_back_folder(conn, user)
        return shown

    def remove(self, user: str, path: str, cwd: str = "/") -> str:
        parts = self.locate(user, path, cwd)
        shown = join_user_path(parts)
        if not parts:
            raise IsADirectory("is a folder", path=shown)
        with self.db.tx() as conn:
            self.lock_user(conn, user)
            row = self.find(conn, user, parts)
            if row["type"] == "dir":
                raise IsADirectory("is a folder; use rmdir", path=shown)
            self.drop_file(conn, user, row)
        return shown

    def rename(self, user: str, src: str, dst: str, cwd: str = "/",
               overwrite: bool = False) -> tuple[str, str]:
        """Move a file or a whole folder: one ``UPDATE`` of one row, whatever it holds."""
        sparts = self.locate(user, src, cwd)
        dparts = self.locate(user, dst, cwd)
        sshown, dshown = join_user_path(sparts), join_user_path(dparts)
        if not sparts:
            raise BadPath("the home folder cannot be moved", path=sshown)
        if not dparts:
            raise BadPath("the home folder cannot be replaced", path=dshown)
        if dparts[: len(sparts)] == sparts and dparts != sparts:
            raise BadPath("a folder cannot be moved inside itself", path=dshown)
        with self.db.tx() as conn:
            self.lock_user(conn, user)
            srow = self.find(conn, user, sparts)
            if sparts == dparts:
                return sshown, dshown
            dparent = self.find_parent(conn, user, dparts)
            drow = self.child(conn, dparent["id"], dparts[-1])
            if drow is not None:
                if not overwrite:
                    raise Exists("destination exists", path=dshown)
                if drow["type"] == "dir" and srow["type"] != "dir":
                    raise IsADirectory("destination is a folder", path=dshown)
                if drow["type"] != "dir" and srow["type"] == "dir":
                    raise NotADirectory("destination is not a folder", path=dshown)
                if drow["type"] == "dir":
                    if conn.execute("SELECT 1 FROM entries WHERE parent = %s LIMIT 1",
                                    (drow["id"],)).fetchone():
                        raise NotEmpty("destination folder is not empty", path=dshown)
                    conn.execute("DELETE FROM entries WHERE id = %s", (drow["id"],))
                    self.give_back_folder(conn, user)    # an empty folder was replaced
                else:
                    self.drop_file(conn, user, drow)
            conn.execute("UPDATE entries SET parent = %s, name = %s WHERE id = %s",
                         (dparent["id"], dparts[-1], srow["id"]))
        return sshown, dshown
