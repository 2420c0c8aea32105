"""BLAKE3 in the local store (issue 17): uploads verified with it, and the hash cache
that keeps it beside SHA-256, so a get after a BLAKE3 upload reads nothing again.

Local backend only: the object store keeps SHA-256 alone (``ObjectStore.digests``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from blake3 import blake3 as b3

import storage.hashing
from storage import IntegrityError, SmallFile, Store
from storage.objstore.store import ObjectStore

USER = "alice"
DATA = os.urandom(300_000)


def b3hex(data: bytes) -> str:
    return b3(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "root", scrypt_n=2**4)
    s.create_user(USER, "pw", quota=1 << 24)
    yield s
    s.close()


def cached_blake3(store: Store, path: str) -> tuple[str, int] | None:
    fd, _ = store.open_read(USER, path)
    try:
        return store.cached_hash_fd(fd, "blake3")
    finally:
        os.close(fd)


def no_reading(*_args, **_kw):
    raise AssertionError("the file was read although its digest was cached")


def test_the_local_store_offers_blake3_and_the_object_store_does_not():
    assert "blake3" in Store.digests and "sha256" in Store.digests
    assert ObjectStore.digests == ("sha256",)


def test_an_upload_declaring_blake3_records_it_in_the_hash_cache_at_commit(store,
                                                                           monkeypatch):
    upload = store.begin_upload(USER, "/f", len(DATA), None, blake3=b3hex(DATA))
    upload.write(DATA)
    result = upload.commit()
    assert (result.blake3, result.sha256) == (b3hex(DATA), None)
    monkeypatch.setattr(storage.hashing, "sha256_fd", no_reading)
    assert cached_blake3(store, "/f") == (b3hex(DATA), len(DATA))


def test_a_deferred_blake3_upload_records_the_digest_named_at_commit(store, monkeypatch):
    upload = store.begin_upload(USER, "/d", len(DATA), None)
    upload.expect_hash_later("blake3")
    upload.write(DATA)
    assert upload.commit(blake3=b3hex(DATA)).blake3 == b3hex(DATA)
    monkeypatch.setattr(storage.hashing, "sha256_fd", no_reading)
    assert cached_blake3(store, "/d") == (b3hex(DATA), len(DATA))


def test_an_upload_whose_bytes_differ_from_its_blake3_is_refused_and_discarded(store):
    upload = store.begin_upload(USER, "/bad", len(DATA), None, blake3=b3hex(DATA[:-1] + b"x"))
    upload.write(DATA)
    with pytest.raises(IntegrityError):
        upload.commit()
    assert store.list_uploads(USER) == []


def test_a_small_file_declaring_blake3_is_verified_and_cached(store, monkeypatch):
    good, bad = store.store_small_files(USER, [
        SmallFile("/s1", b"good", blake3=b3hex(b"good")),
        SmallFile("/s2", b"bad!", blake3=b3hex(b"good"))])
    assert good.blake3 == b3hex(b"good") and isinstance(bad, IntegrityError)
    monkeypatch.setattr(storage.hashing, "sha256_fd", no_reading)
    assert cached_blake3(store, "/s1") == (b3hex(b"good"), 4)


def test_both_digests_of_one_file_live_in_one_cache_row(store, monkeypatch):
    upload = store.begin_upload(USER, "/f", len(DATA), hashlib.sha256(DATA).hexdigest())
    upload.write(DATA)
    upload.commit()
    fd, _ = store.open_read(USER, "/f")
    try:
        assert store.hash_fd(fd, "blake3") == (b3hex(DATA), len(DATA))    # a miss: read
        monkeypatch.setattr(storage.hashing, "sha256_fd", no_reading)
        assert store.cached_hash_fd(fd) == (hashlib.sha256(DATA).hexdigest(), len(DATA))
        assert store.cached_hash_fd(fd, "blake3") == (b3hex(DATA), len(DATA))
    finally:
        os.close(fd)


def test_a_rewritten_file_loses_the_other_digest_of_its_old_content(store, tmp_path):
    upload = store.begin_upload(USER, "/f", 4, None, blake3=b3hex(b"old!"))
    upload.write(b"old!")
    upload.commit()
    fd = os.open(tmp_path / "root" / "homes" / USER / "f", os.O_RDWR)
    try:
        os.pwrite(fd, b"new!", 0)
        assert store.cached_hash_fd(fd, "blake3") is None     # the row no longer matches
        assert store.hash_fd(fd) == (hashlib.sha256(b"new!").hexdigest(), 4)
        assert store.cached_hash_fd(fd, "blake3") is None     # storing SHA-256 kept no B3
    finally:
        os.close(fd)


def test_a_resumed_upload_must_declare_the_same_blake3(store):
    first = store.begin_upload(USER, "/r", len(DATA), None, blake3=b3hex(DATA))
    first.write(DATA[:1000])
    first.release()
    same = store.begin_upload(USER, "/r", len(DATA), None, blake3=b3hex(DATA))
    assert (same.offset, same.restarted) == (1000, False)
    same.release()
    other = store.begin_upload(USER, "/r", len(DATA), None, blake3=b3hex(b"other"))
    assert (other.offset, other.restarted) == (0, True)
    other.release()


def test_a_put_declaring_both_digests_is_refused(store):
    with pytest.raises(ValueError):
        store.begin_upload(USER, "/x", 1, hashlib.sha256(b"x").hexdigest(), blake3=b3hex(b"x"))
