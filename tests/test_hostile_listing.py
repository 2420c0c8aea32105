"""A huge folder cannot be used to grow the daemon or starve other users (issue 13,
items 7 and 8): listings stream a batch at a time (ftpd/listing.py).

The folder is made on disk directly (20,000 empty files with long names: its
whole listing is about 3.5 MB on the wire and several times that as Python
objects).  What is asserted: the listings complete and are whole; another
user's put completes meanwhile (within a generous deadline, not a ratio); the
daemon's peak memory grows by far less than one whole listing; and a client
that stops reading stops the reading of the folder.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import protocol.messages as m
from ftpd import listing
from ftpd.transport import PlainTransport
from protocol import encode
from protocol.framing import ControlFrame, FrameDecoder
from tests.test_hostile_support import wait_until
from tests.wire import Wire

ENTRIES = 20_000


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, set[str]]]:
    """A folder of ``ENTRIES`` names made once for the module (hard links of one empty
    file: several times cheaper to make than as many files); each test moves it into a
    home and back (a rename within one file system)."""
    parked = tmp_path_factory.mktemp("listing") / "big"
    parked.mkdir()
    one = parked.parent / "one"
    one.write_bytes(b"")
    names = {f"{i:05d}-{'n' * 50}" for i in range(ENTRIES)}
    for name in names:
        os.link(one, parked / name)
    yield parked, names


@contextmanager
def moved_into(big: tuple[Path, set[str]], home: Path) -> Iterator[set[str]]:
    parked, names = big
    os.rename(parked, home / "big")
    try:
        yield names
    finally:
        os.rename(home / "big", parked)


def wire_size(names: set[str]) -> int:
    """The bytes of the whole listing on the wire (what the daemon used to hold at once,
    as objects several times larger)."""
    return len(encode(m.LsOk(id=1, path="/big", entries=tuple(
        m.Entry(name=n, type="file", size=0, mtime=1.0) for n in names))))


def read_listing(w: Wire) -> list[str]:
    """Every name of a listing, its pages read with the test's own decoder."""
    names: list[str] = []
    while True:
        page = w.recv_reply()
        assert isinstance(page, m.LsOk), page
        names += [e.name for e in page.entries]
        if not page.more:
            return names


def read_names_fast(w: Wire, request_id: int) -> list[str]:
    """``read_listing`` for 20,000 entries on four connections at once: frames and JSON
    only (the message classes' checks of every field would cost seconds of the test's
    time; the daemon's output is checked field by field by the other tests)."""
    decoder, names = FrameDecoder(max_control=64 * 1024), []
    while True:
        chunk = w.sock.recv(1 << 20)
        assert chunk, "the daemon closed mid-listing"
        for frame in decoder.feed(chunk):
            assert isinstance(frame, ControlFrame)
            page = json.loads(frame.payload)
            assert (page["type"], page["id"]) == ("ls", request_id), page
            names += [e["name"] for e in page.get("entries", ())]
            if not page.get("more"):
                return names


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def open_folders(folder: Path) -> list[str]:
    """This process's descriptors open on ``folder``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(folder):
                found.append(fd)
        except OSError:
            pass                        # closed meanwhile
    return found


def readable(w: Wire) -> bool:
    return bool(select.select([w.sock], [], [], 0)[0])


def test_several_listings_of_a_huge_folder_stay_small_and_leave_room_for_another_put(
        server_factory, big):
    daemon = server_factory()
    daemon.add_user("hog", "pw")
    daemon.add_user("small", "pw")
    with moved_into(big, daemon.root / "homes" / "hog") as names:
        _several_listings(daemon, names)


def _several_listings(daemon: Any, names: set[str]) -> None:
    whole = wire_size(names)
    hogs = [Wire(daemon.host, daemon.port, timeout=60).logged_in("hog", "pw")
            for _ in range(3)]
    try:
        with Wire(daemon.host, daemon.port, timeout=60).logged_in("small", "pw") as small:
            for w in hogs:                          # warm: every code path has run once
                assert read_listing_of(w, "/") == ["big"]
            assert isinstance(small.put("/warm", b"w"), m.PutDone)
            before = peak_rss(daemon.pid)

            ids = [w.next_id() for w in hogs]
            for w, i in zip(hogs, ids, strict=True):
                w.send(m.Ls(id=i, path="/big"))
            # Each listing has begun: its first page is on its way (a listing built whole
            # exists whole by then) ...
            assert wait_until(lambda: all(readable(w) for w in hogs), 60)
            got: list[list[str] | None] = [None] * len(hogs)

            def drain(k: int) -> None:
                got[k] = read_names_fast(hogs[k], ids[k])
            readers = [threading.Thread(target=drain, args=(k,)) for k in range(len(hogs))]
            for t in readers:
                t.start()
            # ... and while they are read, another user's small put completes.
            done = small.put("/tiny", b"hi")
            assert isinstance(done, m.PutDone) and done.size == 2
            for t in readers:
                t.join(120)
            assert all(g is not None and len(g) == ENTRIES and set(g) == names for g in got)
            growth = peak_rss(daemon.pid) - before
            # Built whole, three listings grew the daemon by about 6x `whole`;
            # streamed, each costs its output queue (high_water) and one batch.
            assert growth < 2 * whole, (growth, whole)
    finally:
        for w in hogs:
            w.close()


def read_listing_of(w: Wire, path: str) -> list[str]:
    w.send(m.Ls(id=w.next_id(), path=path))
    return read_listing(w)


class _SmallSendBuffer(PlainTransport):
    """The socket's send buffer made small, so that the daemon's queue, not the kernel,
    holds what the peer does not read.  Records the queue's peak and whether the daemon
    stopped producing: its queue went over ``high_water``, or a listing waited for it
    to drain to ``low_water`` before reading its next batch."""

    peak = 0
    stopped = threading.Event()

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        assert self.sock is not None
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    def write(self, data: bytes | memoryview) -> None:
        super().write(data)
        size = self.get_write_buffer_size()
        _SmallSendBuffer.peak = max(_SmallSendBuffer.peak, size)
        if size > self._io.high_water:
            _SmallSendBuffer.stopped.set()

    def wait_for_low_water(self) -> bool:
        waits = super().wait_for_low_water()
        if waits:
            _SmallSendBuffer.stopped.set()
        return waits


def test_a_client_that_stops_reading_stops_the_reading_of_the_folder(inproc_server, big):
    daemon = inproc_server(high_water=64 * 1024, low_water=16 * 1024, tls=False)
    daemon.add_user("hog", "pw")
    with moved_into(big, daemon.root / "homes" / "hog") as names:
        _stopped_reader(daemon, names)


def _stopped_reader(daemon: Any, names: set[str]) -> None:
    high = 64 * 1024
    server = daemon.server
    _SmallSendBuffer.peak = 0
    _SmallSendBuffer.stopped.clear()
    server.make_transport = lambda sock, peer: _SmallSendBuffer(server.io, sock, peer)
    batches: list[int] = []
    real = daemon.store.iter_dir

    def counted(*args: Any) -> Any:
        for page in real(*args):
            batches.append(len(page))
            yield page
    daemon.store.iter_dir = counted
    with Wire(daemon.host, daemon.port, rcvbuf=4096).logged_in("hog", "pw") as w:
        w.send(m.Ls(id=w.next_id(), path="/big"))
        # The daemon fills its queue (to the high-water mark, or a batch's worth past the
        # low-water mark), then waits for the client: from here on it reads nothing more.
        assert _SmallSendBuffer.stopped.wait(30)
        assert sum(batches) <= 2 * listing.LIST_BATCH, batches     # of 20,000
        assert _SmallSendBuffer.peak <= high + listing.PAGE_BUDGET
        # Read again, it is all there, once.
        got = read_listing(w)
        assert len(got) == ENTRIES and set(got) == names
        assert _SmallSendBuffer.peak <= high + listing.PAGE_BUDGET
    # A client that leaves mid-listing: its folder is closed.
    read = len(batches)
    with Wire(daemon.host, daemon.port, rcvbuf=4096).logged_in("hog", "pw") as w:
        w.send(m.Ls(id=w.next_id(), path="/big"))
        assert wait_until(lambda: len(batches) > read, 30)
    assert wait_until(lambda: not open_folders(daemon.root / "homes" / "hog" / "big"), 10)
