"""A node through outages of its services: SeaweedFS killed mid-upload, PostgreSQL restarted.

A real ``ftpd serve`` (subprocess) on the session's real SeaweedFS and
PostgreSQL.  The promises (issue 18): during an outage a client gets a clean
``IO_ERROR`` -- never a crashed daemon, a closed session or a half-published
file -- and once the service is back the node works again without a restart,
and an interrupted upload resumes from its recorded parts and verifies.

The services are the ones tests/objstore_services.py started for this session;
only they are stopped and started again here (by their own PIDs), and always
started again before the test ends.
"""

from __future__ import annotations

import hashlib
import select
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("boto3", reason="needs the objstore extra: pip install -e '.[objstore]'")
pytest.importorskip("psycopg", reason="needs the objstore extra: pip install -e '.[objstore]'")

import protocol.messages as m
from storage.objstore.store import ObjectStore
from tests.daemon import TEST_SCRYPT_N
from tests.objstore_services import S3_ACCESS_KEY, S3_SECRET_KEY, unique_name
from tests.wire import Wire

MIB = 1 << 20
PASSWORD = "outage-test-pw"


@pytest.fixture
def node(server_factory: Any, pg_database: str, s3_service: Any, s3_bucket: str,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, ObjectStore]]:
    """One daemon on the object backend, and a store to look at what it shares."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    blob_url = f"s3://{s3_bucket}?endpoint={s3_service.endpoint}&region=us-east-1"
    store = ObjectStore(pg_database, blob_url, scrypt_n=TEST_SCRYPT_N)
    # A short wait for PostgreSQL, so that an outage answers IO_ERROR after one second.
    daemon = server_factory(metadata_url=pg_database, blob_url=blob_url, metadata_timeout=1.0)
    yield daemon, store
    store.close()


def _login(daemon: Any, store: ObjectStore) -> tuple[Wire, str]:
    user = unique_name("o")
    store.create_user(user, PASSWORD, quota=1 << 30)
    w = Wire(daemon.host, daemon.port, timeout=60)
    assert isinstance(w.login(user, PASSWORD), m.LoginOk)
    return w, user


def _data(size: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 4096
    return (block * (size // len(block) + 1))[:size]


def _recorded(store: ObjectStore, user: str, path: str, deadline: float = 60.0) -> int:
    """The recorded offset of ``path``'s upload once a part is durable (> 0)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        offsets = [p.offset for p in store.list_uploads(user) if p.path == path]
        if offsets and offsets[0] > 0:
            return offsets[0]
        time.sleep(0.05)
    raise AssertionError(f"no part of {path} was recorded within {deadline}s")


def _nothing_to_read(w: Wire) -> bool:
    """No reply has arrived on ``w`` yet (none buffered, none on the socket)."""
    pending = getattr(w.sock, "pending", None)          # TLS: bytes already decrypted
    if pending is not None and pending():
        return False
    return not select.select([w.sock], [], [], 0)[0]


def _pings(w: Wire) -> bool:
    reply = w.call(m.Ping(id=w.next_id(), payload="alive?"))
    return isinstance(reply, m.Pong)


def test_an_upload_cut_by_an_s3_outage_is_io_error_and_resumes_once_s3_is_back(
        node: tuple[Any, ObjectStore], s3_service: Any) -> None:
    daemon, store = node
    w, user = _login(daemon, store)
    data = _data(20 * MIB, seed=1)                   # a 16 MiB part and a 4 MiB tail
    assert isinstance(w.put("/big", data, stop_at=18 * MIB), m.PutReady)
    recorded = _recorded(store, user, "/big")
    s3_service.stop()                                # SIGKILL, mid-upload
    try:
        w.send_data(data[18 * MIB:])                 # the last part cannot go out
        reply = w.recv_reply()
        assert isinstance(reply, m.ErrorReply) and reply.code == "IO_ERROR", reply
        assert _pings(w)                             # same session, same daemon
        missing = w.call(m.Stat(id=w.next_id(), path="/big"))
        assert isinstance(missing, m.ErrorReply) and missing.code == "NOT_FOUND"
    finally:
        s3_service.start()
    ready = w.call(m.Put(id=w.next_id(), path="/big", size=len(data),
                         sha256=hashlib.sha256(data).hexdigest()))
    assert isinstance(ready, m.PutReady) and ready.offset == recorded > 0
    w.send_data(data[ready.offset:])
    done = w.recv_reply()
    assert isinstance(done, m.PutDone) and done.sha256 == hashlib.sha256(data).hexdigest()
    _, got, _ = w.get("/big")
    assert got == data
    w.close()


def test_a_postgresql_outage_is_io_error_and_the_node_recovers_without_a_restart(
        node: tuple[Any, ObjectStore], pg_service: Any) -> None:
    daemon, store = node
    w, user = _login(daemon, store)
    assert isinstance(w.put("/before", b"one"), m.PutDone)
    with Wire(daemon.host, daemon.port, timeout=60) as first:
        token = first.login(user, PASSWORD, want_token=True)
    assert isinstance(token, m.LoginOk) and token.token
    pg_service.stop()                                # every connection of the node is cut
    try:
        reply = w.call(m.Mkdir(id=w.next_id(), path="/after"))
        assert isinstance(reply, m.ErrorReply) and reply.code == "IO_ERROR", reply
        assert _pings(w)                             # the session goes on
        # A token login waits for the database on a worker, never on the reactor: a
        # ping sent after it is answered while it still waits.
        other = Wire(daemon.host, daemon.port, timeout=60)
        other.send(m.Login(id=other.next_id(), token=token.token))
        assert _pings(w)
        assert _nothing_to_read(other), "the token login was answered before the ping"
        refused = other.recv_reply()
        assert isinstance(refused, m.ErrorReply) and refused.code == "IO_ERROR", refused
        other.close()
    finally:
        pg_service.start()
    # The pool replaces its dead connections, the lock session reconnects: the same
    # session goes on, with a tree change, an upload (lock + publish) and a new login.
    assert isinstance(w.call(m.Mkdir(id=w.next_id(), path="/after")), m.MkdirOk)
    assert isinstance(w.put("/after/two", b"two"), m.PutDone)
    listing = w.call(m.Ls(id=w.next_id(), path="/"))
    assert isinstance(listing, m.LsOk)
    assert {e.name for e in listing.entries} == {"before", "after"}
    assert store.list_uploads(user) == []
    w2 = Wire(daemon.host, daemon.port, timeout=60)
    assert isinstance(w2.login(user, PASSWORD), m.LoginOk)
    w.close()
    w2.close()
