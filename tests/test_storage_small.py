"""Store.store_small_files: whole small files stored in groups (the inline puts' group commit).

On both backends (tests/storage_backends.py), except the crash test, whose
steps are the local backend's group commit.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage import (
    Exists,
    IntegrityError,
    NotFound,
    QuotaExceeded,
    SmallFile,
    Store,
    UploadBusy,
    faults,
)
from tests.storage_backends import read_back

REPO = str(Path(__file__).resolve().parent.parent)


@pytest.fixture
def store(make_store):
    s = make_store(scrypt_n=16)
    s.create_user("alice", "pw", quota=1 << 20)
    return s


def test_a_group_of_files_is_stored_visible_and_accounted(store, backend):
    count = 20 if backend == "local" else 5     # the object backend: 4 round trips a file
    files = [SmallFile(f"f{i}", os.urandom(1000 + i)) for i in range(count)]
    results = store.store_small_files("alice", files)
    assert [r.path for r in results] == [f"/f{i}" for i in range(count)]
    for f in files:
        assert read_back(store, "alice", f.path) == f.data
    usage = store.usage("alice")
    assert (usage.used, usage.reserved) == (sum(len(f.data) for f in files), 0)
    assert store.list_uploads("alice") == []


def test_each_file_fails_alone(store):
    store.store_small_files("alice", [SmallFile("taken", b"1")])
    results = store.store_small_files("alice", [
        SmallFile("taken", b"2"), SmallFile("no/dir", b"x"), SmallFile("big", b"b" * (2 << 20)),
        SmallFile("bad", b"abc", sha256="0" * 64),
        SmallFile("good", b"abc", sha256=hashlib.sha256(b"abc").hexdigest())])
    assert [type(r) for r in results[:4]] == [Exists, NotFound, QuotaExceeded, IntegrityError]
    assert results[4].sha256 == hashlib.sha256(b"abc").hexdigest()
    assert store.list_uploads("alice") == []
    assert store.usage("alice").used == 4


def test_two_files_for_one_target_are_stored_in_order(store):
    results = store.store_small_files("alice", [SmallFile("x", b"first"),
                                                SmallFile("x", b"second", overwrite=True),
                                                SmallFile("x", b"third")])
    assert [type(r).__name__ for r in results] == ["CommitResult", "CommitResult", "Exists"]
    assert read_back(store, "alice", "x") == b"second"
    assert store.usage("alice").used == len(b"second")


def test_a_file_replaces_the_unfinished_upload_of_its_path(store):
    up = store.begin_upload("alice", "p", 500, None)
    up.write(b"old" * 10)
    up.release()
    [result] = store.store_small_files("alice", [SmallFile("p", b"new")])
    assert result.size == 3
    assert store.list_uploads("alice") == []
    assert (store.usage("alice").used, store.usage("alice").reserved) == (3, 0)


def test_the_files_of_a_group_share_the_quota_in_order_as_single_commits_would(store):
    """Each file is checked against what the files before it reserved, other unfinished
    uploads count, and the upload a file replaces does not count against it."""
    for path, size in (("p", 600_000), ("o", 100_000)):   # leftovers: 700_000 reserved
        store.begin_upload("alice", path, size, None).release()
    quota = 1 << 20
    fits_last = quota - 100_000 - 700_000
    results = store.store_small_files("alice", [
        SmallFile("p", b"p" * 700_000),          # fits only without its own old reservation
        SmallFile("q", b"q" * (fits_last + 1)),  # one byte more than what p and o leave
        SmallFile("r", b"r" * fits_last)])       # exactly what they leave
    assert [type(r).__name__ for r in results] == ["CommitResult", "QuotaExceeded",
                                                   "CommitResult"]
    usage = store.usage("alice")
    assert (usage.used, usage.reserved) == (700_000 + fits_last, 100_000)


def test_a_path_being_written_by_a_resumable_upload_is_busy(store):
    up = store.begin_upload("alice", "p", 10, None)
    try:
        [result] = store.store_small_files("alice", [SmallFile("p", b"new")])
        assert isinstance(result, UploadBusy)
    finally:
        up.release()


# A child stores a group and dies (os._exit at a crash point, as abrupt as SIGKILL for the
# files and the catalogue) at one step of it; the parent reopens the store, which runs recover().
# Local only: these are the local group commit's steps (the object backend stores each small
# file as one upload; its crash points are tested in tests/test_storage_crash.py).
CHILD = r"""
import os, sys
from storage import SmallFile, Store, faults
root, step = sys.argv[1], sys.argv[2]
if step != "none":
    faults.set_hook(faults.exit_at(step))
store = Store(root, scrypt_n=16)
store.store_small_files("alice", [SmallFile(f"f{i}", bytes([i]) * (3000 + i), overwrite=True)
                                  for i in range(6)])
os._exit(0)
"""


@pytest.mark.parametrize("step", ["group.after_begin", "group.after_place@2",
                                  "group.after_place@6", "group.after_account",
                                  "group.after_dir_fsync", "none"])
def test_a_crash_at_any_step_leaves_complete_files_and_exact_accounting(tmp_path, step):
    root = tmp_path / "root"
    with Store(root, scrypt_n=16) as s:
        s.create_user("alice", "pw", quota=1 << 20)
        s.store_small_files("alice", [SmallFile("f0", b"older", overwrite=True)])
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), step], cwd=REPO,
                          capture_output=True, timeout=60)
    assert proc.returncode == (0 if step == "none" else faults.CRASH_EXIT), proc.stderr
    with Store(root, scrypt_n=16) as s:            # recover() runs here
        folder = root / "homes" / "alice"
        visible = {p.name: p.read_bytes() for p in folder.iterdir()}
        for name, data in visible.items():
            i = int(name[1:])
            assert data in (bytes([i]) * (3000 + i), b"older" if i == 0 else None)
        usage = s.usage("alice")
        partials = s.list_uploads("alice")
        assert usage.used == sum(len(d) for d in visible.values())
        assert usage.reserved <= sum(p.size for p in partials)
        marked = s._ctx.db.one("SELECT COUNT(*) AS n FROM uploads WHERE commit_ino IS NOT NULL")
        assert marked["n"] == 0
        if step == "none":
            assert len(visible) == 6 and partials == []
        # whatever is left is an ordinary partial: storing the group again finishes it
        again = s.store_small_files("alice", [SmallFile(f"f{i}", bytes([i]) * (3000 + i),
                                                        overwrite=True) for i in range(6)])
        assert all(type(r).__name__ == "CommitResult" for r in again)
        assert s.list_uploads("alice") == []
        assert s.usage("alice").used == sum(3000 + i for i in range(6))
        assert s.usage("alice").reserved == 0
