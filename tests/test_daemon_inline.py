"""Inline (pipelined) puts, protocol section 7.7, against live daemons at the frame level."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol.messages as m
from protocol import ProtocolError, encode, encode_data
from tests.conftest import examples
from tests.test_hostile_support import wait_until
from tests.wire import Closed, Wire

USER, PASSWORD = "ina", "pw-ina"


def inline(rid: int, path: str, data: bytes, *, sha: bool = False, overwrite: bool = False,
           frame: int = 1 << 20) -> bytes:
    """An inline put and all its DATA, as bytes on the wire."""
    digest = hashlib.sha256(data).hexdigest() if sha else None
    out = [encode(m.Put(id=rid, path=path, size=len(data), sha256=digest,
                        overwrite=overwrite, inline=True))]
    out += [encode_data(data[i:i + frame]) for i in range(0, len(data), frame)]
    return b"".join(out)


def send_quietly(w: Wire, data: bytes) -> None:
    try:
        w.send_raw(data)
    except OSError:
        pass                                     # the daemon died: expected here


def logged_in(daemon: Any, quota: int | None = None, user: str = USER) -> Wire:
    daemon.add_user(user, PASSWORD, quota)
    return Wire(daemon.host, daemon.port).logged_in(user, PASSWORD)


def home(daemon: Any, user: str = USER) -> Any:
    return daemon.root / "homes" / user


def test_an_inline_put_is_answered_by_put_done_alone_and_the_file_is_there(server):
    data = os.urandom(70_000)
    with logged_in(server) as w:
        w.send_raw(inline(7, "a.bin", data, sha=True, frame=4096))
        done = w.recv_reply()
        assert done == m.PutDone(id=7, path="/a.bin", size=len(data),
                                 sha256=hashlib.sha256(data).hexdigest())
        assert w.call(m.Quota(id=8)).used == len(data)
    assert (home(server) / "a.bin").read_bytes() == data


def test_the_greeting_announces_inline_max(server_factory):
    daemon = server_factory(inline_max=4096)
    with Wire(daemon.host, daemon.port, hello=False) as w:
        assert w.greeting.inline_max == 4096


def test_a_zero_byte_inline_put_needs_no_data(server):
    with logged_in(server) as w:
        w.send_raw(inline(3, "empty", b""))
        assert w.recv_reply() == m.PutDone(id=3, path="/empty", size=0)
    assert (home(server) / "empty").read_bytes() == b""


def test_a_refused_inline_put_has_its_bytes_discarded_and_the_stream_stays_in_step(server):
    with logged_in(server) as w:
        w.send_raw(inline(1, "no/such/folder/x", b"x" * 5000)        # NOT_FOUND
                   + inline(2, "ok.bin", b"fine")
                   + encode(m.Ping(id=3, payload="still here")))
        first = w.recv_reply()
        assert isinstance(first, m.ErrorReply) and (first.id, first.code) == (1, "NOT_FOUND")
        assert w.recv_reply() == m.PutDone(id=2, path="/ok.bin", size=4)
        assert w.recv_reply() == m.Pong(id=3, payload="still here")
    assert (home(server) / "ok.bin").read_bytes() == b"fine"


def test_an_inline_put_over_inline_max_is_refused_and_its_bytes_discarded(server_factory):
    daemon = server_factory(inline_max=4096)
    with logged_in(daemon) as w:
        w.send_raw(inline(1, "big", b"b" * 5000) + inline(2, "small", b"s" * 4096))
        refused = w.recv_reply()
        assert (refused.id, refused.code) == (1, "BAD_REQUEST")
        assert refused.details == {"inline_max": 4096}
        assert w.recv_reply() == m.PutDone(id=2, path="/small", size=4096)
    assert not (home(daemon) / "big").exists()


def test_an_inline_put_with_a_wrong_sha256_is_refused_and_leaves_nothing(server):
    data = b"the real bytes"
    with logged_in(server) as w:
        w.send_raw(encode(m.Put(id=1, path="x", size=len(data), sha256="0" * 64, inline=True))
                   + encode_data(data))
        refused = w.recv_reply()
        assert (refused.id, refused.code) == (1, "INTEGRITY")
        assert w.call(m.Uploads(id=2)).uploads == ()
        assert w.call(m.Quota(id=3)).used == 0
    assert not (home(server) / "x").exists()


def test_an_inline_put_replaces_a_leftover_partial_of_its_path(server):
    old = os.urandom(10_000)
    with logged_in(server) as w:
        assert isinstance(w.put("p.bin", old, stop_at=4000), m.PutReady)
    with Wire(server.host, server.port).logged_in(USER, PASSWORD) as w:
        assert [u.path for u in w.call(m.Uploads(id=1)).uploads] == ["/p.bin"]
        w.send_raw(inline(2, "p.bin", b"new"))
        assert w.recv_reply() == m.PutDone(id=2, path="/p.bin", size=3)
        assert w.call(m.Uploads(id=3)).uploads == ()
        quota = w.call(m.Quota(id=4))
        assert (quota.used, quota.reserved) == (3, 0)
    assert (home(server) / "p.bin").read_bytes() == b"new"


# Clear text: one thread sends the whole pipeline while another reads the replies, and
# Python's SSLSocket is not safe for a send and a recv from two threads at once.
@pytest.mark.plaintext
def test_pipelined_replies_come_in_request_order(server):
    wire = b""
    expected: list[tuple[int, str]] = []
    for i in range(150):
        rid = 1000 + i
        if i % 7 == 3:
            wire += inline(rid, f"missing/{i}", os.urandom(2000))
            expected.append((rid, "NOT_FOUND"))
        elif i % 11 == 5:
            wire += inline(rid, "dup", b"d")      # the first one is stored, the others: EXISTS
            first = not any(what == "put.done:dup" for _, what in expected)
            expected.append((rid, "put.done:dup" if first else "EXISTS"))
        else:
            wire += inline(rid, f"f{i}", os.urandom(1 + i * 300), sha=i % 2 == 0)
            expected.append((rid, "put.done"))
        if i == 75:
            wire += encode(m.Stat(id=5000, path="f0"))      # waits for the puts before it
            expected.append((5000, "stat"))
    wire += encode(m.Ls(id=6000))
    expected.append((6000, "ls"))
    expected = [(rid, what.split(":")[0]) for rid, what in expected]
    with logged_in(server) as w:
        sender = threading.Thread(target=w.send_raw, args=(wire,))
        sender.start()
        got = []
        for _ in expected:
            reply = w.recv_reply()
            got.append((reply.id, reply.code if isinstance(reply, m.ErrorReply) else reply.type))
        sender.join(30)
    assert got == expected


def test_a_request_inside_an_inline_puts_data_ends_the_session(server):
    with logged_in(server) as w:
        w.send_raw(encode(m.Put(id=1, path="x", size=10, inline=True)) + encode_data(b"12345")
                   + encode(m.Ping(id=2)))
        error = w.recv_reply()
        assert (error.id, error.code) == (None, "BAD_STATE")
        assert w.closed_by_peer()
    with Wire(server.host, server.port).logged_in(USER, PASSWORD) as w:
        assert w.call(m.Uploads(id=1)).uploads == ()
    assert not (home(server) / "x").exists()


@pytest.mark.plaintext          # a sender thread beside reads: see the test above
def test_backpressure_bounds_the_inline_puts_held_per_connection(inproc_server):
    daemon = inproc_server(inline_window_files=4, inline_window_bytes=1 << 20)
    gate = threading.Event()
    real = daemon.store.store_small_files

    def slow(user: str, files: Any) -> Any:
        gate.wait(20)                          # the disk is "slow" until the test says so
        return real(user, files)

    daemon.store.store_small_files = slow       # type: ignore[method-assign]
    daemon.add_user(USER, PASSWORD)
    with Wire(daemon.host, daemon.port).logged_in(USER, PASSWORD) as w:
        n = 200
        payload = b"".join(inline(10 + i, f"f{i}", b"z" * 30_000) for i in range(n))
        sender = threading.Thread(target=w.send_raw, args=(payload,), daemon=True)
        sender.start()
        time.sleep(1.0)
        conns = list(daemon.server.connections)
        assert len(conns) == 1
        conn = conns[0]
        held = len(conn.inline.inflight) if conn.inline is not None else 0
        assert 1 <= held <= 4 + 1          # the window, plus at most the put being read
        assert sender.is_alive()            # the client's sends block: the daemon stopped reading
        gate.set()
        replies = [w.recv_reply() for _ in range(n)]
        sender.join(30)
    assert [r.id for r in replies] == list(range(10, 10 + n))
    assert all(isinstance(r, m.PutDone) for r in replies)


def test_inline_puts_racing_for_quota_never_exceed_it(server):
    size, fits = 64 * 1024, 10
    server.add_user(USER, PASSWORD, quota=size * fits)
    outcomes: list[Any] = []
    lock = threading.Lock()

    def one(tag: str) -> None:
        with Wire(server.host, server.port).logged_in(USER, PASSWORD) as w:
            w.send_raw(b"".join(inline(i + 1, f"{tag}{i}", os.urandom(size)) for i in range(8)))
            got = [w.recv_reply() for _ in range(8)]
        with lock:
            outcomes.extend(got)

    threads = [threading.Thread(target=one, args=(t,)) for t in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ok = [r for r in outcomes if isinstance(r, m.PutDone)]
    refused = [r for r in outcomes if isinstance(r, m.ErrorReply)]
    assert len(ok) + len(refused) == 24
    assert len(ok) == fits
    assert {r.code for r in refused} <= {"QUOTA_EXCEEDED"}
    stored = sorted(p.name for p in home(server).iterdir())
    assert stored == sorted(r.path.lstrip("/") for r in ok)
    with Wire(server.host, server.port).logged_in(USER, PASSWORD) as w:
        quota = w.call(m.Quota(id=1))
    assert (quota.used, quota.reserved) == (size * fits, 0)


def test_a_connections_inline_puts_count_as_one_upload_towards_the_per_user_limit(
        server_factory):
    daemon = server_factory(max_uploads_per_user=1)
    with logged_in(daemon) as w:
        w.send_raw(b"".join(inline(i + 1, f"f{i}", b"q" * 1000) for i in range(20)))
        assert all(isinstance(w.recv_reply(), m.PutDone) for _ in range(20))


@settings(max_examples=examples(15, ci=100), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 9000), min_size=1, max_size=8),
       cuts=st.lists(st.integers(1, 7000), min_size=1, max_size=20),
       frame=st.integers(1, 5000))
def test_any_segmentation_of_pipelined_inline_puts_gives_the_same_replies(
        inproc_server, sizes, cuts, frame):
    daemon = getattr(inproc_server, "daemon", None)   # one daemon for all the examples
    if daemon is None:
        daemon = inproc_server.daemon = inproc_server()
        daemon.add_user(USER, PASSWORD)
    files = [os.urandom(n) for n in sizes]
    wire = b"".join(inline(i + 1, f"s{i}", data, overwrite=True, frame=frame)
                    for i, data in enumerate(files)) + encode(m.Ping(id=99))
    with Wire(daemon.host, daemon.port).logged_in(USER, PASSWORD) as w:
        pos = 0
        for cut in cuts:
            w.send_raw(wire[pos:pos + cut])
            pos += cut
        w.send_raw(wire[pos:])
        replies = [w.recv_reply() for _ in range(len(files) + 1)]
    assert replies[:-1] == [m.PutDone(id=i + 1, path=f"/s{i}", size=len(d))
                            for i, d in enumerate(files)]
    assert replies[-1] == m.Pong(id=99)
    for i, data in enumerate(files):
        assert (daemon.root / "homes" / USER / f"s{i}").read_bytes() == data


@pytest.mark.slow
@pytest.mark.plaintext          # a sender thread beside reads: see above
def test_kill_9_during_pipelined_inline_puts_keeps_every_acknowledged_file(server_factory):
    daemon = server_factory()
    daemon.add_user(USER, PASSWORD, quota=1 << 30)
    files = {f"k{i:04d}": os.urandom(64 * 1024 + i) for i in range(600)}
    payload = b"".join(inline(i + 1, name, data, sha=i % 2 == 0)
                       for i, (name, data) in enumerate(files.items()))
    acked: list[str] = []
    torn: list[str] = []
    stop = threading.Event()

    def upload() -> None:
        try:
            with Wire(daemon.host, daemon.port, timeout=20).logged_in(USER, PASSWORD) as w:
                threading.Thread(target=send_quietly, args=(w, payload), daemon=True).start()
                while True:
                    reply = w.recv_reply()
                    if isinstance(reply, m.PutDone):
                        acked.append(reply.path.lstrip("/"))
        except (Closed, OSError, ProtocolError):
            pass

    def poll() -> None:       # a visible file is always a complete one
        folder = home(daemon)
        while not stop.is_set():
            for entry in os.scandir(folder):
                try:
                    with open(entry.path, "rb") as fh:
                        if fh.read() != files[entry.name]:
                            torn.append(entry.name)
                except FileNotFoundError:
                    pass

    uploader = threading.Thread(target=upload)
    poller = threading.Thread(target=poll)
    uploader.start()
    poller.start()
    try:
        assert wait_until(lambda: len(acked) >= 60, timeout=60), "no progress before the kill"
        daemon.kill()
    finally:
        stop.set()
        uploader.join(30)
        poller.join(30)
    assert 60 <= len(acked) < len(files), "the kill came too late to test anything"
    assert not torn
    daemon.restart()
    visible = {p.name: p.read_bytes() for p in home(daemon).iterdir()}
    assert set(acked) <= set(visible)
    assert all(data == files[name] for name, data in visible.items())
    with Wire(daemon.host, daemon.port).logged_in(USER, PASSWORD) as w:
        quota = w.call(m.Quota(id=1))
        partials = w.call(m.Uploads(id=2)).uploads
    assert quota.used == sum(len(d) for d in visible.values())
    assert quota.reserved == sum(u.size for u in partials)
    assert not {u.path.lstrip("/") for u in partials} & set(visible)
    db = sqlite3.connect(daemon.root / "users.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM uploads WHERE commit_ino IS NOT NULL"
                          ).fetchone()[0] == 0
    finally:
        db.close()


def test_puts_arriving_while_a_group_is_stored_go_together_not_one_group_each(inproc_server):
    """Group commit: a lone put is stored at once; the puts that arrive while its
    group is on a worker wait for it and then go as one group, instead of a
    group each that pays its own transactions and folder fsync."""
    daemon = inproc_server(inline_batches=4, inline_batch_files=32)
    gate = threading.Event()
    sizes: list[int] = []
    real = daemon.store.store_small_files

    def held(user: str, files: Any) -> Any:
        sizes.append(len(files))
        gate.wait(20)                          # the first group is "slow" until told
        return real(user, files)

    daemon.store.store_small_files = held       # type: ignore[method-assign]
    daemon.add_user(USER, PASSWORD)
    with Wire(daemon.host, daemon.port).logged_in(USER, PASSWORD) as w:
        w.send_raw(inline(1, "first", b"a" * 1000))
        assert wait_until(lambda: sizes == [1], 10)      # the first put's group is stored
        w.send_raw(b"".join(inline(2 + i, f"f{i}", b"b" * 1000) for i in range(9)))
        conn = next(iter(daemon.server.connections))
        assert wait_until(lambda: conn.inline is not None and len(conn.inline.inflight) == 10
                          and conn.inline.receiving is None, 10)       # all ten read
        gate.set()
        replies = [w.recv_reply() for _ in range(10)]
    assert all(isinstance(r, m.PutDone) for r in replies)
    assert sizes == [1, 9]
