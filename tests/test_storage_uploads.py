"""Resumable uploads: begin/resume/restart, writes, commit, quota, abort, expiry.

On both backends (tests/storage_backends.py).  Where they differ by design,
``resumable()`` says where an upload resumes (every byte held locally, the
parts sent on the object backend); tests of the partial file itself (its
descriptor, injected write errors, its hash-behind) are the local backend's.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import threading

import pytest

from storage import (
    Exists,
    IntegrityError,
    IsADirectory,
    NoSpace,
    NotFound,
    OffsetMismatch,
    QuotaExceeded,
    StorageIOError,
    Store,
    UploadBusy,
)
from storage.partials import part_name
from tests.storage_backends import local_only, read_back, resumable


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeClock:
    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


@pytest.fixture
def store(make_store, clock):
    # Folders cost nothing here (folder_cost=0): these tests count file bytes against a
    # 1000-byte quota; tests/test_storage_quota_*.py cover the cost of folders.
    s = make_store(scrypt_n=2**4, default_quota=1000, partial_ttl=3600, clock=clock,
                   folder_cost=0)
    s.create_user("alice", "pw")
    return s


def read(store: Store, path: str) -> bytes:
    return read_back(store, "alice", path)


def put(store: Store, path: str, data: bytes, overwrite: bool = False) -> None:
    up = store.begin_upload("alice", path, len(data), sha(data), overwrite=overwrite)
    up.write(data)
    up.commit()


def test_new_upload_starts_at_zero_and_commits(store):
    data = b"hello world"
    up = store.begin_upload("alice", "/f.txt", len(data), sha(data))
    assert (up.user, up.path, up.size, up.sha256, up.offset, up.restarted) == (
        "alice", "/f.txt", 11, sha(data), 0, False)
    assert up.write(data) == 11 and up.offset == 11 and up.complete()
    result = up.commit()
    assert (result.path, result.size, result.sha256) == ("/f.txt", 11, sha(data))
    assert read(store, "/f.txt") == data
    assert store.list_uploads("alice") == []
    assert not up.active


def test_partial_is_not_visible_at_the_target(store):
    up = store.begin_upload("alice", "/f", 10, None)
    up.write(b"12345")
    assert store.list_dir("alice", "/") == []
    with pytest.raises(NotFound):
        store.stat("alice", "/f")
    up.release()


def test_released_upload_resumes_at_the_bytes_held(store, clock):
    data = bytes(range(200))
    up = store.begin_upload("alice", "/f", 200, sha(data))
    up.write(data[:77])
    up.flush()
    clock.now += 5
    up.release()
    up.release()  # idempotent
    held = resumable(store, 77)
    [info] = store.list_uploads("alice")
    assert (info.path, info.size, info.offset, info.sha256) == ("/f", 200, held, sha(data))
    again = store.begin_upload("alice", "f", 200, sha(data))
    assert (again.offset, again.restarted) == (held, False)
    again.write(data[held:])
    again.commit()
    assert read(store, "/f") == data


def test_resume_survives_reopening_the_store(store, make_store, clock):
    data = os.urandom(5000)
    store.set_quota("alice", 10_000)
    up = store.begin_upload("alice", "/f", len(data), sha(data))
    up.write(data[:1234])
    up.flush()
    store.close()  # no release: like a crash
    held = resumable(store, 1234)
    with make_store(scrypt_n=2**4, clock=clock) as again:
        up2 = again.begin_upload("alice", "/f", len(data), sha(data))
        assert up2.offset == held
        up2.write(data[held:])
        up2.commit()
        assert read(again, "/f") == data


@pytest.mark.parametrize(("size2", "sha2"), [(200, None), (201, "same"), (200, "other")])
def test_changed_declaration_restarts_from_zero(store, size2, sha2):
    data = bytes(200)
    up = store.begin_upload("alice", "/f", 200, sha(data))
    up.write(data[:50])
    up.release()
    declared = {None: None, "same": sha(data), "other": sha(b"x")}[sha2]
    again = store.begin_upload("alice", "/f", size2, declared)
    assert (again.offset, again.restarted) == (0, True)
    assert store.list_uploads("alice")[0].offset == 0
    again.release()


def test_resume_without_sha_when_both_declarations_have_none(store):
    up = store.begin_upload("alice", "/f", 10, None)
    up.write(b"abc")
    up.flush()
    up.release()
    again = store.begin_upload("alice", "/f", 10, None)
    assert (again.offset, again.restarted) == (resumable(store, 3), False)
    again.release()


# Local only: a partial file lengthened on disk.
@local_only
def test_partial_longer_than_size_is_cut_back(store, root):
    up = store.begin_upload("alice", "/f", 10, None)
    up.release()
    part = root / "staging" / "alice" / part_name("/f")
    part.write_bytes(b"x" * 25)
    again = store.begin_upload("alice", "/f", 10, None)
    assert again.offset == 10 and part.stat().st_size == 10
    again.release()


def test_write_past_size_writes_nothing(store):
    up = store.begin_upload("alice", "/f", 5, None)
    up.write(b"abc")
    with pytest.raises(OffsetMismatch) as info:
        up.write(b"def")
    assert info.value.details["expected"] == 3
    assert up.offset == 3
    up.flush()
    assert store.list_uploads("alice")[0].offset == resumable(store, 3)
    up.release()


def test_write_at_wrong_offset_writes_nothing(store):
    up = store.begin_upload("alice", "/f", 10, None)
    up.write(b"abc")
    for wrong in (0, 2, 4, 100):
        with pytest.raises(OffsetMismatch) as info:
            up.write_at(wrong, b"zz")
        assert info.value.details == {"expected": 3, "got": wrong}
    up.flush()
    assert up.offset == 3 and store.list_uploads("alice")[0].offset == resumable(store, 3)
    assert up.write_at(3, b"de") == 2 and up.offset == 5
    up.release()


def test_write_accepts_memoryview_bytearray_and_typed_views(store):
    data = bytes(range(16))
    up = store.begin_upload("alice", "/f", 32, None)
    up.write(memoryview(data)[:8])
    up.write(bytearray(data[8:]))
    up.write(memoryview(bytearray(data)).cast("I"))  # 4-byte items: counted in bytes
    assert up.offset == 32
    up.commit()
    assert read(store, "/f") == data + data


# Local only: short os.write calls to the partial file.
@local_only
def test_short_writes_are_completed(store, monkeypatch):
    up = store.begin_upload("alice", "/f", 100, None)
    real_write = os.write

    def short_write(fd, data):
        return real_write(fd, bytes(data)[:7]) if fd == up.fileno() else real_write(fd, data)

    monkeypatch.setattr(os, "write", short_write)
    data = os.urandom(100)
    assert up.write(data) == 100
    monkeypatch.undo()
    up.commit()
    assert read(store, "/f") == data


# Local only: os.write to the partial file.
@local_only
def test_injected_enospc_keeps_partial_consistent_and_resumable(store, monkeypatch):
    data = os.urandom(900)
    up = store.begin_upload("alice", "/f", 900, sha(data))
    fd = up.fileno()
    real_write = os.write
    budget = [250]

    def filling_write(f, buf):
        if f != fd:
            return real_write(f, buf)
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(f, bytes(buf)[: budget[0]])
        budget[0] -= n
        return n

    monkeypatch.setattr(os, "write", filling_write)
    up.write(data[:100])
    with pytest.raises(NoSpace) as info:
        up.write(data[100:400])
    assert up.offset == 250 == info.value.details["offset"]
    assert os.fstat(fd).st_size == 250
    monkeypatch.undo()  # space freed
    up.write_at(250, data[250:])
    up.commit()
    assert read(store, "/f") == data


# Local only: os.write to the partial file.
@local_only
def test_other_write_errors_are_io_errors(store, monkeypatch):
    up = store.begin_upload("alice", "/f", 10, None)
    fd = up.fileno()
    real_write = os.write

    def failing(f, buf):
        if f == fd:
            raise OSError(errno.EIO, "I/O error")
        return real_write(f, buf)

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(StorageIOError):
        up.write(b"abc")
    assert up.offset == 0
    monkeypatch.undo()
    up.release()


def test_commit_refuses_incomplete_upload_and_keeps_it(store):
    up = store.begin_upload("alice", "/f", 10, None)
    up.write(b"abc")
    with pytest.raises(IntegrityError) as info:
        up.commit()
    assert info.value.details["expected"] == 10 and info.value.details["got"] == 3
    assert up.active
    up.flush()
    up.release()
    assert store.list_uploads("alice")[0].offset == resumable(store, 3)


def test_commit_with_wrong_sha_discards_the_partial(store):
    data = b"real"
    up = store.begin_upload("alice", "/f", 4, sha(b"fake"))
    up.write(data)
    with pytest.raises(IntegrityError) as info:
        up.commit()
    assert info.value.details["got"] == sha(data)
    assert not up.active
    assert store.list_uploads("alice") == []
    assert store.usage("alice").reserved == 0
    with pytest.raises(NotFound):
        store.stat("alice", "/f")


# Local only: the object backend hashes every upload as it sends its parts, so it always
# knows the SHA-256 at commit (no hashing to skip).
@local_only
def test_commit_without_declared_sha_skips_hashing_and_hash_is_computed_on_demand(store):
    up = store.begin_upload("alice", "/f", 3, None)
    up.write(b"abc")
    assert up.commit().sha256 is None
    assert store.cached_hash("alice", "/f") is None
    assert store.file_hash("alice", "/f") == (sha(b"abc"), 3)
    assert store.cached_hash("alice", "/f") == (sha(b"abc"), 3)


def test_empty_upload_commits(store):
    up = store.begin_upload("alice", "/empty", 0, sha(b""))
    assert up.complete()
    up.commit()
    assert read(store, "/empty") == b""


# Local only: the staging folder on disk.
@local_only
def test_commit_is_durable_and_leaves_no_partial(store, root):
    put(store, "/f", b"data")
    assert os.listdir(root / "staging" / "alice") == []


def test_begin_refuses_existing_target_without_overwrite(store):
    put(store, "/f", b"old")
    with pytest.raises(Exists):
        store.begin_upload("alice", "/f", 3, None)


def test_an_existing_target_is_exists_before_a_running_writer_is_upload_busy(store):
    """The target checks come before the writer check, also when the upload would
    resume a running one: without ``overwrite`` a file there is ``Exists`` on both
    backends (the object backend said ``UploadBusy``; the state machine found it)."""
    put(store, "/f", b"old")
    data = b"new!"
    writer = store.begin_upload("alice", "/f", len(data), sha(data), overwrite=True)
    try:
        with pytest.raises(Exists):
            store.begin_upload("alice", "/f", len(data), sha(data))
        with pytest.raises(Exists):             # another declaration: it would replace
            store.begin_upload("alice", "/f", 3, None)
        with pytest.raises(UploadBusy):
            store.begin_upload("alice", "/f", len(data), sha(data), overwrite=True)
    finally:
        writer.release()


def test_begin_refuses_folders_and_missing_parents(store):
    store.mkdir("alice", "/d")
    with pytest.raises(IsADirectory):
        store.begin_upload("alice", "/d", 3, None, overwrite=True)
    with pytest.raises(IsADirectory):
        store.begin_upload("alice", "/", 3, None)
    with pytest.raises(NotFound):
        store.begin_upload("alice", "/nope/f", 3, None)


@pytest.mark.parametrize(("size", "digest"), [(-1, None), (1.5, None), (True, None),
                                             (3, "abc"), (3, "g" * 64), (3, 123)])
def test_begin_refuses_bad_declarations(store, size, digest):
    with pytest.raises(ValueError):
        store.begin_upload("alice", "/f", size, digest)


def test_begin_accepts_upper_case_sha(store):
    up = store.begin_upload("alice", "/f", 1, sha(b"x").upper())
    assert up.sha256 == sha(b"x")
    up.release()


def test_overwrite_replaces_the_target(store):
    put(store, "/f", b"old content")
    put(store, "/f", b"new", overwrite=True)
    assert read(store, "/f") == b"new"
    assert store.usage("alice").used == 3


def test_target_created_meanwhile_is_not_replaced_without_overwrite(store):
    up = store.begin_upload("alice", "/f", 3, None)
    up.write(b"abc")
    put(store, "/other", b"theirs")
    store.rename("alice", "/other", "/f")
    with pytest.raises(Exists):
        up.commit()
    assert read(store, "/f") == b"theirs"
    assert not up.active  # released by the failed commit (issue 13, item 2) ...
    up.release()          # ... so a late release is harmless
    assert store.list_uploads("alice")[0].offset == 3   # and it is still resumable


def test_target_that_became_a_folder_is_refused_at_commit(store):
    up = store.begin_upload("alice", "/f", 1, None, overwrite=True)
    up.write(b"x")
    store.mkdir("alice", "/f")
    with pytest.raises(IsADirectory):
        up.commit()
    up.release()


def test_second_begin_while_active_is_busy(store):
    up = store.begin_upload("alice", "/f", 10, None)
    with pytest.raises(UploadBusy):
        store.begin_upload("alice", "/./f", 10, None)
    with pytest.raises(UploadBusy):
        store.abort_upload("alice", "/f")
    up.release()
    store.begin_upload("alice", "/f", 10, None).release()


def test_finished_upload_refuses_further_use(store):
    up = store.begin_upload("alice", "/f", 1, None)
    up.write(b"x")
    up.commit()
    calls = [lambda: up.write(b""), lambda: up.commit(), up.abort]
    if hasattr(up, "fileno"):                       # the local partial's descriptor
        calls.append(up.fileno)
    for call in calls:
        with pytest.raises(StorageIOError):
            call()
    up.release()  # harmless


def test_abort_upload_discards_partial_and_reservation(store, root, backend):
    up = store.begin_upload("alice", "/f", 100, None)
    up.write(b"x" * 10)
    up.release()
    assert store.usage("alice").reserved == 100
    assert store.abort_upload("alice", "f") == "/f"
    assert store.list_uploads("alice") == []
    assert store.usage("alice").reserved == 0
    if backend == "local":
        assert os.listdir(root / "staging" / "alice") == []
    with pytest.raises(NotFound):
        store.abort_upload("alice", "/f")


def test_upload_abort_method_ends_the_writer_and_discards(store):
    up = store.begin_upload("alice", "/f", 100, None)
    up.write(b"x")
    up.abort()
    assert store.list_uploads("alice") == [] and store.usage("alice").reserved == 0
    assert store.begin_upload("alice", "/f", 100, None).offset == 0


def test_expire_removes_only_inactive_partials_older_than_ttl(store, clock, root, backend):
    old = store.begin_upload("alice", "/old", 10, None)
    old.write(b"abc")
    old.release()
    active = store.begin_upload("alice", "/active", 10, None)
    clock.now += 1800
    recent = store.begin_upload("alice", "/recent", 10, None)
    recent.release()
    assert store.expire_uploads() == 0
    stray = root / "staging" / "alice" / ("0" * 64 + ".part")
    if backend == "local":      # a partial file without a row: only the local backend has files
        stray.write_bytes(b"orphan")
        os.utime(stray, (clock.now - 7200, clock.now - 7200))
    clock.now += 2000
    assert store.expire_uploads() == (2 if backend == "local" else 1)  # /old (+ the stray)
    assert [p.path for p in store.list_uploads("alice")] == ["/active", "/recent"]
    assert not stray.exists()
    assert store.usage("alice").reserved == 20
    assert store.expire_uploads(now=clock.now + 10_000) == 1  # /recent; /active is in use
    active.release()


def test_quota_is_reserved_at_begin_with_free_in_details(store):
    store.begin_upload("alice", "/a", 600, None).release()
    assert store.usage("alice").reserved == 600 and store.usage("alice").free == 400
    with pytest.raises(QuotaExceeded) as info:
        store.begin_upload("alice", "/b", 401, None)
    assert info.value.details == {"free": 400, "needed": 401}
    store.begin_upload("alice", "/b", 400, None).release()
    assert store.usage("alice").free == 0


def test_quota_refusal_keeps_the_old_partial(store):
    up = store.begin_upload("alice", "/a", 500, None)
    up.write(b"x" * 100)
    up.flush()
    up.release()
    with pytest.raises(QuotaExceeded):
        store.begin_upload("alice", "/a", 1001, None)
    assert store.list_uploads("alice")[0].offset == resumable(store, 100)


def test_resuming_does_not_count_its_own_reservation_twice(store):
    store.begin_upload("alice", "/a", 1000, None).release()
    store.begin_upload("alice", "/a", 1000, None).release()
    assert store.usage("alice").reserved == 1000


def test_commit_moves_reservation_to_used(store):
    put(store, "/a", b"x" * 300)
    usage = store.usage("alice")
    assert (usage.used, usage.reserved, usage.free) == (300, 0, 700)


def test_replacing_reserves_the_whole_size_and_counts_only_the_difference(store):
    # Issue 13, item 3: an overwrite reserves its whole size (it used to reserve only
    # the growth, 100 here, so abandoned partials of overwrites were never covered).
    put(store, "/a", b"x" * 400)
    up = store.begin_upload("alice", "/a", 500, None, overwrite=True)
    assert store.usage("alice").reserved == 500
    up.write(b"y" * 500)
    up.commit()
    assert store.usage("alice").used == 500
    put(store, "/a", b"z" * 50, overwrite=True)
    assert store.usage("alice").used == 50


def test_remove_gives_space_back_for_new_uploads(store):
    put(store, "/a", b"x" * 900)
    with pytest.raises(QuotaExceeded):
        store.begin_upload("alice", "/b", 200, None)
    store.remove("alice", "/a")
    store.begin_upload("alice", "/b", 200, None).release()


def test_concurrent_begins_never_exceed_quota(store):
    store.set_quota("alice", 1000)
    barrier = threading.Barrier(10)
    results: list[object] = []
    lock = threading.Lock()

    def begin(i: int) -> None:
        barrier.wait()
        try:
            up = store.begin_upload("alice", f"/f{i}", 300, None)
            up.release()
            outcome: object = "ok"
        except QuotaExceeded as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=begin, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 3
    assert len(results) == 10
    usage = store.usage("alice")
    assert usage.used + usage.reserved == 900 <= usage.limit


def test_reservations_survive_reopening(store, make_store):
    store.begin_upload("alice", "/a", 700, None)  # never released: "crash"
    store.close()
    with make_store(scrypt_n=2**4) as again:
        assert again.usage("alice").reserved == 700
        with pytest.raises(QuotaExceeded):
            again.begin_upload("alice", "/b", 301, None)


# Local only: the local commit's crash point and staging folder (the object
# backend's are in tests/test_storage_crash.py).
@local_only
def test_interrupted_commit_is_finished_at_start_up(store, root, monkeypatch):
    """Crash after the rename but before the accounting: the next Store completes it."""
    data = b"payload"
    up = store.begin_upload("alice", "/f", len(data), sha(data))
    up.write(data)
    from storage import faults

    def crash(step: str) -> None:
        if step == "commit.after_place":
            raise SystemExit("simulated crash")

    previous = faults.set_hook(crash)
    try:
        with pytest.raises(SystemExit):
            up.commit()
    finally:
        faults.set_hook(previous)
    store.close()
    with Store(root, scrypt_n=2**4) as again:
        usage = again.usage("alice")
        assert (usage.used, usage.reserved) == (len(data), 0)
        assert again.list_uploads("alice") == []
        assert read(again, "/f") == data
        assert again.cached_hash("alice", "/f") == (sha(data), len(data))
        assert os.listdir(root / "staging" / "alice") == []


# Local only: a commit mark written into the SQLite catalogue.
@local_only
def test_interrupted_commit_before_the_rename_is_rolled_back(store, root):
    """Crash after marking the row but before the rename: the partial stays resumable."""
    up = store.begin_upload("alice", "/f", 3, None)
    up.write(b"abc")
    store.close()
    with sqlite3.connect(root / "users.db") as conn:
        conn.execute("UPDATE uploads SET commit_dev = 1, commit_ino = 2, commit_old = 0")
    with Store(root, scrypt_n=2**4) as again:
        [info] = again.list_uploads("alice")
        assert info.offset == 3
        assert again.usage("alice").used == 0
        resumed = again.begin_upload("alice", "/f", 3, None)
        assert resumed.offset == 3
        resumed.commit()
        assert read(again, "/f") == b"abc"


def test_concurrent_uploads_commits_and_removes_keep_accounting_exact(store, backend):
    store.set_quota("alice", 1 << 30)
    # Each put is ~4 network round trips on the object backend: fewer rounds there.
    writers, rounds = (6, 6) if backend == "local" else (2, 2)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(rounds):
                data = os.urandom(100 * (t + 1) + i)
                put(store, f"/t{t}-{i}", data)
                if i % 2:
                    store.remove("alice", f"/t{t}-{i - 1}")
                    store.rename("alice", f"/t{t}-{i}", f"/t{t}-{i - 1}")
                while True:  # one writer at a time per path: the others retry
                    try:
                        put(store, "/shared", data, overwrite=True)
                        break
                    except UploadBusy:
                        pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    on_disk = sum(e.size for e in store.list_dir("alice", "/"))
    usage = store.usage("alice")
    assert (usage.used, usage.reserved) == (on_disk, 0)


# Local only: the partial file's hasher (the object backend hashes each part as it sends it).
@local_only
def test_catch_up_hashes_behind_the_writer_so_commit_hashes_only_the_tail(store):
    data = os.urandom(900)
    up = store.begin_upload("alice", "/ahead", len(data), sha(data))
    up.write(data[:600])
    assert up.catch_up() == 600 and up.hasher.upto == 600
    up.write(data[600:])
    assert up.commit().sha256 == sha(data)
    assert read(store, "/ahead") == data


# Local only: the partial file's hasher (the object backend hashes each part as it sends it).
@local_only
def test_hash_behind_hashes_what_is_written_so_far(store):
    data = os.urandom(900)
    up = store.begin_upload("alice", "/behind", len(data), sha(data))
    up.write(data[:700])
    assert up.hash_behind() == 700 and up.hasher.upto == 700
    up.write(data[700:])
    assert up.commit().sha256 == sha(data)


# Local only: the partial file's hasher (the object backend hashes each part as it sends it).
@local_only
def test_flush_leaves_the_hash_to_hash_behind(store):
    data = os.urandom(900)
    up = store.begin_upload("alice", "/flushed", len(data), sha(data))
    up.write(data[:700])
    assert up.flush() == 700 and up.hasher.upto == 0
    up.write(data[700:])
    assert up.commit().sha256 == sha(data)


def test_catch_up_after_the_upload_ended_does_nothing(store):
    up = store.begin_upload("alice", "/gone", 10, None)
    up.write(b"12345")
    up.release()
    assert up.catch_up() == 0


# Local only: the partial file's hasher (the object backend hashes each part as it sends it).
@local_only
def test_catch_up_hashes_a_resumed_prefix_too(store):
    data = os.urandom(800)
    first = store.begin_upload("alice", "/resumed", len(data), sha(data))
    first.write(data[:500])
    first.release()
    again = store.begin_upload("alice", "/resumed", len(data), sha(data))
    assert again.offset == 500
    again.catch_up()
    assert again.hasher.upto == 500
    again.write(data[500:])
    assert again.commit().sha256 == sha(data)


def test_catch_up_does_not_hide_a_wrong_declared_hash(store):
    up = store.begin_upload("alice", "/liar", 4, sha(b"abcd"))
    up.write(b"ab")
    up.catch_up()
    up.write(b"zz")
    with pytest.raises(IntegrityError):
        up.commit()


def test_a_hash_named_at_commit_is_verified(store):
    up = store.begin_upload("alice", "/later", 4, None)
    up.expect_hash_later()
    up.write(b"ab")
    up.catch_up()
    up.write(b"cd")
    assert up.commit(sha256=sha(b"abcd")).sha256 == sha(b"abcd")
    assert read(store, "/later") == b"abcd"


def test_a_wrong_hash_named_at_commit_discards_the_partial(store):
    up = store.begin_upload("alice", "/later", 4, None)
    up.write(b"abcd")
    with pytest.raises(IntegrityError):
        up.commit(sha256=sha(b"wxyz"))
    assert store.list_uploads("alice") == []


def test_commit_refuses_a_hash_that_contradicts_the_declared_one(store):
    up = store.begin_upload("alice", "/declared", 4, sha(b"abcd"))
    up.write(b"abcd")
    with pytest.raises(ValueError):
        up.commit(sha256=sha(b"other"))
    assert up.commit(sha256=sha(b"abcd")).sha256 == sha(b"abcd")


def test_a_commit_names_no_digest_when_the_upload_declared_none(store):
    """``CommitResult.sha256`` is the declared digest, None when none was declared, on
    both backends (the object backend returned the one it computed; the state machine
    found it with an empty file)."""
    for path, data in (("/empty", b""), ("/ten", b"0123456789")):
        up = store.begin_upload("alice", path, len(data), None)
        up.write(data)
        try:
            assert up.commit().sha256 is None, path
        finally:
            up.release()
