"""BLAKE3 negotiated at ``hello`` (issue 17), over the wire: the choice both ways,
verification under BLAKE3 exactly as under SHA-256, and hostile digest fields.

The in-process daemon lets one test take BLAKE3 away from its store, as the
object-store backend does."""

from __future__ import annotations

import hashlib
import os

import pytest
from blake3 import blake3 as b3

import protocol.messages as m
from protocol import encode, encode_control, encode_data
from tests.wire import Wire

USER, PASSWORD = "alice", "correct horse"
BOTH = ("blake3", "sha256")


def b3hex(data: bytes) -> str:
    return b3(data).hexdigest()


@pytest.fixture
def daemon(inproc_server):
    d = inproc_server()
    d.add_user(USER, PASSWORD, quota=50 << 20)
    return d


def hello(daemon, digests=BOTH) -> tuple[Wire, m.HelloOk]:
    """A connection whose hello offers ``digests`` (None: the field left out)."""
    wire = Wire(daemon.host, daemon.port, hello=False)
    reply = wire.call(m.Hello(id=wire.next_id(), protocol=1, client="test", digests=digests))
    assert isinstance(reply, m.HelloOk), reply
    return wire, reply


@pytest.fixture
def conn(daemon):
    wire, reply = hello(daemon)
    assert reply.digest == "blake3"
    with wire:
        wire.logged_in(USER, PASSWORD)
        yield wire


def put_blake3(conn: Wire, path: str, data: bytes, digest: str) -> object:
    """A put that declares ``digest`` as its BLAKE3 up front; put.done or the error."""
    ready = conn.call(m.Put(id=conn.next_id(), path=path, size=len(data), blake3=digest))
    if not isinstance(ready, m.PutReady):
        return ready
    conn.send_data(data)
    return conn.recv_reply()


# ---------------------------------------------------------------- negotiation


def test_a_client_offering_blake3_gets_blake3(daemon):
    wire, reply = hello(daemon, ("blake3", "sha256"))
    with wire:
        assert reply.digest == "blake3"


def test_a_client_offering_only_sha256_gets_sha256(daemon):
    wire, reply = hello(daemon, ("sha256",))
    with wire:
        assert reply.digest == "sha256"


def test_a_client_that_offers_nothing_gets_sha256_and_the_old_fields(daemon):
    wire, reply = hello(daemon, None)
    with wire:
        assert reply.digest == "sha256"
        wire.logged_in(USER, PASSWORD)
        data = os.urandom(70_000)
        done = wire.put("old.bin", data)
        assert done.sha256 == hashlib.sha256(data).hexdigest() and done.blake3 is None
        ready, got, _ = wire.get("old.bin")
        assert ready.sha256 == done.sha256 and ready.blake3 is None and got == data


def test_unknown_names_in_the_offer_are_ignored(daemon):
    wire, reply = hello(daemon, ("blake4", "sha256"))
    with wire:
        assert reply.digest == "sha256"


def test_a_store_without_blake3_negotiates_sha256(daemon):
    daemon.store.digests = ("sha256",)            # as the object store says
    wire, reply = hello(daemon, BOTH)
    with wire:
        assert reply.digest == "sha256"
        wire.logged_in(USER, PASSWORD)
        refused = put_blake3(wire, "x.bin", b"abc", b3hex(b"abc"))
        assert refused.code == "BAD_REQUEST" and refused.details == {"digest": "sha256"}


# ---------------------------------------------------------------- verification


def test_a_put_declaring_blake3_is_verified_and_answers_it(conn):
    data = os.urandom(3 * (1 << 20) + 5)
    done = put_blake3(conn, "up.bin", data, b3hex(data))
    assert isinstance(done, m.PutDone), done
    assert done.blake3 == b3hex(data) and done.sha256 is None


def test_a_corrupted_upload_is_refused_under_blake3_and_leaves_nothing(conn):
    data = os.urandom(100_000)
    refused = put_blake3(conn, "bad.bin", data, b3hex(data[:-1] + b"!"))
    assert refused.code == "INTEGRITY"
    assert conn.call(m.Stat(id=conn.next_id(), path="bad.bin")).code == "NOT_FOUND"
    assert conn.call(m.Uploads(id=conn.next_id())).uploads == ()


def test_a_deferred_blake3_upload_is_verified_at_commit(conn):
    data = os.urandom(2_000_000)
    conn.call(m.Put(id=1, path="d.bin", size=len(data), defer_blake3=True))
    conn.send_data(data)
    done = conn.call(m.Commit(id=2, blake3=b3hex(data)))
    assert isinstance(done, m.PutDone) and done.blake3 == b3hex(data)


def test_a_deferred_blake3_upload_with_the_wrong_digest_is_integrity(conn):
    conn.call(m.Put(id=1, path="w.bin", size=5, defer_blake3=True))
    conn.send_data(b"hello")
    assert conn.call(m.Commit(id=2, blake3=b3hex(b"hellO"))).code == "INTEGRITY"
    assert conn.call(m.Stat(id=3, path="w.bin")).code == "NOT_FOUND"


def test_a_commit_naming_the_other_digest_is_refused_and_the_upload_goes_on(conn):
    conn.call(m.Put(id=1, path="o.bin", size=5, defer_blake3=True))
    conn.send_data(b"hello")
    refused = conn.call(m.Commit(id=2, sha256=hashlib.sha256(b"hello").hexdigest()))
    assert refused.code == "BAD_REQUEST"
    assert isinstance(conn.call(m.Commit(id=3, blake3=b3hex(b"hello"))), m.PutDone)


def test_an_inline_put_declaring_blake3_is_verified(conn):
    good, bad = b"small and good", b"small and bad"
    conn.send_raw(b"".join([
        encode(m.Put(id=1, path="i1", size=len(good), inline=True, blake3=b3hex(good))),
        encode_data(good),
        encode(m.Put(id=2, path="i2", size=len(bad), inline=True, blake3=b3hex(good))),
        encode_data(bad)]))
    first, second = conn.recv_reply(), conn.recv_reply()
    assert isinstance(first, m.PutDone) and first.blake3 == b3hex(good)
    assert second.code == "INTEGRITY"


def test_get_with_the_blake3_digest_announces_the_files_blake3(conn):
    data = os.urandom(1_500_000)
    conn.put("g.bin", data)                       # declared with SHA-256: a miss, hashed
    ready = conn.call(m.Get(id=conn.next_id(), path="g.bin", digest="blake3"))
    assert ready.blake3 == b3hex(data) and ready.sha256 is None
    parts = []
    while isinstance(event := conn.recv(), bytes):
        parts.append(event)
    assert isinstance(event, m.GetDone) and b"".join(parts) == data
    assert conn.call(m.Hash(id=conn.next_id(), path="g.bin", digest="blake3")).blake3 == \
        b3hex(data)
    assert conn.call(m.Hash(id=conn.next_id(), path="g.bin")).sha256 == \
        hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- hostile


@pytest.mark.parametrize("frame", [
    b'{"cmd":"get","id":7,"path":"f","digest":"md5"}',
    b'{"cmd":"hash","id":7,"path":"f","digest":"md5"}',
    b'{"cmd":"put","id":7,"path":"f","size":3,"blake3":"not hex"}',
    b'{"cmd":"put","id":7,"path":"f","size":3,"blake3":"' + b"A" * 64 + b'"}',
    b'{"cmd":"put","id":7,"path":"f","size":3,"blake3":"' + b"0" * 64
    + b'","sha256":"' + b"0" * 64 + b'"}',
    b'{"cmd":"put","id":7,"path":"f","size":3,"blake3":12}',
    b'{"cmd":"commit","id":7,"blake3":"' + b"0" * 63 + b'"}',
], ids=["get-md5", "hash-md5", "put-not-hex", "put-upper-case", "put-two-digests",
        "put-number", "commit-short"])
def test_an_unknown_digest_or_a_malformed_blake3_is_a_bad_request(conn, frame):
    conn.send_raw(encode_control(frame))
    reply = conn.recv_reply()
    assert reply.code == "BAD_REQUEST" and reply.id == 7
    assert isinstance(conn.call(m.Ping(id=8)), m.Pong)


@pytest.mark.parametrize("digests", [b'"blake3"', b'[1, 2]', b'["' + b"x" * 40 + b'"]',
                                     b"[" + b",".join([b'"sha256"'] * 17) + b"]"],
                         ids=["string", "numbers", "long-name", "too-many"])
def test_a_malformed_offer_in_hello_is_a_bad_request(daemon, digests):
    with Wire(daemon.host, daemon.port, hello=False) as wire:
        wire.send_raw(encode_control(b'{"cmd":"hello","id":1,"protocol":1,"digests":'
                                     + digests + b"}"))
        reply = wire.recv_reply()
        assert reply.code == "BAD_REQUEST" and reply.id == 1


def test_blake3_in_a_sha256_session_is_refused_with_the_sessions_digest(daemon):
    wire, _ = hello(daemon, ("sha256",))
    with wire:
        wire.logged_in(USER, PASSWORD)
        wire.put("f", b"abc")
        for request in (m.Get(id=5, path="f", digest="blake3"),
                        m.Hash(id=6, path="f", digest="blake3"),
                        m.Put(id=7, path="g", size=3, defer_blake3=True)):
            reply = wire.call(request)
            assert reply.code == "BAD_REQUEST" and reply.details == {"digest": "sha256"}
        assert isinstance(wire.call(m.Ping(id=8)), m.Pong)

