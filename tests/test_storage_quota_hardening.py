"""Issue 13, storage side: failed commits release their upload (item 2), partials are
always covered by the quota (item 3), commits re-check it (item 4), unfinished uploads
are capped and listed in pages (item 7), folders cost quota and listings stream
(item 8), and replaced files lose their hash-cache rows (item 15).

The limits against one user's hoarding (the cap on unfinished uploads, the cost of
folders) go through the facade and run on both backends (``either``, built by
``make_store``, tests/storage_backends.py); the rest is local only: partial files,
placement and the SQLite catalogue (the object backend's quota is in
tests/test_storage_uploads.py and test_objstore_*.py, its two-node races in
tests/test_objstore_limits.py).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import pytest

import storage.commit
from storage import (
    IsADirectory,
    NotFound,
    QuotaExceeded,
    SmallFile,
    StorageIOError,
    Store,
    TooManyPartials,
    faults,
)
from storage.store import DEFAULT_FOLDER_COST

USER = "alice"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def open_store(root: Path, quota: int, **kw: object) -> Store:
    store = Store(root, scrypt_n=2**4, **kw)  # type: ignore[arg-type]
    if store.get_user(USER) is None:
        store.create_user(USER, "pw", quota=quota)
    return store


@pytest.fixture
def store(root: Path):
    s = open_store(root, 10_000, folder_cost=0)
    yield s
    s.close()


def open_either(make_store, quota: int, **kw: object):
    """This test's store on either backend (``make_store``), with ``USER`` at ``quota``."""
    store = make_store(scrypt_n=2**4, **kw)
    store.create_user(USER, "pw", quota=quota)
    return store


def put(store: Store, path: str, data: bytes, overwrite: bool = False) -> None:
    up = store.begin_upload(USER, path, len(data), sha(data), overwrite=overwrite)
    up.write(data)
    up.commit()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def disk_bytes(root: Path) -> int:
    """Bytes of the user's files and partials really on disk."""
    total = 0
    for top in (root / "homes" / USER, root / "staging" / USER):
        if top.exists():
            total += sum(p.lstat().st_size for p in top.rglob("*") if p.is_file())
    return total


# ----- item 2: a commit that fails at publication releases the upload
def test_a_commit_refused_because_a_folder_appeared_frees_the_path_at_once(store):
    up = store.begin_upload(USER, "/f", 3, None)
    up.write(b"abc")
    store.mkdir(USER, "/f")
    with pytest.raises(IsADirectory):
        up.commit()
    assert not up.active
    store.rmdir(USER, "/f")
    again = store.begin_upload(USER, "/f", 3, None)     # not UPLOAD_BUSY: it resumes
    assert again.offset == 3
    assert again.commit().size == 3


def test_a_commit_whose_folder_moved_away_can_be_aborted_at_once(store):
    store.mkdir(USER, "/d")
    up = store.begin_upload(USER, "/d/f", 4, None)
    up.write(b"abcd")
    store.rename(USER, "/d", "/e")
    with pytest.raises(NotFound):
        up.commit()
    assert store.usage(USER).reserved == 4              # the partial is still covered
    assert store.abort_upload(USER, "/d/f") == "/d/f"   # not UPLOAD_BUSY
    assert store.usage(USER).reserved == 0


def test_three_hundred_failed_commits_leak_no_descriptor(store):
    before = open_fds()
    for _ in range(300):
        up = store.begin_upload(USER, "/x", 3, None)
        up.write(b"abc"[up.offset:])          # the first writes it all, the rest resume
        store.mkdir(USER, "/x")
        with pytest.raises(IsADirectory):
            up.commit()
        store.rmdir(USER, "/x")
    assert open_fds() <= before + 2          # the database may open a connection or so
    assert store.usage(USER).reserved == 3   # one partial, counted once


def test_a_commit_whose_accounting_fails_after_placement_reports_success(root, monkeypatch):
    store = open_store(root, 10_000)
    real = storage.commit.account

    def broken(*args: object) -> None:
        raise StorageIOError("database error: injected")

    monkeypatch.setattr(storage.commit, "account", broken)
    up = store.begin_upload(USER, "/f", 5, sha(b"hello"))
    up.write(b"hello")
    assert up.commit().size == 5                        # the client is told: done ...
    assert (root / "homes" / USER / "f").read_bytes() == b"hello"   # ... and it is there
    assert not up.active
    monkeypatch.setattr(storage.commit, "account", real)
    store.close()
    with open_store(root, 10_000) as again:             # recovery accounts it
        usage = again.usage(USER)
        assert (usage.used, usage.reserved) == (5, 0)
        assert again.list_uploads(USER) == []


def _commit_with_broken_accounting(store: Store, monkeypatch, path: str) -> None:
    real = storage.commit.account

    def broken(*args: object) -> None:
        raise StorageIOError("database error: injected")

    monkeypatch.setattr(storage.commit, "account", broken)
    up = store.begin_upload(USER, path, 5, None)
    up.write(b"hello")
    up.commit()
    monkeypatch.setattr(storage.commit, "account", real)


def test_a_placed_but_unaccounted_commit_is_settled_by_the_next_put_there(root, monkeypatch):
    store = open_store(root, 10_000, folder_cost=0)
    _commit_with_broken_accounting(store, monkeypatch, "/f")
    assert store.usage(USER).used == 0                  # not yet
    up = store.begin_upload(USER, "/f", 3, None, overwrite=True)
    assert store.usage(USER).used == 5                  # settled once, before the new row
    up.write(b"new")
    up.commit()
    assert (store.usage(USER).used, store.usage(USER).reserved) == (3, 0)
    store.close()


def test_a_placed_but_unaccounted_commit_is_settled_by_a_group_commit_there(root, monkeypatch):
    store = open_store(root, 10_000, folder_cost=0)
    _commit_with_broken_accounting(store, monkeypatch, "/f")
    store.store_small_files(USER, [SmallFile("/f", b"ab", overwrite=True)])
    assert (store.usage(USER).used, store.usage(USER).reserved) == (2, 0)
    store.close()
    with open_store(root, 10_000, folder_cost=0) as again:   # recovery finds nothing more
        assert again.usage(USER).used == 2


def test_a_commit_finished_meanwhile_by_another_stores_recovery_is_counted_once(root):
    store = open_store(root, 10_000, folder_cost=0)
    up = store.begin_upload(USER, "/f", 5, None)
    up.write(b"hello")

    def other_process_starts(step: str) -> None:
        if step == "commit.after_place":      # placed, not yet accounted
            with Store(root, scrypt_n=2**4):  # its start-up recovery accounts the row
                pass

    previous = faults.set_hook(other_process_starts)
    try:
        up.commit()
    finally:
        faults.set_hook(previous)
    assert (store.usage(USER).used, store.usage(USER).reserved) == (5, 0)
    store.close()


# ----- item 3: abandoned partials of overwrites stay within the quota
def test_abandoned_partials_of_same_size_overwrites_never_pass_the_quota(root, store):
    size = 4000
    put(store, "/m0", b"x" * size)
    current, refused = "/m0", 0
    for i in range(1, 21):                  # send all but one byte, cancel, move away
        try:
            up = store.begin_upload(USER, current, size, None, overwrite=True)
        except QuotaExceeded:
            refused += 1
            continue
        up.write(b"y" * (size - 1))
        up.release()
        store.rename(USER, current, f"/m{i}")
        current = f"/m{i}"
    usage = store.usage(USER)
    assert usage.used + usage.reserved <= usage.limit
    assert disk_bytes(root) <= usage.limit
    assert refused > 0


# ----- item 4: the commit re-checks the quota
def test_a_commit_that_no_longer_fits_the_quota_is_refused_and_stays_resumable(store):
    up = store.begin_upload(USER, "/f", 500, None)
    up.write(b"z" * 500)
    store.set_quota(USER, 100)
    with pytest.raises(QuotaExceeded):
        up.commit()
    assert not up.active
    assert [(i.path, i.offset) for i in store.list_uploads(USER)] == [("/f", 500)]
    with pytest.raises(NotFound):
        store.stat(USER, "/f")


def test_parallel_overwrites_with_moves_never_commit_past_the_quota(root):
    store = open_store(root, 8000, folder_cost=0)
    for i in range(8):
        put(store, f"/a{i}", b"o" * 1000)
    uploads, refusals = [], []
    for i in range(8):
        try:
            up = store.begin_upload(USER, f"/a{i}", 1000, None, overwrite=True)
        except QuotaExceeded as exc:
            refusals.append(exc)
            continue
        up.write(b"n" * 1000)
        uploads.append(up)
    for i in range(8):
        store.rename(USER, f"/a{i}", f"/b{i}")
    errors: list[BaseException] = []

    def commit(up):
        try:
            up.commit()
        except QuotaExceeded as exc:
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(up,)) for up in uploads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    usage = store.usage(USER)
    assert usage.used <= usage.limit and usage.used + usage.reserved <= usage.limit
    assert len(refusals) + len(errors) > 0
    store.close()


# ----- item 7: unfinished uploads are capped and listed in pages
def test_unfinished_uploads_per_user_are_capped(make_store):
    store = open_either(make_store, 10_000, max_partials=5)
    for i in range(5):
        store.begin_upload(USER, f"/p{i}", 10, None).release()
    with pytest.raises(TooManyPartials) as info:
        store.begin_upload(USER, "/p5", 10, None)
    assert info.value.code == "TOO_MANY_PARTIALS" and info.value.details == {"limit": 5}
    store.begin_upload(USER, "/p0", 10, None).release()      # resuming one is fine
    store.begin_upload(USER, "/p1", 20, None).release()      # so is restarting one
    assert len(store.list_uploads(USER)) == 5
    store.abort_upload(USER, "/p1")
    store.begin_upload(USER, "/p5", 10, None).release()      # room again


def test_inline_puts_are_not_counted_against_the_partials_cap(make_store):
    store = open_either(make_store, 10_000, max_partials=2)
    for i in range(2):
        store.begin_upload(USER, f"/p{i}", 10, None).release()
    [result] = store.store_small_files(USER, [SmallFile("/small", b"abc", sha(b"abc"))])
    assert not isinstance(result, Exception) and result.path == "/small"
    assert [p.path for p in store.list_uploads(USER)] == ["/p0", "/p1"]


def test_unfinished_uploads_are_listed_page_by_page_in_path_order(store):
    for i in range(25):
        store.begin_upload(USER, f"/u{i:02d}", 10, None).release()
    page, after = store.list_uploads_page(USER, limit=10)
    assert [p.path for p in page] == [f"/u{i:02d}" for i in range(10)] and after == "/u09"
    page, after = store.list_uploads_page(USER, after, limit=10)
    assert page[0].path == "/u10" and after == "/u19"
    page, after = store.list_uploads_page(USER, after, limit=10)
    assert len(page) == 5 and after is None
    pages = list(store.iter_uploads(USER, page_size=7))
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    assert [i for p in pages for i in p] == store.list_uploads(USER)


# ----- item 8: folders cost quota; listings stream
def test_a_user_with_a_tiny_quota_cannot_make_folders(make_store):
    store = open_either(make_store, 1024)
    for i in range(50):
        with pytest.raises(QuotaExceeded):
            store.mkdir(USER, f"/d{i}")
    assert store.list_dir(USER, "/") == []
    assert store.usage(USER).used == 0


def test_a_user_whose_files_fill_the_quota_cannot_make_a_folder(make_store):
    store = open_either(make_store, DEFAULT_FOLDER_COST + 100)
    put(store, "/f", b"x" * 101)
    with pytest.raises(QuotaExceeded) as info:
        store.mkdir(USER, "/d")
    assert info.value.details == {"free": DEFAULT_FOLDER_COST - 1, "needed": DEFAULT_FOLDER_COST}
    with pytest.raises(NotFound):
        store.stat(USER, "/d")


def test_each_folder_costs_a_block_and_rmdir_gives_it_back(make_store):
    store = open_either(make_store, 3 * DEFAULT_FOLDER_COST)
    store.mkdir(USER, "/a/b/c", parents=True)
    assert store.usage(USER).used == 3 * DEFAULT_FOLDER_COST
    with pytest.raises(QuotaExceeded):
        store.mkdir(USER, "/e")
    store.rmdir(USER, "/a/b/c")
    assert store.usage(USER).used == 2 * DEFAULT_FOLDER_COST
    store.mkdir(USER, "/e")


def test_mkdir_p_past_the_quota_keeps_the_levels_that_fit(make_store):
    # As mkdir -p on a file system: each level is made (and charged) in turn.
    store = open_either(make_store, 2 * DEFAULT_FOLDER_COST + 100)
    with pytest.raises(QuotaExceeded) as info:
        store.mkdir(USER, "/a/b/c", parents=True)
    assert info.value.details == {"free": 100, "needed": DEFAULT_FOLDER_COST}
    assert store.is_dir(USER, "/a/b") == "/a/b"
    assert store.usage(USER).used == 2 * DEFAULT_FOLDER_COST


def test_a_move_over_an_empty_folder_gives_its_cost_back(make_store):
    store = open_either(make_store, 10 * DEFAULT_FOLDER_COST)
    store.mkdir(USER, "/a")
    store.mkdir(USER, "/b")
    store.rename(USER, "/a", "/b", overwrite=True)
    assert store.usage(USER).used == DEFAULT_FOLDER_COST
    store.rmdir(USER, "/b")
    assert store.usage(USER).used == 0


def test_removing_a_folder_made_while_folders_were_free_leaves_used_at_zero(make_store):
    make_store(scrypt_n=2**4, folder_cost=0).create_user(USER, "pw", quota=10_000)
    make_store(scrypt_n=2**4, folder_cost=0).mkdir(USER, "/old")
    store = make_store(scrypt_n=2**4)             # the same data, now with folder costs
    store.rmdir(USER, "/old")
    assert store.usage(USER).used == 0


def test_folders_and_unfinished_uploads_share_the_quota(make_store):
    store = open_either(make_store, 2 * DEFAULT_FOLDER_COST)
    store.begin_upload(USER, "/big", DEFAULT_FOLDER_COST + 1, None).release()
    with pytest.raises(QuotaExceeded):
        store.mkdir(USER, "/d")


def test_iter_dir_yields_bounded_pages_of_the_whole_folder(store):
    store.store_small_files(USER, [SmallFile(f"/f{i:03d}", b"x") for i in range(150)])
    before = open_fds()
    pages = store.iter_dir(USER, "/", page_size=64)
    got = [e for page in pages for e in page]
    assert all(len(p) <= 64 for p in store.iter_dir(USER, "/", page_size=64))
    assert sorted(got, key=lambda e: e.name) == store.list_dir(USER, "/")
    assert open_fds() <= before


def test_an_iter_dir_closed_early_releases_its_descriptor(store):
    store.store_small_files(USER, [SmallFile(f"/f{i}", b"x") for i in range(10)])
    before = open_fds()
    pages = store.iter_dir(USER, "/", page_size=2)
    next(pages)
    assert open_fds() > before
    pages.close()
    assert open_fds() == before


def test_iter_dir_of_a_missing_folder_fails_at_the_call(store):
    with pytest.raises(NotFound):
        store.iter_dir(USER, "/nowhere")


# ----- item 15: hash-cache rows of replaced files are dropped
def hash_rows(root: Path, ino: int) -> int:
    with sqlite3.connect(root / "users.db") as db:
        return db.execute("SELECT COUNT(*) FROM hashes WHERE ino = ?", (ino,)).fetchone()[0]


def test_an_overwrite_commit_drops_the_replaced_files_hash_row(root, store):
    put(store, "/f", b"old")
    ino = (root / "homes" / USER / "f").stat().st_ino
    assert hash_rows(root, ino) == 1
    put(store, "/f", b"new", overwrite=True)
    assert hash_rows(root, ino) == 0


def test_an_overwrite_by_group_commit_drops_the_replaced_files_hash_row(root, store):
    put(store, "/f", b"old")
    ino = (root / "homes" / USER / "f").stat().st_ino
    [result] = store.store_small_files(USER, [SmallFile("/f", b"new", overwrite=True)])
    assert result.size == 3
    assert hash_rows(root, ino) == 0
