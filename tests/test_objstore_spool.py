"""The object backend's local spool is bounded (docs/OBJSTORE.md, docs/SECURITY.md).

Bytes of an upload wait in a local spool file until a whole part goes to S3.
A client faster than the object store (or an object store that is down) must
not fill the node's disk: each upload holds at most ``MAX_WAITING_PARTS``
full parts not yet sent, and all uploads of a node together at most
``spool_limit`` bytes.  Past either, the write is ``IO_ERROR``, the writer
ends and its spool is freed; the upload resumes later from its recorded parts.
Well before that, an upload with parts waiting says it is ``backlogged`` and
the daemon stops reading it until a flush has sent them (ftpd/transfers.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from storage import StorageIOError
from tests.storage_backends import object_only

MIB = 1 << 20


@pytest.fixture
def store(make_store):
    s = make_store(scrypt_n=16, spool_limit=3 * MIB)
    s.create_user("alice", "pw", quota=1 << 30)
    return s


@object_only
def test_an_upload_that_outruns_the_object_store_is_io_error_and_stays_resumable(make_store):
    from storage.objstore.upload import MAX_WAITING_PARTS

    store = make_store(scrypt_n=16)
    store.create_user("alice", "pw", quota=1 << 30)
    part = store.part_size
    up = store.begin_upload("alice", "/big", (MAX_WAITING_PARTS + 2) * part, None)
    up.write(bytes(MAX_WAITING_PARTS * part))          # never flushed: all still local
    with pytest.raises(StorageIOError) as info:
        up.write(bytes(part))                           # one more full part waiting
    assert info.value.code == "IO_ERROR"
    assert not up.active and store.spooled == 0
    again = store.begin_upload("alice", "/big", (MAX_WAITING_PARTS + 2) * part, None)
    assert (again.offset, again.restarted) == (0, False)
    again.release()


@object_only
def test_the_uploads_of_a_node_share_one_spool_budget(store):
    a = store.begin_upload("alice", "/a", 10 * MIB, None)
    a.write(bytes(2 * MIB))
    b = store.begin_upload("alice", "/b", 10 * MIB, None)
    b.write(bytes(MIB))
    with pytest.raises(StorageIOError):
        b.write(b"x")                                   # 3 MiB + 1 in all
    assert not b.active and a.active
    assert store.spooled == 2 * MIB                     # b's spool was given back
    a.release()
    assert store.spooled == 0


@object_only
def test_an_upload_with_parts_waiting_for_s3_asks_the_daemon_to_stop_reading(make_store):
    from storage.objstore.upload import MAX_WAITING_PARTS

    store = make_store(scrypt_n=16)
    store.create_user("alice", "pw", quota=1 << 30)
    part = store.part_size
    up = store.begin_upload("alice", "/big", (MAX_WAITING_PARTS + 2) * part, None)
    up.write(bytes((MAX_WAITING_PARTS // 2) * part - 1))
    assert not up.backlogged()
    up.write(b"x")                                      # the parts wait, well before the bound
    assert up.backlogged()
    up.flush()                                          # sent: read on
    assert not up.backlogged()
    up.release()


class _Pool:
    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def submit(self, job: Any, done: Any) -> None:
        self.jobs.append((job, done))


class _Upload:
    """Just what ``UploadTransfer`` asks of an upload; ``waiting`` parts wait for S3."""

    hasher = None
    offset = 0
    size = 100 << 20
    path = "/big"
    waiting = 0

    def expect_hash_later(self) -> None: ...

    def complete(self) -> bool:
        return False

    def flush(self) -> int:
        self.waiting = 0
        return self.offset

    def backlogged(self) -> bool:
        return self.waiting >= 2


def test_a_backlogged_upload_is_flushed_below_the_writeback_step_and_reading_resumes_after():
    from ftpd.transfers import UploadTransfer

    pool = _Pool()
    ctx = SimpleNamespace(pool=pool, config=SimpleNamespace(writeback_bytes=64 << 20))
    request = SimpleNamespace(defer_sha256=False, mtime=None, mode=None)
    upload = _Upload()
    transfer = UploadTransfer(ctx, request, upload)     # type: ignore[arg-type]
    settled: list[bool] = []
    transfer.on_flushed = lambda: settled.append(transfer.backlogged())
    upload.offset, upload.waiting = 32 << 20, 2         # half the writeback step, 2 parts
    assert transfer.backlogged()                        # the session stops reading
    transfer.catch_up()
    [(job, done)] = pool.jobs                           # flushed although below the step
    done(job(), None)
    assert settled == [False]                           # told, and no longer backlogged
