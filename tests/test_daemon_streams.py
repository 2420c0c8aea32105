"""Stream uploads (unknown length) and file metadata (mtime, mode) on the wire
(docs/PROTOCOL.md sections 7.8 and 7.9), against a real daemon."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

import protocol as p
import protocol.messages as m
from tests.wire import Wire

USER, PASSWORD = "sam", "stream pass"
MTIME = 1_234_567_890.5


@pytest.fixture
def daemon(server):
    server.add_user(USER, PASSWORD, quota=8 << 20)
    return server


@pytest.fixture
def conn(daemon):
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        yield wire


def home(daemon, name: str) -> str:
    return os.path.join(daemon.root, "homes", USER, name)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stream_put(conn: Wire, path: str, **fields) -> m.PutReady:
    return conn.call(m.Put(id=conn.next_id(), path=path, stream=True, defer_sha256=True,
                           **fields))


def decode(obj: dict) -> m.Request:
    return p.decode_request(json.dumps(obj).encode())


# ---------------------------------------------------------------- the message layer


@pytest.mark.parametrize("fields", [
    {"stream": True, "defer_sha256": True, "size": 5},       # a stream has no size
    {"stream": True},                                         # nor a digest up front
    {"stream": "yes", "defer_sha256": True},
    {"size": 5, "size_hint": 5},                              # a hint only for a stream
    {"size": 5, "mtime": -1},
    {"size": 5, "mtime": "2020-01-01"},
    {"size": 5, "mtime": True},
    {"size": 5, "mode": -1},
    {"size": 5, "mode": 0o10000},
    {"size": 5, "mode": 1.5},
    {},                                                       # not a stream: size needed
])
def test_malformed_stream_and_metadata_fields_are_bad_request(fields):
    with pytest.raises(p.BadRequest):
        decode({"cmd": "put", "id": 1, "path": "a", **fields})


def test_commit_size_must_be_a_non_negative_integer():
    for size in (-1, "3", 1.5):
        with pytest.raises(p.BadRequest):
            decode({"cmd": "commit", "id": 1, "sha256": "0" * 64, "size": size})


def test_an_ordinary_put_encodes_no_stream_field():
    assert "stream" not in m.Put(id=1, path="a", size=1).to_wire()


def test_hello_reply_announces_streams_and_metadata(daemon):
    with Wire(daemon.host, daemon.port, hello=False) as wire:
        reply = wire.call(m.Hello(id=1, protocol=1))
        assert reply.streams is True and reply.metadata is True


# ---------------------------------------------------------------- streams


def test_a_stream_is_verified_and_published_at_commit(conn, daemon):
    data = os.urandom(3 << 20)
    ready = stream_put(conn, "s.bin")
    assert isinstance(ready, m.PutReady) and ready.offset == 0
    conn.send_data(data, frame=100_000)
    assert not os.path.exists(home(daemon, "s.bin"))        # never visible before commit
    done = conn.call(m.Commit(id=conn.next_id(), sha256=sha(data), size=len(data)))
    assert isinstance(done, m.PutDone) and done.size == len(data) and done.sha256 == sha(data)
    assert conn.get("s.bin")[1] == data
    usage = conn.call(m.Quota(id=conn.next_id()))
    assert usage.used == len(data) and usage.reserved == 0


def test_an_empty_stream_commits_an_empty_file(conn):
    stream_put(conn, "empty")
    done = conn.call(m.Commit(id=conn.next_id(), sha256=sha(b""), size=0))
    assert isinstance(done, m.PutDone) and done.size == 0


def test_a_stream_commit_without_size_is_bad_request_and_the_stream_goes_on(conn):
    stream_put(conn, "n.bin")
    conn.send_data(b"abc")
    assert conn.call(m.Commit(id=conn.next_id(), sha256=sha(b"abc"))).code == "BAD_REQUEST"
    done = conn.call(m.Commit(id=conn.next_id(), sha256=sha(b"abc"), size=3))
    assert isinstance(done, m.PutDone)


def test_a_stream_commit_with_the_wrong_size_is_integrity_and_keeps_nothing(conn):
    stream_put(conn, "w.bin")
    conn.send_data(b"hello")
    reply = conn.call(m.Commit(id=conn.next_id(), sha256=sha(b"hello"), size=6))
    assert reply.code == "INTEGRITY"
    assert conn.call(m.Stat(id=conn.next_id(), path="w.bin")).code == "NOT_FOUND"
    assert conn.call(m.Uploads(id=conn.next_id())).uploads == ()


def test_a_stream_commit_with_the_wrong_hash_is_integrity(conn):
    stream_put(conn, "h.bin")
    conn.send_data(b"hello")
    assert conn.call(m.Commit(id=conn.next_id(), sha256="0" * 64, size=5)).code == "INTEGRITY"
    assert conn.call(m.Quota(id=conn.next_id())).reserved == 0


def test_a_commit_size_that_differs_from_a_declared_size_is_integrity(conn):
    conn.call(m.Put(id=conn.next_id(), path="d.bin", size=5, defer_sha256=True))
    conn.send_data(b"hello")
    reply = conn.call(m.Commit(id=conn.next_id(), sha256=sha(b"hello"), size=4))
    assert reply.code == "INTEGRITY"
    assert conn.call(m.Uploads(id=conn.next_id())).uploads == ()


def test_a_stream_past_the_quota_is_refused_mid_stream_and_leaves_nothing(conn, daemon):
    rid = conn.next_id()
    conn.call(m.Put(id=rid, path="big.bin", stream=True, defer_sha256=True))
    conn.send_data(b"x" * (9 << 20))                           # quota is 8 MiB
    reply = conn.recv_reply()
    assert reply.code == "QUOTA_EXCEEDED" and reply.id == rid
    assert reply.details["free"] <= 8 << 20
    # DATA in flight was dropped; the next request is answered normally.
    assert conn.call(m.Stat(id=conn.next_id(), path="big.bin")).code == "NOT_FOUND"
    usage = conn.call(m.Quota(id=conn.next_id()))
    assert usage.used == 0 and usage.reserved == 0
    assert conn.call(m.Uploads(id=conn.next_id())).uploads == ()
    assert os.listdir(os.path.join(daemon.root, "staging", USER)) == []


def test_a_size_hint_over_the_quota_is_refused_at_put(conn):
    reply = stream_put(conn, "hint.bin", size_hint=9 << 20)
    assert reply.code == "QUOTA_EXCEEDED"


def test_a_cancelled_stream_keeps_no_partial(conn):
    rid = conn.next_id()
    conn.call(m.Put(id=rid, path="c.bin", stream=True, defer_sha256=True))
    conn.send_data(b"abc" * 1000)
    conn.send(m.Cancel(id=conn.next_id()))
    assert conn.recv_reply().code == "CANCELLED"
    assert isinstance(conn.recv_reply(), m.CancelOk)
    assert conn.call(m.Uploads(id=conn.next_id())).uploads == ()


def test_a_stream_never_resumes_a_partial(daemon):
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        wire.put("r.bin", b"y" * 1000, stop_at=500)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        assert stream_put(wire, "r.bin", size_hint=1000).offset == 0
        wire.send_data(b"z" * 10)
        done = wire.call(m.Commit(id=wire.next_id(), sha256=sha(b"z" * 10), size=10))
        assert done.size == 10 and wire.get("r.bin")[1] == b"z" * 10


# ---------------------------------------------------------------- metadata


def test_put_applies_mtime_and_mode_before_the_file_is_visible(conn, daemon):
    data = b"meta" * 100
    rid = conn.next_id()
    conn.call(m.Put(id=rid, path="t.txt", size=len(data), sha256=sha(data), mtime=MTIME,
                    mode=0o4755))
    conn.send_data(data)
    assert isinstance(conn.recv_reply(), m.PutDone)
    st = os.stat(home(daemon, "t.txt"))
    assert st.st_mtime == MTIME
    assert stat.S_IMODE(st.st_mode) == 0o755                  # setuid never kept


def test_group_write_is_masked_and_the_owner_keeps_read_write(conn, daemon):
    rid = conn.next_id()
    conn.call(m.Put(id=rid, path="g.txt", size=1, mode=0o077))
    conn.send_data(b"g")
    conn.recv_reply()
    assert stat.S_IMODE(os.stat(home(daemon, "g.txt")).st_mode) == 0o655


def test_an_inline_put_applies_mtime(conn, daemon):
    conn.send(m.Put(id=conn.next_id(), path="i.txt", size=2, inline=True, mtime=MTIME))
    conn.send_data(b"hi")
    assert isinstance(conn.recv_reply(), m.PutDone)
    assert os.stat(home(daemon, "i.txt")).st_mtime == MTIME


def test_a_stream_applies_mtime(conn, daemon):
    stream_put(conn, "sm.bin", mtime=MTIME)
    conn.send_data(b"abc")
    conn.call(m.Commit(id=conn.next_id(), sha256=sha(b"abc"), size=3))
    assert os.stat(home(daemon, "sm.bin")).st_mtime == MTIME


def test_get_ready_and_listings_carry_the_mtime(conn):
    rid = conn.next_id()
    conn.call(m.Put(id=rid, path="l.txt", size=1, mtime=MTIME, mode=0o640))
    conn.send_data(b"l")
    conn.recv_reply()
    ready, _, _ = conn.get("l.txt")
    assert ready.mtime == MTIME and ready.mode == 0o640
    entries = conn.call(m.Ls(id=conn.next_id(), path="/")).entries
    assert [e.mtime for e in entries if e.name == "l.txt"] == [MTIME]
