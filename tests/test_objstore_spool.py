"""The object backend's local spool is bounded (docs/OBJSTORE.md, docs/SECURITY.md).

Bytes of an upload wait in a local spool file until a whole part goes to S3.
A client faster than the object store (or an object store that is down) must
not fill the node's disk: each upload holds at most ``MAX_WAITING_PARTS``
full parts not yet sent, and all uploads of a node together at most
``spool_limit`` bytes.  Past either, the write is ``IO_ERROR``, the writer
ends and its spool is freed; the upload resumes later from its recorded parts.
"""

from __future__ import annotations

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
