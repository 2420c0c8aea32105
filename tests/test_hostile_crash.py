"""kill -9 in the middle of transfers, then a restart on the same port and data folder.

Five uploads and five downloads of 8 MiB (downloads larger if the kernel's socket
buffers could hold that much) run slowly when the daemon is killed
with SIGKILL.  It is restarted; every client reconnects and resumes (uploads
from the offset the daemon reports, downloads from the bytes they already
hold), every SHA-256 matches, no partial file ever shows at a target path (a
poller watches the home the whole time), and the users database passes
``PRAGMA integrity_check`` both right after the crash and at the end.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

import protocol.messages as m
from protocol import ProtocolError
from tests.test_hostile_support import wait_until
from tests.wire import Closed, Wire

USER, PASSWORD = "erin", "pw-erin"
SIZE = 8 << 20


def _download_size() -> int:
    """Big enough that the killed daemon's socket buffer cannot hold the rest of a download
    (the kernel flushes it after a kill), so every download really is cut mid-way."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as fh:
            wmem_max = int(fh.read().split()[2])
    except (OSError, ValueError, IndexError):
        wmem_max = 4 << 20
    return max(SIZE, wmem_max + (4 << 20))


DOWN_SIZE = _download_size()
FRAME = 64 * 1024
LOST = (Closed, OSError, ProtocolError)      # what a dead daemon looks like to a client


@dataclass
class Transfer:
    kind: str
    path: str
    data: bytes
    progress: int = 0
    connections: int = 0
    resume_offsets: list[int] = field(default_factory=list)
    result: Any = None
    error: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def connect(daemon: Any, deadline: float, **kwargs: Any) -> Wire:
    while True:
        try:
            return Wire(daemon.host, daemon.port, timeout=10, **kwargs)
        except (ConnectionRefusedError, ConnectionResetError, Closed):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_upload(daemon: Any, t: Transfer, crashed: threading.Event, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with connect(daemon, deadline) as wire:
                t.connections += 1
                wire.logged_in(USER, PASSWORD)
                ready = wire.call(m.Put(id=wire.next_id(), path=t.path, size=SIZE,
                                        sha256=t.sha256))
                if not isinstance(ready, m.PutReady):
                    t.error = f"put refused: {ready}"
                    return
                t.resume_offsets.append(ready.offset)
                pos = ready.offset
                while pos < SIZE:
                    wire.send_data(t.data[pos:pos + FRAME])
                    pos = min(SIZE, pos + FRAME)
                    t.progress = pos
                    if not crashed.is_set():
                        time.sleep(0.02)           # slow until the crash: ~3 MB/s
                t.result = wire.recv_reply()
                return
        except LOST:
            time.sleep(0.05)
    t.error = "gave up"


def run_download(daemon: Any, t: Transfer, crashed: threading.Event, deadline: float) -> None:
    held = bytearray()
    while time.monotonic() < deadline:
        try:
            with connect(daemon, deadline, max_data=FRAME, rcvbuf=FRAME) as wire:
                t.connections += 1
                wire.logged_in(USER, PASSWORD)
                ready = wire.call(m.Get(id=wire.next_id(), path=t.path, offset=len(held)))
                if not isinstance(ready, m.GetReady):
                    t.error = f"get refused: {ready}"
                    return
                t.resume_offsets.append(ready.offset)
                assert ready.sha256 == t.sha256
                while True:
                    event = wire.recv()
                    if not isinstance(event, bytes):
                        t.result = event
                        t.data = bytes(held)        # what was really received
                        return
                    held += event
                    t.progress = len(held)
                    if not crashed.is_set():
                        time.sleep(0.02)
        except LOST:
            time.sleep(0.05)
    t.error = "gave up"


def integrity(root: Any) -> str:
    db = sqlite3.connect(root / "users.db")
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


@pytest.mark.slow
def test_transfers_resume_and_verify_after_kill_9_and_restart(server_factory):
    daemon = server_factory()
    daemon.add_user(USER, PASSWORD, quota=1 << 30)
    home = daemon.root / "homes" / USER
    uploads = [Transfer("up", f"up-{i}.bin", os.urandom(SIZE)) for i in range(5)]
    downloads = []
    with Wire(daemon.host, daemon.port, timeout=30) as wire:
        wire.logged_in(USER, PASSWORD)
        for i in range(5):
            source = os.urandom(DOWN_SIZE)
            assert isinstance(wire.put(f"down-{i}.bin", source), m.PutDone)
            downloads.append(Transfer("down", f"down-{i}.bin", source))
    expected = {t.path: t.sha256 for t in uploads + downloads}

    # A poller: a target path may be absent or complete, never partial.
    stop = threading.Event()
    partial_sightings: list[tuple[str, int]] = []
    polls = 0

    def poll() -> None:
        nonlocal polls
        while not stop.is_set():
            for name in expected:
                try:
                    size = (home / name).stat().st_size
                except FileNotFoundError:
                    continue
                if size != (SIZE if name.startswith("up-") else DOWN_SIZE):
                    partial_sightings.append((name, size))
            polls += 1
            time.sleep(0.002)

    poller = threading.Thread(target=poll)
    poller.start()
    crashed = threading.Event()
    deadline = time.monotonic() + 60
    threads = [threading.Thread(target=run_upload, args=(daemon, t, crashed, deadline))
               for t in uploads]
    threads += [threading.Thread(target=run_download, args=(daemon, t, crashed, deadline))
                for t in downloads]
    try:
        for t in threads:
            t.start()
        transfers = uploads + downloads
        assert wait_until(lambda: all(t.progress >= 1 << 20 for t in transfers), 20)
        daemon.kill()
        at_kill = {t.path: t.progress for t in transfers}
        crashed.set()
        assert all(p < len(t.data) for t, p in zip(transfers, at_kill.values(),
                                                    strict=True)), at_kill   # truly mid-way
        assert integrity(daemon.root) == "ok"
        daemon.restart()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "a client hung"
    finally:
        crashed.set()
        stop.set()
        poller.join(10)

    for t in uploads:
        assert not t.error, (t.path, t.error)
        assert isinstance(t.result, m.PutDone) and t.result.sha256 == t.sha256, t.result
        assert t.connections >= 2, f"{t.path} never had to reconnect"
        # Resumed from the daemon's offset: progress survived the crash, never more than sent.
        assert 0 < t.resume_offsets[-1] <= at_kill[t.path], (t.path, t.resume_offsets)
        assert hashlib.sha256((home / t.path).read_bytes()).hexdigest() == t.sha256
    for t in downloads:
        assert not t.error, (t.path, t.error)
        assert isinstance(t.result, m.GetDone), t.result
        assert hashlib.sha256(t.data).hexdigest() == expected[t.path]
        assert t.connections >= 2 and t.resume_offsets[-1] > 0, (t.path, t.resume_offsets)
    assert not partial_sightings, partial_sightings[:10]
    assert polls > 50
    assert integrity(daemon.root) == "ok"
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        usage = wire.call(m.Quota(id=99))
        leftovers = wire.call(m.Uploads(id=100))
    assert usage.used == 5 * SIZE + 5 * DOWN_SIZE and usage.reserved == 0, usage
    assert leftovers.uploads == ()
