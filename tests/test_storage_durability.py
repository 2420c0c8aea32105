"""Durability order: the file-system calls of a commit and of a group commit, recorded.

The crash argument (``storage/commit.py``) needs, for every file: its data
fsynced before it is linked into place, its row's commit mark committed before
the rename (or link), and its folder fsynced after it; and the call reports
success only after all of that (``put.done`` means fsynced).  A process crash
cannot show a missing fsync -- the page cache survives it -- so these tests
watch the calls themselves: in-process wrappers around ``os.fsync``,
``os.fdatasync``, ``os.link``, ``os.rename``, ``os.replace``, and the
catalogue's SQL (``sqlite3`` trace callback) for the mark and its COMMIT.

Local backend only: fsync order on the local file system (the object backend's
durability is PostgreSQL's and the object store's).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from dataclasses import dataclass

import pytest

from storage import SmallFile, Store


@dataclass(frozen=True)
class Call:
    what: str            # "fsync-file", "fsync-dir", "link", "replace", "mark", "commit"
    ino: int = 0         # the inode fsynced, linked or renamed
    detail: str = ""


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Call] = []

    def add(self, call: Call) -> None:
        self.calls.append(call)

    def index(self, whats: str | tuple[str, ...], ino: int | None = None,
              after: int = -1) -> int:
        """Position of the first such call after ``after``; fails the test if there is none."""
        whats = (whats,) if isinstance(whats, str) else whats
        for i, call in enumerate(self.calls):
            if i > after and call.what in whats and (ino is None or call.ino == ino):
                return i
        pytest.fail(f"no {whats} call (inode {ino}) after position {after} in {self.calls}")

    def mark_committed(self, path: str) -> int:
        """Position of the COMMIT of the transaction that marked ``path``'s row."""
        mark = next((i for i, c in enumerate(self.calls)
                     if c.what == "mark" and f"path = '{path}'" in c.detail), None)
        if mark is None:
            pytest.fail(f"{path}'s row was never marked: {self.calls}")
        return self.index("commit", after=mark)


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    rec = Recorder()

    def fsync_wrapper(real, name):
        def wrapped(fd: int) -> None:
            st = os.fstat(fd)
            real(fd)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
            rec.add(Call(f"{name}-{kind}", st.st_ino))
        return wrapped

    def move_wrapper(real, name):
        def wrapped(src, dst, *, src_dir_fd=None, dst_dir_fd=None, **kw):
            ino = os.stat(src, dir_fd=src_dir_fd, follow_symlinks=False).st_ino
            real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, **kw)
            rec.add(Call(name, ino, str(dst)))
        return wrapped

    monkeypatch.setattr(os, "fsync", fsync_wrapper(os.fsync, "fsync"))
    monkeypatch.setattr(os, "fdatasync", fsync_wrapper(os.fdatasync, "fdatasync"))
    for name in ("link", "rename", "replace"):
        monkeypatch.setattr(os, name, move_wrapper(getattr(os, name), name))

    def traced(statement: str) -> None:
        if statement.startswith("UPDATE uploads SET commit_dev = ") and \
                not statement.startswith("UPDATE uploads SET commit_dev = NULL"):
            rec.add(Call("mark", detail=statement))
        elif statement == "COMMIT":
            rec.add(Call("commit"))

    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(traced)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return rec


@pytest.fixture
def store(tmp_path, recorder):
    s = Store(tmp_path / "root", scrypt_n=2**4)
    s.create_user("alice", "pw", quota=1 << 20)
    s.mkdir("alice", "/d")
    yield s
    s.close()


def home(store: Store) -> str:
    return os.path.join(store.root, "homes", "alice")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_durable_order(rec: Recorder, store: Store, path: str, end: int) -> None:
    """For ``path``: data fsync < mark COMMIT < link/rename < folder fsync < ``end``."""
    target = os.path.join(home(store), path.lstrip("/"))
    ino = os.stat(target).st_ino
    folder = os.stat(os.path.dirname(target)).st_ino
    data_synced = rec.index(("fsync-file", "fdatasync-file"), ino)
    marked = rec.mark_committed(path)
    moved = rec.index(("link", "rename", "replace"), ino)
    folder_synced = rec.index("fsync-dir", folder, after=moved)
    assert data_synced < marked < moved < folder_synced < end, rec.calls


@pytest.mark.parametrize("overwrite", [False, True], ids=["link", "rename"])
def test_a_commit_syncs_data_marks_the_row_moves_then_syncs_the_folder(store, recorder,
                                                                        overwrite):
    if overwrite:
        store.store_small_files("alice", [SmallFile("/d/f", b"older")])
    data = os.urandom(10_000)
    up = store.begin_upload("alice", "/d/f", len(data), sha(data), overwrite=overwrite)
    up.write(data)
    recorder.calls.clear()
    up.commit()
    recorder.add(Call("returned"))
    assert_durable_order(recorder, store, "/d/f", recorder.index("returned"))


def test_a_group_commit_keeps_the_same_order_for_every_file(store, recorder):
    store.store_small_files("alice", [SmallFile("/d/b", b"older")])
    recorder.calls.clear()
    files = [SmallFile("/a", b"a" * 100, sha(b"a" * 100)), SmallFile("/d/b", b"b" * 200,
                                                                     overwrite=True),
             SmallFile("/d/c", b"c" * 300)]
    results = store.store_small_files("alice", files)
    recorder.add(Call("returned"))
    assert [type(r).__name__ for r in results] == ["CommitResult"] * 3
    for f in files:
        assert_durable_order(recorder, store, f.path, recorder.index("returned"))


def test_put_done_means_fsynced_a_commit_returns_after_both_syncs(store, recorder):
    """The storage half of ``put.done``: nothing reports success before the syncs."""
    data = b"payload"
    up = store.begin_upload("alice", "/f", len(data), None)
    up.write(data)
    recorder.calls.clear()
    up.commit()
    ino = os.stat(os.path.join(home(store), "f")).st_ino
    synced = {(c.what, c.ino) for c in recorder.calls}
    assert ("fsync-file", ino) in synced or ("fdatasync-file", ino) in synced
    assert ("fsync-dir", os.stat(home(store)).st_ino) in synced


def test_put_done_means_fsynced_a_group_returns_after_every_sync(store, recorder):
    files = [SmallFile(f"/d/s{i}", bytes([i]) * 10) for i in range(3)]
    store.store_small_files("alice", files)
    synced = {(c.what, c.ino) for c in recorder.calls}
    for f in files:
        ino = os.stat(os.path.join(home(store), f.path.lstrip("/"))).st_ino
        assert ("fsync-file", ino) in synced or ("fdatasync-file", ino) in synced
    assert ("fsync-dir", os.stat(os.path.join(home(store), "d")).st_ino) in synced


def test_flush_syncs_what_is_written_so_far(store, recorder):
    """The write-behind sync: it leaves the commit only the tail to make durable."""
    up = store.begin_upload("alice", "/f", 10, None)
    up.write(b"12345")
    recorder.calls.clear()
    assert up.flush() == 5
    ino = os.fstat(up.fileno()).st_ino
    assert recorder.index(("fdatasync-file", "fsync-file"), ino) >= 0
    up.release()
