"""Issue 13, item 12: ``get`` must never announce another file's SHA-256.

``Store.open_hashed`` opens the file and then hashes it (or asks the cache) through
that very descriptor, so the digest always belongs to the bytes the fd reads.

Local backend only: descriptors of local files (object blobs are immutable, so a
blob id and its SHA-256 never part).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

import storage.hashing
import storage.tree
from storage import SmallFile, Store

USER = "alice"
A, B = b"a" * 4096, b"b" * 4096          # same size: only the content tells them apart


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "root", scrypt_n=2**4)
    s.create_user(USER, "pw", quota=1 << 24)
    yield s
    s.close()


def read_all(fd: int) -> bytes:
    chunks, pos = [], 0
    while block := os.pread(fd, 1 << 16, pos):
        chunks.append(block)
        pos += len(block)
    return b"".join(chunks)


def overwrite(store: Store, data: bytes) -> None:
    [result] = store.store_small_files(USER, [SmallFile("/f", data, sha(data), overwrite=True)])
    assert not isinstance(result, Exception), result


def test_a_file_replaced_between_open_and_hash_gets_the_opened_files_digest(store,
                                                                             monkeypatch):
    overwrite(store, A)
    real = storage.tree.fd_sha256

    def replaced_first(db, fd, **kw):          # the overwrite lands right after the open
        overwrite(store, B)
        return real(db, fd, **kw)

    monkeypatch.setattr(storage.tree, "fd_sha256", replaced_first)
    fd, size, digest = store.open_hashed(USER, "/f")
    try:
        assert read_all(fd) == A and (size, digest) == (len(A), sha(A))
    finally:
        os.close(fd)


def test_concurrent_overwrites_never_pair_bytes_with_another_digest(store):
    overwrite(store, A)
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(80):
                overwrite(store, B if i % 2 else A)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    checked = 0
    try:
        while checked < 1000 and not (done.is_set() and checked >= 20):
            fd, size, digest = store.open_hashed(USER, "/f")
            try:
                data = read_all(fd)
            finally:
                os.close(fd)
            assert (len(data), sha(data)) == (size, digest)
            checked += 1
    finally:
        thread.join(timeout=60)
    assert checked > 0


def test_open_hashed_answers_from_the_cache_for_an_unchanged_file(store, monkeypatch):
    overwrite(store, A)                     # the commit recorded its digest

    def no_reading(fd):
        raise AssertionError("the file was read although its digest was cached")

    monkeypatch.setattr(storage.hashing, "sha256_fd", no_reading)
    fd, size, digest = store.open_hashed(USER, "/f")
    os.close(fd)
    assert (size, digest) == (len(A), sha(A))


def test_a_renamed_file_keeps_its_cached_digest(store, monkeypatch):
    overwrite(store, A)
    store.rename(USER, "/f", "/g")
    monkeypatch.setattr(storage.hashing, "sha256_fd", lambda fd: pytest.fail("read again"))
    assert store.cached_hash(USER, "/g") == (sha(A), len(A))


def test_hash_fd_hashes_the_opened_file_not_the_one_now_at_its_path(store):
    overwrite(store, A)
    fd, size = store.open_read(USER, "/f")
    try:
        overwrite(store, B)                 # replaced between the open and the hash
        # The replaced file's row was dropped (item 15): a miss, never B's digest.
        assert store.cached_hash_fd(fd) in (None, (sha(A), size))
        assert store.hash_fd(fd) == (sha(A), size)
    finally:
        os.close(fd)


def test_cached_hash_fd_misses_a_file_never_hashed(store, tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"never hashed")
    fd = os.open(plain, os.O_RDONLY)
    try:
        assert store.cached_hash_fd(fd) is None
        assert store.hash_fd(fd) == (sha(b"never hashed"), 12)
        assert store.cached_hash_fd(fd) == (sha(b"never hashed"), 12)
    finally:
        os.close(fd)
