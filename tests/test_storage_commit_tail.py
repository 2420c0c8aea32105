"""The end of a large upload's commit: its hash tail and its flush (issue 17, verified).

When the background workers fell behind the writer, a commit is left with a
long stretch to hash and a long stretch to write back.  It runs both at once
(a helper thread flushes while the commit hashes); and an error that a
background flush met is never lost, although the flush consumed it from the
shared open file (Linux reports a writeback error once per open file): the
commit fails and the partial, whose bytes on disk are unknown, is discarded.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading

import pytest

from storage import StorageIOError, Store
from storage.commit import OVERLAP_MIN

#: Bounded wait for the event a test watches (never reached when the code is right).
DEADLINE = 10.0


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "root", scrypt_n=2**4)
    s.create_user("alice", "pw", quota=4 * OVERLAP_MIN)
    yield s
    s.close()


def test_a_commit_flushes_the_file_while_it_hashes_a_long_tail(store, monkeypatch):
    data = os.urandom(OVERLAP_MIN + (1 << 20))
    up = store.begin_upload("alice", "/big", len(data), hashlib.sha256(data).hexdigest())
    up.write(data)                      # no hash_behind: the whole file is the tail
    ino = os.fstat(up.fileno()).st_ino
    flushing = threading.Event()
    seen: list[bool] = []               # per read of the hash: had the flush begun?
    real_fdatasync, real_preadv = os.fdatasync, os.preadv

    def fdatasync(fd: int) -> None:
        if os.fstat(fd).st_ino == ino:
            flushing.set()
        real_fdatasync(fd)

    def preadv(fd: int, buffers, offset: int) -> int:
        # The hash waits (boundedly) for a flush to begin: only a concurrent one can.
        seen.append(flushing.wait(DEADLINE) if not seen else flushing.is_set())
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "preadv", preadv)
    result = up.commit()
    assert result.size == len(data)
    assert seen[0] is True


def test_an_error_a_background_flush_met_fails_the_commit_and_drops_the_partial(store,
                                                                               monkeypatch):
    data = b"x" * 4096
    up = store.begin_upload("alice", "/f", len(data), hashlib.sha256(data).hexdigest())
    up.write(data)

    def failing(_fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    assert up.flush() == 0              # the worker's flush: the error is noted, not lost
    monkeypatch.undo()
    with pytest.raises(StorageIOError):
        up.commit()                     # its own fsync succeeds: the noted error fails it
    assert not os.path.exists(os.path.join(store.root, "homes", "alice", "f"))
    again = store.begin_upload("alice", "/f", len(data), hashlib.sha256(data).hexdigest())
    assert again.offset == 0            # which bytes reached the disk is unknown: none kept
    again.release()
