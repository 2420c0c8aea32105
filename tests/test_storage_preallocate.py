"""A large upload's blocks are allocated by its first background flush (issue 17).

ext4's delayed allocation costs every ``write`` a per-page reservation and every
flush an allocation; allocating the rest of the partial at once takes that off
the reactor's writes.  The file's size stays the bytes held (``KEEP_SIZE``), so a
resume starts where it should, and a stream, whose size is only a hint, never
gets blocks past its end.
"""

from __future__ import annotations

import os

import pytest

from storage import Store
from storage.upload import ALLOCATE_MIN

MiB = 1 << 20


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "root", scrypt_n=2**4)
    s.create_user("alice", "pw", quota=8 * ALLOCATE_MIN)
    yield s
    s.close()


def allocated(fd: int) -> int:
    return os.fstat(fd).st_blocks * 512


def test_the_first_flush_of_a_large_upload_allocates_the_rest_of_the_file(store):
    size = 2 * ALLOCATE_MIN
    up = store.begin_upload("alice", "/big", size, None)
    up.write(b"x" * MiB)
    up.flush()
    assert allocated(up.fileno()) >= size
    assert os.fstat(up.fileno()).st_size == MiB
    up.release()


def test_a_resumed_upload_starts_at_the_bytes_held_after_the_allocation(store):
    size = 2 * ALLOCATE_MIN
    up = store.begin_upload("alice", "/big", size, None)
    up.write(b"x" * MiB)
    up.flush()
    up.release()
    again = store.begin_upload("alice", "/big", size, None)
    assert again.offset == MiB
    again.release()


def test_a_stream_gets_no_blocks_past_its_end(store):
    up = store.begin_stream("alice", "/s", size_hint=4 * ALLOCATE_MIN)
    up.write(b"x" * MiB)
    up.flush()
    assert allocated(up.fileno()) < ALLOCATE_MIN
    up.abort()
