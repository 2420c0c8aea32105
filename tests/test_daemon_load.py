"""The reactor under load: many clients, slow readers, password bursts, leaks.

No wall-clock thresholds: each test asserts on what happened (every hash
verified, bytes moved during a burst, memory and descriptors that came back).
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import protocol.messages as m
from client import Client
from protocol import encode
from tests.daemon import wait_for
from tests.wire import Wire

USER, PASSWORD = "load", "pw"


def _client_round_trip(host: str, port: int, index: int, folder: Path) -> bool:
    """One client of the real library: connect, log in, put and get its own file."""
    data = os.urandom(32 * 1024 + index * 97)
    source = folder / f"up-{index}.bin"
    source.write_bytes(data)
    with Client(host, port, timeout=60, digests=("sha256",)) as client:   # checks SHA-256
        client.login(f"u{index % 25}", PASSWORD)
        put = client.put(source, f"file-{index}.bin")
        got = client.get(f"file-{index}.bin", folder / f"down-{index}.bin")
    expected = hashlib.sha256(data).hexdigest()
    return put.sha256 == got.sha256 == expected == \
        hashlib.sha256((folder / f"down-{index}.bin").read_bytes()).hexdigest()


@pytest.mark.slow
def test_200_concurrent_clients_upload_and_download_with_every_hash_verified(server_factory,
                                                                             tmp_path):
    daemon = server_factory()
    # 8 clients per user: never more uploads at once than max_uploads_per_user allows,
    # however the 200 overlap on a loaded machine.
    for i in range(25):
        daemon.add_user(f"u{i}", PASSWORD)
    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(
            lambda i: _client_round_trip(daemon.host, daemon.port, i, tmp_path), range(200)))
    assert results == [True] * 200


def test_a_slow_reader_does_not_grow_the_daemons_memory(server_factory):
    daemon = server_factory()
    daemon.add_user(USER, PASSWORD)
    size = 64 << 20
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        chunk = os.urandom(1 << 20)
        rid = wire.next_id()
        wire.call(m.Put(id=rid, path="big", size=size))
        for _ in range(64):
            wire.send_data(chunk)
        assert isinstance(wire.recv_reply(), m.PutDone)
    with Wire(daemon.host, daemon.port, rcvbuf=64 * 1024) as wire:
        wire.logged_in(USER, PASSWORD)
        before = daemon.rss()
        wire.send(m.Get(id=2, path="big", verify=False))
        received, peak = 0, before
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            received += len(wire.sock.recv(16 * 1024))
            peak = max(peak, daemon.rss())
            time.sleep(0.01)
        assert 0 < received < size // 2              # the reader really was slow
        assert peak - before < 4 << 20               # the daemon did not buffer the file


def test_a_burst_of_logins_does_not_stall_a_running_download(inproc_server):
    daemon = inproc_server(scrypt_n=2**14, workers=2)
    daemon.add_user(USER, PASSWORD)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        assert isinstance(wire.put("stream.bin", os.urandom(64 << 20), sha=False), m.PutDone)
    with Wire(daemon.host, daemon.port, max_data=64 * 1024, rcvbuf=128 * 1024) as wire:
        wire.logged_in(USER, PASSWORD)
        wire.send(m.Get(id=500, path="stream.bin", verify=False))
        assert isinstance(wire.recv_reply(), m.GetReady)
        progress = {"bytes": 0}
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                event = wire.recv()
                if isinstance(event, bytes):
                    progress["bytes"] += len(event)
                    time.sleep(0.002)            # a steady, modest reader
                else:
                    return

        reading = threading.Thread(target=reader, daemon=True)
        reading.start()
        hashes_before = daemon.store.hash_calls
        start_bytes = progress["bytes"]

        def log_in(_: int) -> bool:
            with Wire(daemon.host, daemon.port, timeout=60) as other:
                return isinstance(other.login(USER, PASSWORD), m.LoginOk)

        with ThreadPoolExecutor(max_workers=16) as pool:
            logins = list(pool.map(log_in, range(16)))
        during = progress["bytes"] - start_bytes
        stop.set()
        assert all(logins)
        assert daemon.store.hash_calls - hashes_before >= 16   # each login paid for scrypt
        assert during > 1 << 20          # the download kept moving while the hashes ran


def test_connections_leak_no_descriptors_or_threads(server_factory):
    # one thread per pool: each thread opens its own database handle once
    daemon = server_factory(workers=1, auth_workers=1)
    daemon.add_user(USER, PASSWORD)
    with Wire(daemon.host, daemon.port) as wire:       # warm up lazily opened files
        wire.logged_in(USER, PASSWORD)
        wire.put("warm", b"x")
        wire.get("warm")
    fds, threads = daemon.fd_count(), daemon.thread_count()
    for i in range(30):
        with Wire(daemon.host, daemon.port) as wire:
            wire.logged_in(USER, PASSWORD)
            wire.put(f"f{i}", os.urandom(1000))
            wire.get(f"f{i}")
            if i % 3 == 0:
                wire.put(f"partial{i}", os.urandom(100_000), stop_at=5000)
    deadline = time.monotonic() + 5
    while daemon.fd_count() > fds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.fd_count() <= fds
    assert daemon.thread_count() == threads


def test_a_ping_flood_during_a_download_is_answered_without_unbounded_buffering(inproc_server):
    daemon = inproc_server()
    daemon.add_user(USER, PASSWORD)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        assert isinstance(wire.put("f", os.urandom(8 << 20), sha=False), m.PutDone)
    with Wire(daemon.host, daemon.port, max_data=1 << 20, rcvbuf=64 * 1024) as wire:
        wire.logged_in(USER, PASSWORD)
        wire.send(m.Get(id=1, path="f", verify=False))
        assert isinstance(wire.recv_reply(), m.GetReady)
        flood = b"".join(encode(m.Ping(id=i)) for i in range(2, 20_002))
        wire.sock.settimeout(0.5)
        sent = 0
        try:                                   # the daemon stops reading: sending blocks
            while sent < len(flood):
                sent += wire.sock.send(flood[sent:sent + 65536])
        except TimeoutError:
            pass
        [conn] = list(daemon.server.connections)
        held = len(conn.download.deferred) if conn.download else 0
        assert held <= 64 + 65536 // 25            # the cap plus at most one recv of pings
        wire.sock.settimeout(30)
        if sent < len(flood):
            threading.Thread(target=wire.sock.sendall, args=(flood[sent:],), daemon=True).start()
        pongs, data = 0, 0
        while pongs < 20_000 or data < 8 << 20:
            event = wire.recv()
            if isinstance(event, bytes):
                data += len(event)
            elif isinstance(event, m.Pong):
                pongs += 1
        assert (pongs, data) == (20_000, 8 << 20)


def test_parallel_logins_with_the_right_password_all_succeed_despite_a_low_lockout(server_factory):
    daemon = server_factory(lockout_threshold=3, workers=2)
    daemon.add_user(USER, PASSWORD)
    wires = [Wire(daemon.host, daemon.port) for _ in range(30)]
    try:
        for wire in wires:
            wire.send(m.Login(id=7, user=USER, password=PASSWORD))
        replies = [wire.recv_reply() for wire in wires]
    finally:
        for wire in wires:
            wire.close()
    assert all(isinstance(reply, m.LoginOk) for reply in replies), replies


def test_a_client_that_hangs_up_during_a_slow_put_leaves_the_upload_free(inproc_server,
                                                                          monkeypatch):
    """A client that hangs up while its put is still being begun on a worker.

    The daemon reads nothing while a request is in progress, so it learns of the
    hang-up only through output it cannot send: the client first asks for more
    replies than the socket buffers hold and never reads them, then puts, then
    resets the connection.  Once the daemon has closed the connection, the begin is
    let go; its completion finds the connection closed and must free the upload's
    slot and writer, so the next put of the same file -- with one upload allowed per
    user -- is accepted and completes.
    """
    daemon = inproc_server(max_uploads_per_user=1, high_water=64 << 20, low_water=1 << 20)
    daemon.add_user(USER, PASSWORD)
    real_begin = daemon.store.begin_upload
    entered, release = threading.Event(), threading.Event()

    def slow_begin(*args, **kwargs):
        entered.set()
        release.wait(30)
        return real_begin(*args, **kwargs)

    monkeypatch.setattr(daemon.store, "begin_upload", slow_begin)
    pings = b"".join(encode(m.Ping(id=100 + i, payload="p" * 1000)) for i in range(8192))
    wire = Wire(daemon.host, daemon.port, rcvbuf=4096)
    try:
        wire.logged_in(USER, PASSWORD)
        wire.send_raw(pings + encode(m.Put(id=1, path="orphan", size=10)))
        assert entered.wait(30), "the put never reached the worker"
        wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        wire.close()                          # a reset, with ~8 MiB of pongs unread
    daemon.wait_for_log(rf"close \S+ user={USER} reason=(?:send failed|connection lost)")
    release.set()                             # the begin finishes after the close

    with Wire(daemon.host, daemon.port) as again:
        again.logged_in(USER, PASSWORD)

        def accepted() -> m.PutReady | None:
            reply = again.call(m.Put(id=again.next_id(), path="orphan", size=10))
            return reply if isinstance(reply, m.PutReady) else None

        ready = wait_for(accepted, 10, "the orphaned upload's slot and writer to be freed")
        assert ready.offset == 0
        again.send_data(b"0123456789")
        assert isinstance(again.recv_reply(), m.PutDone)


def test_hashing_behind_an_upload_does_not_wait_for_its_flush(inproc_server, monkeypatch):
    from storage.upload import Upload

    release = threading.Event()
    stuck_at: list[int] = []               # the offset when the first flush got stuck
    hashed_before_release: list[int] = []
    real_flush, real_hash = Upload.flush, Upload.hash_behind

    def slow_flush(self: Upload) -> int:
        stuck_at.append(self.offset)
        release.wait(20)                   # a disk that takes its time
        return real_flush(self)

    def watched_hash(self: Upload) -> int:
        end = real_hash(self)
        if not release.is_set():
            hashed_before_release.append(end)
        return end

    monkeypatch.setattr(Upload, "flush", slow_flush)
    monkeypatch.setattr(Upload, "hash_behind", watched_hash)
    step = 256 * 1024
    daemon = inproc_server(writeback_bytes=step)
    daemon.add_user(USER, PASSWORD)
    data = os.urandom(16 * step)
    with Wire(daemon.host, daemon.port, timeout=30) as wire:
        wire.logged_in(USER, PASSWORD)
        assert isinstance(wire.put("big.bin", data, stop_at=0), m.PutReady)
        # Jobs start as data arrives: feed it a step at a time, giving each a moment.
        for sent in range(step, len(data), step):      # all but the last step
            wire.send_data(data[sent - step:sent])
            _wait_for(lambda sent=sent: bool(hashed_before_release)
                      and hashed_before_release[-1] >= sent - step, 2.0)
        assert len(stuck_at) == 1 and not release.is_set()
        release.set()
        wire.send_data(data[-step:])
        assert isinstance(wire.recv_reply(), m.PutDone)
    # The first flush never ended, yet the hash went far past where it got stuck.
    assert hashed_before_release[-1] >= stuck_at[0] + 8 * step


def _watch_hash_behind(monkeypatch) -> list[int]:
    """The offsets every ``Upload.hash_behind`` job covered, in order."""
    from storage.upload import Upload

    covered: list[int] = []
    real = Upload.hash_behind

    def watched(self: Upload) -> int:
        end = real(self)
        covered.append(end)
        return end

    monkeypatch.setattr(Upload, "hash_behind", watched)
    return covered


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_deferred_upload_is_hashed_to_its_end_before_its_commit_arrives(inproc_server,
                                                                         monkeypatch):
    covered = _watch_hash_behind(monkeypatch)
    daemon = inproc_server(writeback_bytes=1 << 20)
    daemon.add_user(USER, PASSWORD)
    data = os.urandom((3 << 20) + 12345)               # the tail is not a whole step
    with Wire(daemon.host, daemon.port, timeout=30) as wire:
        wire.logged_in(USER, PASSWORD)
        wire.call(m.Put(id=1, path="d.bin", size=len(data), defer_sha256=True))
        wire.send_data(data)
        assert _wait_for(lambda: len(data) in covered)
        done = wire.call(m.Commit(id=2, sha256=hashlib.sha256(data).hexdigest()))
        assert isinstance(done, m.PutDone)


def test_a_resumed_upload_hashes_its_prefix_before_new_bytes_arrive(inproc_server,
                                                                    monkeypatch):
    covered = _watch_hash_behind(monkeypatch)
    daemon = inproc_server(writeback_bytes=1 << 20)
    daemon.add_user(USER, PASSWORD)
    data = os.urandom(4 << 20)
    with Wire(daemon.host, daemon.port, timeout=30) as wire:
        wire.logged_in(USER, PASSWORD)
        wire.call(m.Put(id=1, path="r.bin", size=len(data), defer_sha256=True))
        wire.send_data(data[:2 << 20])
        wire.call(m.Ping(id=2))
    covered.clear()
    with Wire(daemon.host, daemon.port, timeout=30) as wire:
        wire.logged_in(USER, PASSWORD)
        ready = wire.call(m.Put(id=1, path="r.bin", size=len(data), defer_sha256=True))
        assert ready.offset == 2 << 20
        assert _wait_for(lambda: ready.offset in covered)     # no DATA sent yet
        wire.send_data(data[ready.offset:])
        done = wire.call(m.Commit(id=2, sha256=hashlib.sha256(data).hexdigest()))
        assert isinstance(done, m.PutDone)
