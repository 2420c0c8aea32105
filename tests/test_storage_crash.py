"""Hard failures: SIGKILL in the middle of writing, and a really full file system."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storage import NoSpace, Store

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
