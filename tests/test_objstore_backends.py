"""The Store contract, run against both backends: local files and PostgreSQL + S3.

Each test takes ``store`` (parametrized: ``local`` is ``storage.Store`` on a
temporary folder, ``object`` is ``ObjectStore`` on the session's real
PostgreSQL and SeaweedFS) and a fresh ``user``.  Only behaviours the daemon
relies on through the facade are here; backend internals have their own tests.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from storage import (
    Exists,
    IntegrityError,
    NotADirectory,
    NotEmpty,
    NotFound,
    QuotaExceeded,
    Store,
    UploadBusy,
)
from tests.objstore_services import S3_ACCESS_KEY, S3_SECRET_KEY, unique_name

MIB = 1 << 20


def _object_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    pytest.importorskip("boto3", reason="needs the objstore extra")
    pytest.importorskip("psycopg", reason="needs the objstore extra")
    from storage.objstore.blobs import MIN_PART_SIZE
    from storage.objstore.store import ObjectStore

    pg_url = request.getfixturevalue("pg_database")
    s3 = request.getfixturevalue("s3_service")
    bucket = request.getfixturevalue("s3_bucket")
    # Credentials the way a deployment gives them: the AWS environment variables.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    return ObjectStore(pg_url, f"s3://{bucket}?endpoint={s3.endpoint}&region=us-east-1",
                       scrypt_n=2**4, part_size=MIN_PART_SIZE)


@pytest.fixture(params=["local", "object"])
def store(request: pytest.FixtureRequest, tmp_path: Any,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if request.param == "local":
        s = Store(tmp_path / "root", scrypt_n=2**4)
    else:
        s = _object_store(request, monkeypatch)
    yield s
    s.close()


@pytest.fixture
def user(store: Any) -> str:
    name = unique_name("b")
    store.create_user(name, "secret-pw", quota=64 * MIB)
    return name


def _data(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 4096
    return (block * (size // len(block) + 1))[:size]


def _put(store: Any, user: str, path: str, data: bytes, overwrite: bool = False) -> None:
    upload = store.begin_upload(user, path, len(data), hashlib.sha256(data).hexdigest(),
                                overwrite=overwrite)
    upload.write(data)
    upload.commit()


def _read(store: Any, user: str, path: str) -> bytes:
    source, size = store.open_read(user, path)
    if isinstance(source, int):
        import os

        try:
            return os.pread(source, size, 0)
        finally:
            os.close(source)
    return b"".join(source.blobs.read(source.blob, end=source.size))


# ------------------------------------------------------------------ users
def test_password_and_token_login(store: Any, user: str) -> None:
    assert store.verify_password(user, "secret-pw").name == user
    token = store.issue_token(user)
    assert store.verify_token(token).name == user
    store.revoke_token(token)
    with pytest.raises(Exception, match="token|invalid"):
        store.verify_token(token)


def test_a_new_password_ends_logins_made_before(store: Any, user: str) -> None:
    stamp = store.login_stamp(user)
    assert stamp is not None and store.login_valid(user, *stamp)
    store.set_password(user, "another-pw")
    assert not store.login_valid(user, *stamp)


# ------------------------------------------------------------------ tree ops
def test_mkdir_ls_stat_and_rmdir(store: Any, user: str) -> None:
    assert store.mkdir(user, "a/b", parents=True) == "/a/b"
    assert [(e.name, e.type) for e in store.list_dir(user, "/a")] == [("b", "dir")]
    assert store.stat(user, "b", cwd="/a").type == "dir"
    with pytest.raises(NotEmpty):
        store.rmdir(user, "/a")
    store.rmdir(user, "/a/b")
    assert store.list_dir(user, "/a") == []


def test_rename_of_a_folder_moves_its_files(store: Any, user: str) -> None:
    store.mkdir(user, "/src")
    _put(store, user, "/src/f.bin", b"hello")
    assert store.rename(user, "/src", "/dst") == ("/src", "/dst")
    assert _read(store, user, "/dst/f.bin") == b"hello"
    with pytest.raises(NotFound):
        store.stat(user, "/src")


def test_rename_refuses_an_existing_target_without_overwrite(store: Any, user: str) -> None:
    _put(store, user, "/a", b"1")
    _put(store, user, "/b", b"22")
    with pytest.raises(Exists):
        store.rename(user, "/a", "/b")
    store.rename(user, "/a", "/b", overwrite=True)
    assert _read(store, user, "/b") == b"1"
    assert store.usage(user).used == 1


def test_remove_gives_the_quota_back(store: Any, user: str) -> None:
    _put(store, user, "/f", b"x" * 1000)
    assert store.usage(user).used == 1000
    store.remove(user, "/f")
    assert store.usage(user).used == 0


def test_a_file_is_not_a_folder(store: Any, user: str) -> None:
    _put(store, user, "/g", b"y")
    with pytest.raises(NotADirectory):
        store.is_dir(user, "/g")


def test_file_hash_is_the_committed_sha256(store: Any, user: str) -> None:
    data = _data(100_000)
    _put(store, user, "/h", data)
    assert store.file_hash(user, "/h") == (hashlib.sha256(data).hexdigest(), len(data))


def test_the_hash_of_an_opened_file_is_its_own_after_an_overwrite(store: Any,
                                                                  user: str) -> None:
    """``get`` announces ``hash_fd`` of what ``open_read`` returned (issue 13, item 12):
    a file replaced in between must not lend its digest to the bytes being sent."""
    old, new = _data(3000, seed=1), _data(2000, seed=2)
    _put(store, user, "/r", old)
    source, size = store.open_read(user, "/r")
    try:
        _put(store, user, "/r", new, overwrite=True)
        assert store.hash_fd(source) == (hashlib.sha256(old).hexdigest(), len(old))
    finally:
        if isinstance(source, int):
            import os

            os.close(source)


def test_a_working_folder_is_usable_as_cwd(store: Any, user: str) -> None:
    store.mkdir(user, "/w/in", parents=True)
    workdir = store.open_workdir(user, "/w")
    try:
        assert workdir == "/w"
        assert store.stat(user, "in", cwd=workdir).path == "/w/in"
    finally:
        workdir.close()


# ------------------------------------------------------------------ uploads
def test_small_files_are_stored_together(store: Any, user: str) -> None:
    from storage import SmallFile

    results = store.store_small_files(user, [
        SmallFile("/s1", b"one", hashlib.sha256(b"one").hexdigest()),
        SmallFile("/s2", b"two", "0" * 64),
        SmallFile("/s3", b"")])
    assert [getattr(r, "path", None) for r in results] == ["/s1", None, "/s3"]
    assert isinstance(results[1], IntegrityError)
    assert _read(store, user, "/s1") == b"one" and _read(store, user, "/s3") == b""

def test_upload_resumes_from_its_offset_and_commits(store: Any, user: str) -> None:
    data = _data(11 * MIB, seed=2)
    first = store.begin_upload(user, "/big", len(data), hashlib.sha256(data).hexdigest())
    first.write(data[: 6 * MIB])
    first.flush()                   # what a worker does every writeback_bytes
    first.release()
    again = store.begin_upload(user, "/big", len(data), hashlib.sha256(data).hexdigest())
    # Local keeps every byte; the object store keeps whole recorded parts (5 MiB here).
    assert 0 < again.offset <= 6 * MIB
    assert [p.offset for p in store.list_uploads(user)] == [again.offset]
    again.write(data[again.offset:])
    result = again.commit()
    assert (result.path, result.size) == ("/big", len(data))
    assert _read(store, user, "/big") == data
    assert store.list_uploads(user) == []


def test_a_second_writer_of_one_upload_is_busy(store: Any, user: str) -> None:
    first = store.begin_upload(user, "/one", 10, None)
    with pytest.raises(UploadBusy):
        store.begin_upload(user, "/one", 10, None)
    first.release()


def test_wrong_sha256_is_refused_and_nothing_is_published(store: Any, user: str) -> None:
    upload = store.begin_upload(user, "/bad", 5, "0" * 64)
    upload.write(b"hello")
    with pytest.raises(IntegrityError):
        upload.commit()
    with pytest.raises(NotFound):
        store.stat(user, "/bad")


def test_concurrent_uploads_never_oversubscribe_the_quota(store: Any, user: str) -> None:
    store.set_quota(user, 10 * 1000)
    won: list[Any] = []
    refused: list[Exception] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def racer(i: int) -> None:
        start.wait(timeout=30)
        try:
            up = store.begin_upload(user, f"/r{i}", 3000, None)
            with lock:
                won.append(up)
        except QuotaExceeded as exc:
            with lock:
                refused.append(exc)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert (len(won), len(refused)) == (3, 5)
    assert store.usage(user).reserved == 9000
    for up in won:
        up.release()
