"""The file tree: listing, stat, mkdir/rmdir/remove/rename, reading and hashing.

Run on both backends (tests/storage_backends.py) except where a test plants
files on disk behind the store's back (the local backend's alone).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from storage import (
    BadPath,
    Exists,
    IsADirectory,
    NoSuchUser,
    NotADirectory,
    NotEmpty,
    NotFound,
    Store,
)
from storage.store import DEFAULT_FOLDER_COST
from tests.storage_backends import local_only, read_back


def put(store: Store, path: str, data: bytes, overwrite: bool = False) -> None:
    up = store.begin_upload("alice", path, len(data), hashlib.sha256(data).hexdigest(),
                            overwrite=overwrite)
    up.write(data)
    up.commit()


@pytest.fixture
def store(make_store):
    s = make_store(scrypt_n=2**4, default_quota=1 << 20)
    s.create_user("alice", "pw")
    return s


@pytest.fixture
def home(tmp_path):
    return tmp_path / "root" / "homes" / "alice"


# Local only: a FIFO made in the home on disk (type "other").
@local_only
def test_list_dir_is_sorted_and_typed(store, home):
    put(store, "/b.txt", b"bb")
    store.mkdir("alice", "/a")
    os.mkfifo(home / "c.fifo")
    entries = store.list_dir("alice", "/")
    assert [(e.name, e.path, e.type, e.size) for e in entries] == [
        ("a", "/a", "dir", 0), ("b.txt", "/b.txt", "file", 2), ("c.fifo", "/c.fifo", "other", 0)]
    assert all(isinstance(e.mtime, float) for e in entries)


def test_list_dir_relative_to_cwd(store):
    store.mkdir("alice", "/docs")
    put(store, "/docs/x", b"x")
    assert [e.path for e in store.list_dir("alice", ".", cwd="/docs")] == ["/docs/x"]


def test_list_dir_errors(store):
    put(store, "/f", b"x")
    with pytest.raises(NotFound):
        store.list_dir("alice", "/missing")
    with pytest.raises(NotADirectory):
        store.list_dir("alice", "/f")
    with pytest.raises(NoSuchUser):
        store.list_dir("ghost", "/")


# Local only: a file name made on disk.
@local_only
def test_list_dir_skips_names_that_are_not_utf8(store, home):
    (home / "ok").write_bytes(b"")
    os.close(os.open(os.fsencode(home) + b"/bad\xff", os.O_CREAT | os.O_WRONLY))
    assert [e.name for e in store.list_dir("alice", "/")] == ["ok"]


def test_stat_file_dir_and_root(store):
    put(store, "/f", b"hello")
    store.mkdir("alice", "/d")
    f = store.stat("alice", "f")
    assert (f.name, f.path, f.type, f.size) == ("f", "/f", "file", 5)
    assert store.stat("alice", "/d").type == "dir"
    root = store.stat("alice", "/")
    assert (root.name, root.path, root.type) == ("/", "/", "dir")
    with pytest.raises(NotFound):
        store.stat("alice", "/nope")


def test_is_dir_returns_normalised_path(store):
    store.mkdir("alice", "/d")
    put(store, "/f", b"x")
    assert store.is_dir("alice", "../d/.", cwd="/d") == "/d"
    assert store.is_dir("alice", "/") == "/"
    with pytest.raises(NotADirectory):
        store.is_dir("alice", "/f")
    with pytest.raises(NotFound):
        store.is_dir("alice", "/nope")


def test_mkdir_creates_and_refuses_existing(store):
    assert store.mkdir("alice", "d") == "/d"
    with pytest.raises(Exists):
        store.mkdir("alice", "/d")
    with pytest.raises(Exists):
        store.mkdir("alice", "/")
    put(store, "/f", b"x")
    with pytest.raises(Exists):
        store.mkdir("alice", "/f")


def test_mkdir_needs_parent_unless_parents(store):
    with pytest.raises(NotFound):
        store.mkdir("alice", "/a/b/c")
    assert store.mkdir("alice", "/a/b/c", parents=True) == "/a/b/c"
    assert store.mkdir("alice", "/a/b/c", parents=True) == "/a/b/c"
    assert store.stat("alice", "/a/b").type == "dir"


def test_mkdir_through_a_file_is_not_a_directory(store):
    put(store, "/f", b"x")
    with pytest.raises(NotADirectory):
        store.mkdir("alice", "/f/sub", parents=True)
    with pytest.raises(NotADirectory):
        store.mkdir("alice", "/f/sub")


def test_rmdir_removes_only_empty_folders(store):
    store.mkdir("alice", "/d/sub", parents=True)
    with pytest.raises(NotEmpty):
        store.rmdir("alice", "/d")
    assert store.rmdir("alice", "/d/sub") == "/d/sub"
    assert store.rmdir("alice", "d") == "/d"
    with pytest.raises(NotFound):
        store.rmdir("alice", "/d")


def test_rmdir_refuses_root_and_files(store):
    put(store, "/f", b"x")
    with pytest.raises(BadPath):
        store.rmdir("alice", "/")
    with pytest.raises(NotADirectory):
        store.rmdir("alice", "/f")


def test_remove_deletes_files_and_gives_quota_back(store):
    put(store, "/f", b"x" * 100)
    assert store.usage("alice").used == 100
    assert store.remove("alice", "f") == "/f"
    assert store.usage("alice").used == 0
    with pytest.raises(NotFound):
        store.remove("alice", "/f")


def test_remove_refuses_folders(store):
    store.mkdir("alice", "/d")
    with pytest.raises(IsADirectory):
        store.remove("alice", "/d")
    with pytest.raises(IsADirectory):
        store.remove("alice", "/")


def test_rename_moves_files_and_folders(store):
    put(store, "/f", b"data")
    store.mkdir("alice", "/d")
    assert store.rename("alice", "f", "d/g") == ("/f", "/d/g")
    assert store.rename("alice", "/d", "/e") == ("/d", "/e")
    assert [e.path for e in store.list_dir("alice", "/e")] == ["/e/g"]
    # The file and one folder (a folder costs a block on either backend).
    assert store.usage("alice").used == 4 + DEFAULT_FOLDER_COST


def test_rename_refuses_existing_destination_without_overwrite(store):
    put(store, "/a", b"aaa")
    put(store, "/b", b"bbbbb")
    with pytest.raises(Exists):
        store.rename("alice", "/a", "/b")
    assert store.usage("alice").used == 8


def test_rename_overwrite_replaces_and_counts_the_replaced_file(store):
    put(store, "/a", b"aaa")
    put(store, "/b", b"bbbbb")
    store.rename("alice", "/a", "/b", overwrite=True)
    assert store.usage("alice").used == 3
    assert read_back(store, "alice", "/b") == b"aaa"


def test_rename_type_conflicts(store):
    put(store, "/f", b"x")
    store.mkdir("alice", "/d/inner", parents=True)
    store.mkdir("alice", "/empty")
    with pytest.raises(IsADirectory):
        store.rename("alice", "/f", "/d", overwrite=True)
    with pytest.raises(NotADirectory):
        store.rename("alice", "/d", "/f", overwrite=True)
    with pytest.raises(BadPath):
        store.rename("alice", "/d", "/d/inner/x")
    with pytest.raises(BadPath):
        store.rename("alice", "/", "/x")
    with pytest.raises(BadPath):
        store.rename("alice", "/f", "/")
    with pytest.raises(NotFound):
        store.rename("alice", "/nope", "/x")
    with pytest.raises(NotFound):
        store.rename("alice", "/f", "/nope/x")
    with pytest.raises(NotEmpty):
        store.rename("alice", "/empty", "/d", overwrite=True)
    assert store.rename("alice", "/d", "/empty", overwrite=True) == ("/d", "/empty")


def test_rename_onto_itself_is_a_no_op(store):
    put(store, "/f", b"x")
    assert store.rename("alice", "/f", "f") == ("/f", "/f")
    assert store.stat("alice", "/f").size == 1


# Local only: a descriptor (the object backend streams a blob).
@local_only
def test_open_read_returns_fd_and_size(store):
    put(store, "/f", b"content")
    fd, size = store.open_read("alice", "/f")
    try:
        assert size == 7 and os.read(fd, 100) == b"content"
        assert os.get_blocking(fd)
    finally:
        os.close(fd)


# Local only: a FIFO made in the home on disk.
@local_only
def test_open_read_refuses_folders_and_special_files(store, home):
    store.mkdir("alice", "/d")
    os.mkfifo(home / "fifo")
    with pytest.raises(IsADirectory):
        store.open_read("alice", "/d")
    with pytest.raises(IsADirectory):
        store.open_read("alice", "/")
    with pytest.raises(BadPath):
        store.open_read("alice", "/fifo")   # and does not hang waiting for a writer
    with pytest.raises(NotFound):
        store.open_read("alice", "/nope")


# Local only: a file written on disk, the SQLite cache.
@local_only
def test_file_hash_computes_and_caches(store, home, tmp_path):
    data = os.urandom(3 << 20)
    (home / "big").write_bytes(data)
    assert store.cached_hash("alice", "/big") is None
    expected = (hashlib.sha256(data).hexdigest(), len(data))
    assert store.file_hash("alice", "/big") == expected
    assert store.cached_hash("alice", "/big") == expected
    with sqlite3.connect(tmp_path / "root" / "users.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM hashes").fetchone()[0] == 1


# Local only: a file changed on disk.
@local_only
def test_file_hash_cache_misses_after_the_file_changes(store, home):
    (home / "f").write_bytes(b"one")
    store.file_hash("alice", "/f")
    (home / "f").write_bytes(b"two!")
    assert store.cached_hash("alice", "/f") is None
    assert store.file_hash("alice", "/f") == (hashlib.sha256(b"two!").hexdigest(), 4)


def test_committed_uploads_are_in_the_hash_cache(store):
    put(store, "/f", b"hello")
    assert store.cached_hash("alice", "/f") == (hashlib.sha256(b"hello").hexdigest(), 5)


def test_hash_cache_survives_rename(store):
    put(store, "/f", b"hello")
    store.rename("alice", "/f", "/g")
    assert store.cached_hash("alice", "/g") == (hashlib.sha256(b"hello").hexdigest(), 5)


def test_hash_calls_on_folders_and_missing_files(store):
    store.mkdir("alice", "/d")
    for call in (store.file_hash, store.cached_hash):
        with pytest.raises(IsADirectory):
            call("alice", "/d")
        with pytest.raises(NotFound):
            call("alice", "/nope")


# Local only: a file written on disk.
@local_only
def test_empty_file_hash(store, home):
    (home / "empty").write_bytes(b"")
    assert store.file_hash("alice", "/empty") == (hashlib.sha256(b"").hexdigest(), 0)
