"""A full file system (ENOSPC) or a full disk quota (EDQUOT) on every storage write path.

Each is injected at the os boundary, only for the staging files it concerns,
and must surface as ``NoSpace`` (code ``NO_SPACE``, the one code both map to),
leaving nothing visible and nothing half-accounted: ``used`` counts only the
files really visible, and a reservation stays only where a partial stays
resumable.  (The daemon's inline puts are group commits here:
``Store.store_small_files``.)

Local backend only: ENOSPC/EDQUOT injected at the os boundary of local files (the
object backend's spool bound is tests/test_objstore_spool.py).
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable

import pytest

from storage import CommitResult, NoSpace, SmallFile, Store
from storage.partials import part_name

CODES = [errno.ENOSPC, errno.EDQUOT]
IDS = ["ENOSPC", "EDQUOT"]
KEPT = b"kept before"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "root", scrypt_n=2**4)
    s.create_user("alice", "pw", quota=1 << 20)
    s.store_small_files("alice", [SmallFile("/kept", KEPT)])
    yield s
    s.close()


def fd_names(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def staging_fd(*paths: str) -> Callable[[int], bool]:
    """Is ``fd`` the partial of one of ``paths`` (any partial if none given)?"""
    names = {part_name(p) for p in paths}
    return lambda fd: "/staging/" in fd_names(fd) and (
        not names or os.path.basename(fd_names(fd)) in names)


def fail_on_fd(monkeypatch, call: str, code: int, which: Callable[[int], bool]) -> None:
    real = getattr(os, call)

    def failing(fd, *args, **kwargs):
        if which(fd):
            raise OSError(code, os.strerror(code))
        return real(fd, *args, **kwargs)

    monkeypatch.setattr(os, call, failing)


def fail_on_open(monkeypatch, code: int, *paths: str) -> None:
    real = os.open
    names = {part_name(p) for p in paths}

    def failing(path, *args, **kwargs):
        if str(path).endswith(".part") and (not names or os.path.basename(path) in names):
            raise OSError(code, os.strerror(code))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", failing)


def visible(store: Store) -> dict[str, bytes]:
    home = os.path.join(store.root, "homes", "alice")
    return {name: open(os.path.join(home, name), "rb").read() for name in os.listdir(home)}


def staged(store: Store) -> list[str]:
    return sorted(os.listdir(os.path.join(store.root, "staging", "alice")))


def assert_accounted(store: Store, reserved: int) -> None:
    usage = store.usage("alice")
    assert usage.used == sum(map(len, visible(store).values()))
    assert usage.reserved == reserved


@pytest.mark.parametrize("code", CODES, ids=IDS)
def test_a_full_disk_in_a_partial_write_keeps_the_bytes_held_and_the_reservation(
        store, monkeypatch, code):
    data = os.urandom(1000)
    up = store.begin_upload("alice", "/f", len(data), sha(data))
    up.write(data[:300])
    fail_on_fd(monkeypatch, "write", code, staging_fd("/f"))
    with pytest.raises(NoSpace) as info:
        up.write(data[300:])
    assert info.value.code == "NO_SPACE"
    assert up.offset == 300 == os.fstat(up.fileno()).st_size
    assert visible(store) == {"kept": KEPT}
    assert_accounted(store, reserved=1000)
    up.release()
    monkeypatch.undo()                           # space freed: it resumes where it was
    again = store.begin_upload("alice", "/f", len(data), sha(data))
    assert again.offset == 300
    again.write(data[300:])
    again.commit()
    assert visible(store)["f"] == data


@pytest.mark.parametrize("code", CODES, ids=IDS)
def test_a_full_disk_at_begin_leaves_no_row_no_reservation_no_partial(store, monkeypatch, code):
    fail_on_open(monkeypatch, code, "/f")
    with pytest.raises(NoSpace):
        store.begin_upload("alice", "/f", 500, None)
    assert store.list_uploads("alice") == [] and staged(store) == []
    assert visible(store) == {"kept": KEPT}
    assert_accounted(store, reserved=0)


@pytest.mark.parametrize("code", CODES, ids=IDS)
def test_a_full_disk_when_resuming_keeps_the_partial_and_its_reservation(
        store, monkeypatch, code):
    up = store.begin_upload("alice", "/f", 500, None)
    up.write(b"x" * 200)
    up.release()
    fail_on_open(monkeypatch, code, "/f")
    with pytest.raises(NoSpace):
        store.begin_upload("alice", "/f", 500, None)
    [info] = store.list_uploads("alice")
    assert info.offset == 200
    assert_accounted(store, reserved=500)


@pytest.mark.parametrize("code", CODES, ids=IDS)
def test_a_full_disk_at_the_commits_fsync_publishes_nothing(store, monkeypatch, code):
    data = os.urandom(700)
    up = store.begin_upload("alice", "/f", len(data), sha(data))
    up.write(data)
    fail_on_fd(monkeypatch, "fsync", code, staging_fd("/f"))
    with pytest.raises(NoSpace):
        up.commit()
    assert visible(store) == {"kept": KEPT}
    assert_accounted(store, reserved=700)
    assert not up.active                         # released by the failed commit (issue 13)
    up.release()                                 # a late release is harmless
    assert store.list_uploads("alice")[0].offset == 700
    monkeypatch.undo()
    again = store.begin_upload("alice", "/f", len(data), sha(data))
    assert again.offset == 700
    again.commit()
    assert visible(store)["f"] == data
    assert_accounted(store, reserved=0)


GROUP = [SmallFile("/a", b"a" * 100, sha(b"a" * 100)), SmallFile("/b", b"b" * 200),
         SmallFile("/c", b"c" * 300)]


def assert_only_b_failed(store: Store, results: list) -> None:
    assert [type(r) for r in results] == [CommitResult, NoSpace, CommitResult]
    assert visible(store) == {"kept": KEPT, "a": b"a" * 100, "c": b"c" * 300}
    assert store.list_uploads("alice") == [] and staged(store) == []
    assert_accounted(store, reserved=0)


@pytest.mark.parametrize("code", CODES, ids=IDS)
def test_a_full_disk_creating_a_small_file_stores_nothing_of_it(store, monkeypatch, code):
    fail_on_open(monkeypatch, code, "/b")
    assert_only_b_failed(store, store.store_small_files("alice", GROUP))


@pytest.mark.parametrize("code", CODES, ids=IDS)
def test_a_full_disk_writing_a_small_file_stores_nothing_of_it(store, monkeypatch, code):
    fail_on_fd(monkeypatch, "write", code, staging_fd("/b"))
    assert_only_b_failed(store, store.store_small_files("alice", GROUP))


@pytest.mark.parametrize("code", CODES, ids=IDS)
def test_a_full_disk_at_a_small_files_fsync_stores_nothing_of_it(store, monkeypatch, code):
    fail_on_fd(monkeypatch, "fsync", code, staging_fd("/b"))
    assert_only_b_failed(store, store.store_small_files("alice", GROUP))


def test_a_full_catalogue_at_begin_is_no_space_and_reserves_nothing(store):
    """SQLite's "database or disk is full" (here: the page limit reached) is NO_SPACE too."""
    conn = store._ctx.db.conn()               # this thread's connection: its page limit
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    long_name = "/" + "n" * 250
    with pytest.raises(NoSpace):
        for i in range(200):                     # rows until the catalogue needs a page
            store.begin_upload("alice", f"{long_name}{i}", 10, None).release()
    assert visible(store) == {"kept": KEPT}
    rows = store.list_uploads("alice")
    assert {part_name(p.path) for p in rows} >= set(staged(store))
    assert_accounted(store, reserved=10 * len(rows))
