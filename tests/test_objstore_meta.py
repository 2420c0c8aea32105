"""The PostgreSQL metadata layer, against a real PostgreSQL (no mocks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("psycopg", reason="needs the objstore extra: pip install -e '.[objstore]'")

import psycopg

from storage.errors import (
    AuthFailed,
    BadPath,
    Exists,
    IsADirectory,
    NoSuchUser,
    NotADirectory,
    NotEmpty,
    NotFound,
    QuotaExceeded,
    StorageIOError,
    UploadBusy,
    UserExists,
)
from storage.objstore.meta import MetaStore
from storage.objstore.writer import Part
from tests.objstore_services import PostgresService, unique_name

MIB = 1 << 20
SHA = "ab" * 32


@pytest.fixture
def meta(pg_database: str) -> Iterator[MetaStore]:
    store = MetaStore(pg_database, timeout=3.0)
    yield store
    store.close()


@pytest.fixture
def user(meta: MetaStore) -> str:
    name = unique_name("u")
    meta.create_user(name, "pwhash", quota=1000 * MIB)
    return name


def _begin(meta: MetaStore, user: str, path: str, size: int = 10,
           **kw: object) -> tuple[object, bool]:
    return meta.create_upload(user, path, size, None, blob="b" * 32, mpu=unique_name("mpu"),
                              part_size=5 * MIB, **kw)  # type: ignore[arg-type]


def _kill_session(url: str, pid: int) -> None:
    """Terminate a backend (a node dying) and wait until it and its locks are gone.

    ``pg_terminate_backend`` only signals; the backend exits, releasing its
    locks, a moment later.
    """
    with psycopg.connect(url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            row = admin.execute(
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE pid = %s)"
                " + (SELECT count(*) FROM pg_locks WHERE pid = %s)", (pid, pid)).fetchone()
            if row[0] == 0:
                return
            time.sleep(0.02)
        raise AssertionError(f"backend {pid} still there after 10 s")


def _upload_file(meta: MetaStore, user: str, path: str, size: int = 10,
                 overwrite: bool = False) -> None:
    up, _ = _begin(meta, user, path, size, overwrite=overwrite)
    token = meta.locks.acquire(up.id)  # type: ignore[attr-defined]
    assert token is not None
    meta.publish(up.id, token, SHA, overwrite=overwrite)  # type: ignore[attr-defined]
    meta.locks.release(up.id)  # type: ignore[attr-defined]


# ----------------------------------------------------------------- users and tokens
def test_new_user_has_an_empty_root_folder(meta: MetaStore, user: str) -> None:
    assert meta.stat(user, "/").type == "dir"
    assert meta.ls(user, "/") == []


def test_creating_an_existing_user_is_user_exists(meta: MetaStore, user: str) -> None:
    with pytest.raises(UserExists):
        meta.create_user(user, "h")


def test_user_fields_mirror_the_sqlite_accounts(meta: MetaStore, user: str) -> None:
    info = meta.get_user(user)
    assert info is not None
    assert (info.name, info.quota, info.used, info.disabled) == (user, 1000 * MIB, 0, False)


def test_token_issued_on_one_node_is_accepted_by_another(pg_database: str, user: str,
                                                          meta: MetaStore) -> None:
    token = meta.issue_token(user)
    with MetaStore(pg_database) as other:
        assert other.verify_token(token).name == user


def test_new_password_revokes_every_token(meta: MetaStore, user: str) -> None:
    token = meta.issue_token(user)
    meta.set_password(user, "new-hash")
    with pytest.raises(AuthFailed):
        meta.verify_token(token)
    assert meta.password_hash(user)[0] == "new-hash"  # type: ignore[index]


def test_disabled_user_token_is_refused(meta: MetaStore, user: str) -> None:
    token = meta.issue_token(user)
    meta.set_disabled(user, True)
    with pytest.raises(AuthFailed):
        meta.verify_token(token)


def test_deleted_user_files_and_uploads_are_queued_for_the_collector(
        meta: MetaStore, user: str) -> None:
    _upload_file(meta, user, "/f")
    blob = meta.stat(user, "/f").blob
    up, _ = _begin(meta, user, "/g")
    meta.delete_user(user)
    queued = set(meta.take_garbage(1000))
    assert (blob, "") in queued
    assert (up.blob, up.mpu) in queued  # type: ignore[attr-defined]
    assert meta.get_user(user) is None


def test_throttle_is_shared_and_locks_after_the_threshold(pg_database: str,
                                                          meta: MetaStore) -> None:
    key = unique_name("10.0.0.")
    with MetaStore(pg_database) as other:
        meta.throttle_failure(1, key, threshold=3, lockout=60)
        other.throttle_failure(1, key, threshold=3, lockout=60)
        failures, until = meta.throttle_failure(1, key, threshold=3, lockout=60)
        assert failures == 3 and until > 0
        assert other.throttle_state(1, key)[0] == 3
    meta.throttle_success(1, key)
    assert meta.throttle_state(1, key) == (0, 0.0)


def test_hash_cache_is_keyed_by_the_immutable_blob(meta: MetaStore) -> None:
    blob = unique_name("h").ljust(32, "0")
    assert meta.cached_hash(blob) is None
    meta.remember_hash(blob, SHA, 5)
    assert meta.cached_hash(blob) == (SHA, 5)


# ----------------------------------------------------------------- the tree
def test_mkdir_then_stat_and_ls_show_the_folder(meta: MetaStore, user: str) -> None:
    assert meta.mkdir(user, "docs") == "/docs"
    assert meta.stat(user, "/docs").type == "dir"
    assert [n.path for n in meta.ls(user, "/")] == ["/docs"]


def test_mkdir_without_parents_needs_the_parent(meta: MetaStore, user: str) -> None:
    with pytest.raises(NotFound):
        meta.mkdir(user, "/a/b")


def test_mkdir_with_parents_makes_every_level_and_accepts_existing(
        meta: MetaStore, user: str) -> None:
    meta.mkdir(user, "/a/b/c", parents=True)
    assert meta.mkdir(user, "/a/b/c", parents=True) == "/a/b/c"
    assert meta.stat(user, "/a/b/c").type == "dir"


def test_mkdir_of_an_existing_name_is_exists(meta: MetaStore, user: str) -> None:
    meta.mkdir(user, "/x")
    with pytest.raises(Exists):
        meta.mkdir(user, "/x")


def test_path_through_a_file_is_not_a_directory(meta: MetaStore, user: str) -> None:
    _upload_file(meta, user, "/file")
    with pytest.raises(NotADirectory):
        meta.stat(user, "/file/below")


def test_rmdir_refuses_a_non_empty_folder(meta: MetaStore, user: str) -> None:
    meta.mkdir(user, "/d/e", parents=True)
    with pytest.raises(NotEmpty):
        meta.rmdir(user, "/d")
    meta.rmdir(user, "/d/e")
    meta.rmdir(user, "/d")
    with pytest.raises(NotFound):
        meta.stat(user, "/d")


def test_rm_of_a_folder_is_is_a_directory(meta: MetaStore, user: str) -> None:
    meta.mkdir(user, "/d")
    with pytest.raises(IsADirectory):
        meta.remove(user, "/d")


def test_rm_gives_the_bytes_back_and_queues_the_blob(meta: MetaStore, user: str) -> None:
    _upload_file(meta, user, "/f", size=300)
    blob = meta.stat(user, "/f").blob
    assert meta.usage(user).used == 300
    meta.remove(user, "/f")
    assert meta.usage(user).used == 0
    assert (blob, "") in meta.take_garbage(1000)


def test_folder_rename_is_one_update_and_children_follow(meta: MetaStore, user: str) -> None:
    meta.mkdir(user, "/old/sub", parents=True)
    _upload_file(meta, user, "/old/sub/f")
    folder_id = meta.stat(user, "/old").id
    meta.rename(user, "/old", "/new")
    assert meta.stat(user, "/new").id == folder_id       # the same row, moved
    assert meta.stat(user, "/new/sub/f").type == "file"
    with pytest.raises(NotFound):
        meta.stat(user, "/old")


def test_folder_cannot_move_inside_itself(meta: MetaStore, user: str) -> None:
    meta.mkdir(user, "/a")
    with pytest.raises(BadPath):
        meta.rename(user, "/a", "/a/b")


def test_rename_onto_a_file_needs_overwrite_and_frees_the_old_bytes(
        meta: MetaStore, user: str) -> None:
    _upload_file(meta, user, "/a", size=100)
    _upload_file(meta, user, "/b", size=40)
    with pytest.raises(Exists):
        meta.rename(user, "/a", "/b")
    meta.rename(user, "/a", "/b", overwrite=True)
    assert meta.stat(user, "/b").size == 100
    assert meta.usage(user).used == 100


def test_ls_pages_by_name_with_keyset_pagination(meta: MetaStore, user: str) -> None:
    meta.mkdir(user, "/many")
    names = [f"n{i:03d}" for i in range(25)]
    for name in names:
        meta.mkdir(user, f"/many/{name}")
    seen: list[str] = []
    after = None
    while True:
        page = meta.ls(user, "/many", after=after, limit=10)
        if not page:
            break
        assert len(page) <= 10
        seen += [n.name for n in page]
        after = page[-1].name
    assert seen == names


def test_ls_of_a_file_is_not_a_directory(meta: MetaStore, user: str) -> None:
    _upload_file(meta, user, "/f")
    with pytest.raises(NotADirectory):
        meta.ls(user, "/f")


def test_unknown_user_is_no_such_user(meta: MetaStore) -> None:
    with pytest.raises(NoSuchUser):
        meta.mkdir("nobody-here", "/x")


# ----------------------------------------------------------------- uploads and quota
def test_upload_reserves_its_size_and_publish_turns_it_into_usage(
        meta: MetaStore, user: str) -> None:
    up, created = _begin(meta, user, "/f", size=123)
    assert created
    assert meta.usage(user).reserved == 123
    token = meta.locks.acquire(up.id)  # type: ignore[attr-defined]
    node = meta.publish(up.id, token, SHA)  # type: ignore[attr-defined,arg-type]
    assert (node.path, node.size, node.sha256) == ("/f", 123, SHA)
    usage = meta.usage(user)
    assert (usage.used, usage.reserved) == (123, 0)
    assert meta.get_upload(user, "/f") is None


def test_second_begin_of_the_same_path_returns_the_existing_upload(
        meta: MetaStore, user: str) -> None:
    first, _ = _begin(meta, user, "/f")
    again, created = _begin(meta, user, "/f")
    assert not created
    assert again.id == first.id  # type: ignore[attr-defined]
    assert meta.usage(user).reserved == 10


def test_upload_over_an_existing_file_needs_overwrite(meta: MetaStore, user: str) -> None:
    _upload_file(meta, user, "/f")
    with pytest.raises(Exists):
        _begin(meta, user, "/f")


def test_upload_over_quota_is_quota_exceeded(meta: MetaStore, user: str) -> None:
    meta.set_quota(user, 50)
    with pytest.raises(QuotaExceeded) as info:
        _begin(meta, user, "/big", size=51)
    assert info.value.details == {"free": 50, "needed": 51}


def test_concurrent_reservations_never_oversubscribe(pg_database: str, meta: MetaStore,
                                                     user: str) -> None:
    meta.set_quota(user, 1000)
    nodes = [MetaStore(pg_database, pool_size=4) for _ in range(2)]   # two "nodes"
    results: list[str] = []
    start = threading.Barrier(16)

    def begin(i: int) -> None:
        start.wait(10)
        try:
            _begin(nodes[i % 2], user, f"/r{i}", size=100)
            results.append("ok")
        except QuotaExceeded:
            results.append("quota")

    threads = [threading.Thread(target=begin, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for node in nodes:
        node.close()
    assert results.count("ok") == 10
    assert results.count("quota") == 6
    assert meta.usage(user).reserved == 1000


def test_parts_recorded_by_one_node_give_the_resume_offset_on_another(
        pg_database: str, meta: MetaStore, user: str) -> None:
    up, _ = _begin(meta, user, "/f", size=12 * MIB)
    token = meta.locks.acquire(up.id)  # type: ignore[attr-defined]
    meta.record_part(up.id, token, Part(1, 5 * MIB, '"e1"'))  # type: ignore[arg-type]
    meta.record_part(up.id, token, Part(2, 5 * MIB, '"e2"'))  # type: ignore[arg-type]
    with MetaStore(pg_database) as other:
        seen = other.get_upload(user, "/f")
        assert seen is not None
        assert seen.offset == 10 * MIB
        assert [p.etag for p in seen.parts] == ['"e1"', '"e2"']


def test_two_writers_of_one_upload_exactly_one_gets_the_lock(
        pg_database: str, meta: MetaStore, user: str) -> None:
    up, _ = _begin(meta, user, "/f")
    nodes = [MetaStore(pg_database) for _ in range(4)]
    tokens: list[int | None] = []
    start = threading.Barrier(4)

    def grab(node: MetaStore) -> None:
        start.wait(10)
        tokens.append(node.locks.acquire(up.id))  # type: ignore[attr-defined]

    threads = [threading.Thread(target=grab, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert sum(t is not None for t in tokens) == 1
    finally:
        for node in nodes:
            node.close()


def test_lock_is_released_when_the_writers_connection_dies(
        pg_database: str, meta: MetaStore, user: str) -> None:
    up, _ = _begin(meta, user, "/f")
    with MetaStore(pg_database) as other:
        token = meta.locks.acquire(up.id)  # type: ignore[attr-defined]
        assert token is not None
        assert other.locks.acquire(up.id) is None  # type: ignore[attr-defined]
        _kill_session(pg_database, token)                # the node "dies"
        assert other.locks.acquire(up.id) is not None  # type: ignore[attr-defined]


def test_a_writer_that_lost_its_lock_cannot_record_parts_or_publish(
        pg_database: str, meta: MetaStore, user: str) -> None:
    up, _ = _begin(meta, user, "/f")
    token = meta.locks.acquire(up.id)  # type: ignore[attr-defined]
    _kill_session(pg_database, token)  # type: ignore[arg-type]
    with MetaStore(pg_database) as other:
        assert other.locks.acquire(up.id) is not None  # type: ignore[attr-defined]
        with pytest.raises(UploadBusy):
            meta.record_part(up.id, token, Part(1, 5 * MIB, '"e"'))  # type: ignore
        with pytest.raises(UploadBusy):
            meta.publish(up.id, token, SHA)  # type: ignore[arg-type]


def test_abort_while_a_writer_holds_the_upload_is_busy(pg_database: str, meta: MetaStore,
                                                       user: str) -> None:
    up, _ = _begin(meta, user, "/f")
    with MetaStore(pg_database) as other:
        assert other.locks.acquire(up.id) is not None  # type: ignore[attr-defined]
        with pytest.raises(UploadBusy):
            meta.abort_upload(user, "/f")


def test_abort_frees_the_reservation_and_queues_the_multipart_upload(
        meta: MetaStore, user: str) -> None:
    up, _ = _begin(meta, user, "/f", size=77)
    meta.abort_upload(user, "/f")
    assert meta.usage(user).reserved == 0
    assert (up.blob, up.mpu) in meta.take_garbage(1000)  # type: ignore[attr-defined]


def test_expire_drops_only_old_unlocked_uploads(meta: MetaStore, user: str) -> None:
    old, _ = _begin(meta, user, "/old")
    held, _ = _begin(meta, user, "/held")
    assert meta.locks.acquire(held.id) is not None  # type: ignore[attr-defined]
    meta.expire_uploads(ttl=-1)                     # everything counts as old
    assert meta.get_upload(user, "/old") is None
    assert meta.get_upload(user, "/held") is not None


def test_publish_into_a_folder_removed_meanwhile_is_not_found(
        meta: MetaStore, user: str) -> None:
    meta.mkdir(user, "/d")
    up, _ = _begin(meta, user, "/d/f")
    token = meta.locks.acquire(up.id)  # type: ignore[attr-defined]
    meta.rmdir(user, "/d")
    with pytest.raises(NotFound):
        meta.publish(up.id, token, SHA)  # type: ignore[arg-type]
    assert meta.get_upload(user, "/d/f") is not None       # nothing half-published


# ----------------------------------------------------------------- outages
@pytest.mark.slow
def test_postgresql_restart_the_layer_reconnects_by_itself(
        pg_service: PostgresService, meta: MetaStore, user: str) -> None:
    meta.mkdir(user, "/before")
    pg_service.stop()
    try:
        with pytest.raises(StorageIOError) as info:
            meta.mkdir(user, "/during")
        assert info.value.code == "IO_ERROR"
    finally:
        pg_service.start()
    meta.mkdir(user, "/after")
    assert {n.name for n in meta.ls(user, "/")} == {"before", "after"}


@pytest.mark.slow
def test_upload_locks_reconnect_after_a_postgresql_restart(
        pg_service: PostgresService, meta: MetaStore, user: str) -> None:
    up, _ = _begin(meta, user, "/f")
    old = meta.locks.acquire(up.id)  # type: ignore[attr-defined]
    assert old is not None
    pg_service.restart()
    # The old session and its lock died with the restart: its token fences nothing now.
    with pytest.raises(UploadBusy):
        meta.record_part(up.id, old, Part(1, 5 * MIB, '"e"'))  # type: ignore[attr-defined]
    meta.locks.release(up.id)  # type: ignore[attr-defined]
    new = meta.locks.acquire(up.id)  # type: ignore[attr-defined]
    assert new is not None and new != old
    meta.record_part(up.id, new, Part(1, 5 * MIB, '"e"'))  # type: ignore[attr-defined]
