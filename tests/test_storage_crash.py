"""Hard failures: SIGKILL in the middle of writing, and a really full file system.

The first tests are the local backend's (a partial file on disk, a tmpfs);
the last one kills an object-backend node at each of its crash points.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage import NoSpace, SmallFile, Store, UploadBusy, faults
from tests.storage_backends import object_only, read_back

REPO = str(Path(__file__).resolve().parent.parent)
SIZE = 16 << 20
SEED = 1234

# The child resumes the same upload and writes odd-sized chunks until killed.
CHILD = r"""
import hashlib, random, sys, time
from storage import Store
root, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = random.Random(seed).randbytes(size)
store = Store(root, scrypt_n=16)
up = store.begin_upload("alice", "/big", size, hashlib.sha256(data).hexdigest())
print(up.offset, flush=True)
view = memoryview(data)
chunks = 0
while not up.complete():
    up.write(view[up.offset: min(size, up.offset + 4099)])
    chunks += 1
    if chunks % 5 == 0:
        time.sleep(0.001)  # ~20 MB/s, so that kills land mid-file
print("done", flush=True)
time.sleep(60)
"""


def content() -> bytes:
    return random.Random(SEED).randbytes(SIZE)


def check_partial(root: Path, data: bytes, previous: int) -> int:
    """Reopen after a kill: offset == bytes on disk, and those bytes are the right ones."""
    with Store(root, scrypt_n=2**4) as store:
        [info] = store.list_uploads("alice")
        up = store.begin_upload("alice", "/big", SIZE, hashlib.sha256(data).hexdigest())
        try:
            assert not up.restarted
            assert up.offset == info.offset == os.fstat(up.fileno()).st_size
            assert previous <= up.offset <= SIZE
            assert os.pread(up.fileno(), up.offset, 0) == data[: up.offset]
            return up.offset
        finally:
            up.release()


@pytest.mark.parametrize("rounds", [5])
def test_sigkill_while_writing_leaves_a_resumable_prefix(tmp_path, rounds):
    root = tmp_path / "root"
    with Store(root, scrypt_n=2**4) as store:
        store.create_user("alice", "pw", quota=SIZE)
    data = content()
    rng = random.Random()
    offset = 0
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for round_no in range(rounds):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), str(SIZE), str(SEED)],
            stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
        try:
            started = child.stdout.readline()
            assert started.strip() == str(offset), f"round {round_no}: child resumed wrongly"
            try:
                child.wait(timeout=rng.uniform(0.0, 0.15))
            except subprocess.TimeoutExpired:
                pass
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        offset = check_partial(root, data, offset)
    with Store(root, scrypt_n=2**4) as store:
        up = store.begin_upload("alice", "/big", SIZE, hashlib.sha256(data).hexdigest())
        assert up.offset == offset
        up.write(memoryview(data)[up.offset:])
        result = up.commit()
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        assert store.file_hash("alice", "/big") == (result.sha256, SIZE)


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs (needs root); skipped where mounting is not allowed."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_real_enospc_keeps_the_partial_resumable(small_fs):
    size = 2 << 20
    data = random.Random(7).randbytes(size)
    digest = hashlib.sha256(data).hexdigest()
    root = small_fs / "root"
    store = Store(root, scrypt_n=2**4)
    try:
        store.create_user("alice", "pw", quota=size)
        up = store.begin_upload("alice", "/f", size, digest)
        with pytest.raises(NoSpace):
            while True:
                up.write(data[up.offset: up.offset + 65536])
        assert 0 < up.offset < size
        assert up.offset == os.fstat(up.fileno()).st_size
        assert os.pread(up.fileno(), up.offset, 0) == data[: up.offset]
        up.release()
        held = store.list_uploads("alice")[0].offset
        assert held == up.offset
    finally:
        store.close()
    # Space is freed: grow the file system, then resume in a new Store.
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_fs)], check=True)
    with Store(root, scrypt_n=2**4) as store:
        again = store.begin_upload("alice", "/f", size, digest)
        assert again.offset == held
        again.write(data[held:])
        assert again.commit().sha256 == digest
        assert store.cached_hash("alice", "/f") == (digest, size)


# ----- the object backend: a node killed at any step of an upload or a collection
# Each child is one node: it replaces /f by an upload, then runs the collector, and dies
# (os._exit at a crash point, as abrupt as SIGKILL for its connections) at ``step``.  The
# test is then another node.  Everything durable is in PostgreSQL and S3, so a kill is the
# only crash there is to simulate.  The children are forked from one process that has
# imported boto3 and psycopg already (~1 s a child otherwise); it holds no thread and no
# connection when it forks.
OBJECT_FORKER = r"""
import hashlib, os, sys
from storage import faults
from storage.objstore.blobs import BlobConfig, BlobStore
from storage.objstore.store import ObjectStore
BlobStore(BlobConfig(bucket="warm-up", endpoint="http://127.0.0.1:9"))  # loads the S3 model
new = b"new!" * 700
for line in sys.stdin:
    metadata, blobs, step = line.split()
    pid = os.fork()
    if pid == 0:
        if step != "none":
            faults.set_hook(faults.exit_at(step))
        store = ObjectStore(metadata, blobs, scrypt_n=16)
        up = store.begin_upload("alice", "/f", len(new), hashlib.sha256(new).hexdigest(),
                                overwrite=True)
        up.write(new)
        up.commit()
        store.expire_uploads()          # the collector deletes the replaced blob
        os._exit(0)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""
OBJECT_STEPS = ["object.after_start_multipart", "object.after_part_sent",
                "object.after_part_recorded", "object.after_complete",
                "object.after_publish", "object.collect_after_delete"]


@pytest.fixture(scope="module")
def object_node_forker() -> Iterator[Callable[[tuple[str, str], str], int]]:
    """``run(urls, step)``: fork a node that runs the child scenario; its exit code."""
    from tests.objstore_services import S3_ACCESS_KEY, S3_SECRET_KEY

    env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET_KEY,
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    forker = subprocess.Popen([sys.executable, "-c", OBJECT_FORKER], cwd=REPO, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(urls: tuple[str, str], step: str) -> int:
        assert forker.stdin is not None and forker.stdout is not None
        forker.stdin.write(f"{urls[0]} {urls[1]} {step}\n")
        forker.stdin.flush()
        return int(forker.stdout.readline())     # EOF (the forker died) fails here

    yield run
    forker.stdin.close()                          # type: ignore[union-attr]
    forker.wait(timeout=30)
    forker.stdout.close()                         # type: ignore[union-attr]


def _begin_once_the_dead_node_let_go(store: Any, data: bytes) -> Any:
    """Resume /f.  The killed node's writer lock is a PostgreSQL advisory lock of
    its session, released when its backend sees the connection gone: on a loaded
    machine that can come a moment after the child's exit (bounded wait)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return store.begin_upload("alice", "/f", len(data),
                                      hashlib.sha256(data).hexdigest(), overwrite=True)
        except UploadBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@object_only
@pytest.mark.parametrize("step", OBJECT_STEPS)
def test_a_node_killed_at_any_object_store_step_keeps_every_promise(
        make_store, objstore_urls, object_node_forker, step):
    store = make_store(scrypt_n=16)
    store.create_user("alice", "pw", quota=1 << 20)
    old, new = b"old" * 100, b"new!" * 700
    before = _bucket_keys(store)                  # other tests' blobs are none of ours
    store.store_small_files("alice", [SmallFile("/f", old)])
    old_blob = store.meta.stat("alice", "/f").blob
    code = object_node_forker(objstore_urls, step)
    assert code == (0 if step == "none" else faults.CRASH_EXIT)
    # The target holds the old file or the new one, and the quota counts exactly that.
    content = read_back(store, "alice", "/f")
    assert content in (old, new)
    uploads = store.list_uploads("alice")
    usage = store.usage("alice")
    assert (usage.used, usage.reserved) == (len(content), sum(p.size for p in uploads))
    # What is left is at most an ordinary unfinished upload, resumable from its parts.
    assert all((p.path, p.size) == ("/f", len(new)) for p in uploads) and len(uploads) <= 1
    assert all(p.offset in (0, len(new)) for p in uploads)
    if content == old:
        up = _begin_once_the_dead_node_let_go(store, new)
        assert (up.offset, up.restarted) == (uploads[0].offset if uploads else 0, False)
        up.write(new[up.offset:])
        up.commit()
    assert read_back(store, "alice", "/f") == new
    assert (store.usage("alice").used, store.usage("alice").reserved) == (len(new), 0)
    # One collection a day on: of this test's blobs only /f's is left, and no multipart
    # upload at all (the child's unrecorded one included).
    store.expire_uploads(now=time.time() + 86400 + store.partial_ttl)
    assert list(store.blobs.list_multipart()) == []
    assert _bucket_keys(store) - before == {store.blobs.key(store.meta.stat("alice", "/f").blob)}
    assert old_blob is not None and store.blobs.key(old_blob) not in _bucket_keys(store)


def _bucket_keys(store: Any) -> set[str]:
    listed = store.blobs._client.list_objects_v2(Bucket=store.blobs.config.bucket)
    assert not listed.get("IsTruncated")
    return {o["Key"] for o in listed.get("Contents", [])}
