"""Clients that vanish at every phase of a session.

Dropped during the greeting, mid-login (while scrypt runs and during a failed
login's delay), mid-frame (half a header, half a body), mid-upload and
mid-download; both politely (FIN) and rudely (RST, via SO_LINGER 0).  After each,
the daemon's descriptor count returns to its baseline (one thread per pool and a warm-up,
so every thread already holds its own SQLite handle), the daemon is alive and
serves a new client, and an interrupted upload or download resumes.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import time
from typing import Any

import pytest

import protocol.messages as m
from protocol import HEADER_SIZE, data_header, encode, encode_control
from storage import Store
from tests.test_hostile_support import alive, wait_until
from tests.wire import Wire

USER, PASSWORD = "grace", "pw-grace"


def rude_close(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def polite_close(sock: socket.socket) -> None:
    sock.close()


CLOSES = {"fin": polite_close, "rst": rude_close}


@pytest.fixture
def warm(server_factory: Any) -> Any:
    """A daemon with one worker and a stored password that takes scrypt N=2**15, warmed up
    (every thread has opened its database handle); returns (daemon, fd baseline)."""
    daemon = server_factory(workers=1, auth_workers=1, scrypt_n=2**15)
    with Store(daemon.root, scrypt_n=2**15) as store:
        store.create_user(USER, PASSWORD)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        assert isinstance(wire.put("warm.bin", b"warm-up"), m.PutDone)
        assert wire.get("warm.bin")[1] == b"warm-up"
        assert isinstance(wire.call(m.Ls(id=wire.next_id())), m.LsOk)
        assert isinstance(wire.call(m.Hash(id=wire.next_id(), path="warm.bin")), m.HashOk)
    assert wait_until(lambda: "close" in daemon.log().splitlines()[-1], 5)
    return daemon, daemon.fd_count()


def settled(daemon: Any, baseline: int) -> None:
    """Descriptors back to the baseline, the daemon alive and serving."""
    assert wait_until(lambda: daemon.fd_count() <= baseline, 10), \
        f"fd count {daemon.fd_count()} > baseline {baseline}"
    assert alive(daemon)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        assert isinstance(wire.call(m.Ping(id=wire.next_id())), m.Pong)


def raw(daemon: Any, *, greeting: bool = True, hello: bool = False) -> socket.socket:
    s = socket.create_connection((daemon.host, daemon.port), timeout=10)
    if greeting:
        assert s.recv(65536)
    if hello:
        s.sendall(encode(m.Hello(id=1, protocol=1)))
        assert s.recv(65536)
    return s


@pytest.mark.parametrize("how", sorted(CLOSES))
def test_drop_during_the_greeting_is_cleaned_up(warm, how):
    """20 clients that connect and vanish before reading the greeting, and 20 right after
    it: all cleaned up."""
    daemon, baseline = warm
    for _ in range(20):
        CLOSES[how](raw(daemon, greeting=False))
        CLOSES[how](raw(daemon))
    settled(daemon, baseline)


@pytest.mark.parametrize("how", sorted(CLOSES))
def test_drop_mid_login_while_scrypt_runs_is_cleaned_up(warm, how):
    """Clients send a correct login (scrypt N=2**15 runs on the worker) and vanish 10 ms
    later: the daemon finishes the hash, notices the dead peer and cleans up."""
    daemon, baseline = warm
    for _ in range(5):
        s = raw(daemon, hello=True)
        s.sendall(encode(m.Login(id=2, user=USER, password=PASSWORD)))
        time.sleep(0.01)
        CLOSES[how](s)
    settled(daemon, baseline)
    daemon.wait_for_log("login ok 127.0.0.1", count=6)                    # the hashes really ran


@pytest.mark.parametrize("how", sorted(CLOSES))
def test_drop_during_a_failed_logins_delay_is_cleaned_up(warm, how):
    """Clients send a wrong password and vanish while the throttle delays the reply."""
    daemon, baseline = warm
    for _ in range(3):
        s = raw(daemon, hello=True)
        s.sendall(encode(m.Login(id=2, user=USER, password="wrong")))
        time.sleep(0.01)
        CLOSES[how](s)
    settled(daemon, baseline)


@pytest.mark.parametrize("cut", ["half a header", "header only", "half a control body",
                                 "half a DATA body"])
def test_drop_mid_frame_is_cleaned_up(warm, cut):
    daemon, baseline = warm
    frame = encode_control(b'{"cmd":"ping","id":1,"payload":"' + b"x" * 200 + b'"}')
    sent = {
        "half a header": frame[:2],
        "header only": frame[:HEADER_SIZE],
        "half a control body": frame[:len(frame) // 2],
        "half a DATA body": data_header(1000) + b"d" * 500,
    }[cut]
    for how in CLOSES.values():
        s = raw(daemon, hello=True)
        s.sendall(sent)
        time.sleep(0.01)
        how(s)
    settled(daemon, baseline)


def test_drop_mid_upload_leaves_a_resumable_partial(warm):
    """An upload of 4 MiB is dropped after 1.5 MiB plus half a DATA frame: the daemon
    cleans up, keeps every byte it received, and a new connection resumes from there to a
    verified file."""
    daemon, baseline = warm
    data = os.urandom(4 << 20)
    digest = hashlib.sha256(data).hexdigest()
    sent = (3 << 19) + 1000
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        ready = wire.call(m.Put(id=wire.next_id(), path="drop.bin", size=len(data),
                                sha256=digest))
        assert isinstance(ready, m.PutReady) and ready.offset == 0
        wire.send_data(data[:3 << 19], frame=256 * 1024)
        wire.send_raw(data_header(2000) + data[3 << 19:sent])          # half a frame
    settled(daemon, baseline)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        assert [(u.path, u.offset) for u in wire.call(m.Uploads(id=1)).uploads] == \
            [("/drop.bin", sent)]
        done = wire.put("drop.bin", data)
        assert isinstance(done, m.PutDone) and done.sha256 == digest
    daemon.wait_for_log(r"path=/drop\.bin size=4194304 offset=1573864")


@pytest.mark.parametrize("how", sorted(CLOSES))
def test_drop_mid_download_is_cleaned_up_and_resumable(warm, how):
    """A slow reader takes 1 MiB of a 16 MiB download and vanishes: the daemon stops
    sending, closes the file, and a new connection resumes from the bytes held."""
    daemon, baseline = warm
    data = os.urandom(16 << 20)
    with Wire(daemon.host, daemon.port, timeout=30) as wire:
        wire.logged_in(USER, PASSWORD)
        assert isinstance(wire.put("big.bin", data), m.PutDone)
    settled(daemon, baseline)
    held = bytearray()
    wire = Wire(daemon.host, daemon.port, max_data=64 * 1024, rcvbuf=64 * 1024)
    wire.logged_in(USER, PASSWORD)
    ready = wire.call(m.Get(id=wire.next_id(), path="big.bin"))
    assert isinstance(ready, m.GetReady)
    while len(held) < 1 << 20:
        chunk = wire.recv()
        assert isinstance(chunk, bytes)
        held += chunk
    CLOSES[how](wire.sock)
    settled(daemon, baseline)
    with Wire(daemon.host, daemon.port, timeout=30) as wire:
        wire.logged_in(USER, PASSWORD)
        again, rest, end = wire.get("big.bin", offset=len(held))
        assert isinstance(end, m.GetDone) and again.offset == len(held)
    assert hashlib.sha256(bytes(held) + rest).hexdigest() == ready.sha256


def test_a_peer_vanishing_inside_a_sendfile_frame_is_a_clean_close(warm):
    """Ten readers take ~100 KB of a download sent in 1 MiB DATA frames and vanish, so the
    daemon is usually inside a frame's sendfile when the pipe breaks: every connection is
    closed cleanly (the log must hold no traceback and no INTERNAL), and the descriptors
    come back."""
    daemon, baseline = warm
    with Wire(daemon.host, daemon.port, timeout=30) as wire:
        wire.logged_in(USER, PASSWORD)
        assert isinstance(wire.put("frames.bin", os.urandom(16 << 20)), m.PutDone)
    for _ in range(10):
        wire = Wire(daemon.host, daemon.port, rcvbuf=64 * 1024)
        wire.logged_in(USER, PASSWORD)
        assert isinstance(wire.call(m.Get(id=wire.next_id(), path="frames.bin", verify=False)),
                          m.GetReady)
        got = 0
        while got < 100_000:
            got += len(wire.recv())
        wire.close()
        time.sleep(0.05)
    settled(daemon, baseline)
    log = daemon.wait_for_log(rf"download user={USER} path=/frames\.bin ", count=10)
    assert "Traceback" not in log and "result=interrupted (INTERNAL)" not in log, log[-3000:]


def test_a_changed_declaration_after_a_drop_restarts_instead_of_splicing(warm):
    """After a dropped upload, a put to the same path with another size and SHA-256 gets
    offset 0 and restarted=true: the old bytes are never spliced into the new file."""
    daemon, baseline = warm
    old, new = os.urandom(1 << 20), os.urandom(3 << 19)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        assert isinstance(wire.put("switch.bin", old, stop_at=1 << 19), m.PutReady)
    settled(daemon, baseline)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        ready = wire.call(m.Put(id=wire.next_id(), path="switch.bin", size=len(new),
                                sha256=hashlib.sha256(new).hexdigest()))
        assert isinstance(ready, m.PutReady) and ready.offset == 0 and ready.restarted, ready
        wire.send_data(new)
        done = wire.recv_reply()
        assert isinstance(done, m.PutDone) and done.sha256 == hashlib.sha256(new).hexdigest()
    assert (daemon.root / "homes" / USER / "switch.bin").read_bytes() == new
