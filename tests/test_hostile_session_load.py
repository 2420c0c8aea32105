"""One session cannot stall the others (issue 13, items 1, 7, 8 and 13, daemon side).

White-box: a reactor in a thread of the test process (``inproc_server``), whose
store is wrapped so a walk or a listing blocks until the test lets it go.  What
is asserted is ordering -- another client is served while the heavy work is
still held -- never a duration.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from typing import Any

import pytest

import protocol.messages as m
from ftpd.transport import PlainTransport
from protocol import MessageStream, encode, encode_data
from tests.test_hostile_support import wait_until
from tests.wire import Wire

DEEP = "/" + "/".join(f"d{i}" for i in range(60))        # 60 levels (MAX_DEPTH is 64)


def _gate(obj: Any, name: str, when: Any = lambda *a, **k: True) -> threading.Event:
    """Make ``obj.name`` wait for the returned event (bounded) when ``when(*args)``."""
    gate = threading.Event()
    original = getattr(obj, name)

    def gated(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            assert gate.wait(20), "the test never opened the gate"
        return original(*args, **kwargs)
    setattr(obj, name, gated)
    return gate


def _ping_answered(wire: Wire, deadline: float = 10.0) -> bool:
    wire.sock.settimeout(deadline)
    try:
        pong = wire.call(m.Ping(id=wire.next_id(), payload="other"))
    except TimeoutError:
        return False
    return isinstance(pong, m.Pong) and pong.payload == "other"


# ---------------------------------------------------------------- item 1


def test_pipelined_deep_stats_do_not_freeze_another_client(inproc_server):
    """300 pipelined stats 60 levels down: the walks run on a worker, so while the
    first of them is still held another client's ping is answered."""
    daemon = inproc_server()
    daemon.add_user("deep", "pw")
    daemon.add_user("other", "pw")
    with Wire(daemon.host, daemon.port).logged_in("deep", "pw") as deep, \
            Wire(daemon.host, daemon.port).logged_in("other", "pw") as other:
        assert isinstance(deep.call(m.Mkdir(id=deep.next_id(), path=DEEP, parents=True)),
                          m.MkdirOk)
        gate = _gate(daemon.store, "stat", lambda user, path, *a: path == DEEP)
        ids = [deep.next_id() for _ in range(300)]
        deep.send_raw(b"".join(encode(m.Stat(id=i, path=DEEP)) for i in ids))
        try:
            assert _ping_answered(other), "the other client was frozen by the deep stats"
        finally:
            gate.set()
        replies = [deep.recv_reply() for _ in ids]
        assert [r.id for r in replies] == ids                  # in order, every one
        assert all(isinstance(r, m.StatOk) and r.path == DEEP for r in replies)


def test_cd_holds_the_folder_and_replies_plain_paths(inproc_server):
    daemon = inproc_server()
    daemon.add_user("deep", "pw")
    with Wire(daemon.host, daemon.port).logged_in("deep", "pw") as w:
        w.call(m.Mkdir(id=w.next_id(), path=DEEP, parents=True))
        gate = _gate(daemon.store, "open_workdir")
        w.send(m.Cd(id=w.next_id(), path=DEEP))
        with Wire(daemon.host, daemon.port).logged_in("deep", "pw") as other:
            assert _ping_answered(other), "cd ran on the loop"
        gate.set()
        assert w.recv_reply().path == DEEP
        assert w.call(m.Pwd(id=w.next_id())).path == DEEP
        assert w.call(m.Stat(id=w.next_id(), path="..")).path == DEEP.rsplit("/", 1)[0]
        assert w.call(m.Cd(id=w.next_id(), path="/d0")).path == "/d0"


def test_a_sessions_working_folder_descriptor_is_closed_on_cd_and_on_close(inproc_server):
    daemon = inproc_server()
    daemon.add_user("deep", "pw")

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))
    with Wire(daemon.host, daemon.port).logged_in("deep", "pw") as w:
        w.call(m.Mkdir(id=w.next_id(), path=DEEP, parents=True))
        assert w.call(m.Cd(id=w.next_id(), path="/d0")).path == "/d0"
        held = fds()                                    # two sockets and one folder
        for path in (DEEP, "/d0", DEEP):
            assert w.call(m.Cd(id=w.next_id(), path=path)).path == path
        assert fds() == held                            # each cd closed the one before
        w.call(m.Quit(id=w.next_id()))
        assert w.closed_by_peer()
    assert wait_until(lambda: fds() == held - 3, 10), (fds(), held)


# ---------------------------------------------------------------- items 7 and 8


def test_uploads_is_listed_on_a_worker(inproc_server):
    daemon = inproc_server()
    daemon.add_user("u", "pw")
    seen: list[str] = []
    original = daemon.store.list_uploads_page

    def recording(user: str, *args: Any) -> Any:
        seen.append(threading.current_thread().name)
        return original(user, *args)
    daemon.store.list_uploads_page = recording
    with Wire(daemon.host, daemon.port).logged_in("u", "pw") as w:
        assert w.put("/a", b"x" * 100, stop_at=10).offset == 0
        w.call(m.Cancel(id=w.next_id()))
        reply = w.recv_reply()
        while not isinstance(reply, m.CancelOk):
            reply = w.recv_reply()
        listing = w.call(m.Uploads(id=w.next_id()))
        assert [u.path for u in listing.uploads] == ["/a"]
    assert seen and "reactor" not in seen[0], seen


def test_one_users_listings_leave_workers_for_another_users_put(inproc_server, monkeypatch):
    """Six connections of one user list a folder whose listing is held: with two
    workers that user gets one; another user's put still completes meanwhile."""
    daemon = inproc_server(workers=2)
    daemon.add_user("hog", "pw")
    daemon.add_user("small", "pw")
    gate = _gate(daemon.store, "iter_dir", lambda user, *a: user == "hog")
    handled: list[int] = []
    ls = daemon.server.ctx.handlers["ls"]

    def counting_ls(session: Any, req: Any) -> Any:
        handled.append(req.id)
        return ls(session, req)
    monkeypatch.setitem(daemon.server.ctx.handlers, "ls", counting_ls)
    hogs = [Wire(daemon.host, daemon.port).logged_in("hog", "pw") for _ in range(6)]
    try:
        for w in hogs:
            w.send(m.Ls(id=w.next_id(), path="/"))
        assert wait_until(lambda: len(handled) == 6, 10)      # all six listings asked for
        with Wire(daemon.host, daemon.port).logged_in("small", "pw") as small:
            small.sock.settimeout(10)
            done = small.put("/tiny", b"hi")
            assert isinstance(done, m.PutDone) and done.size == 2
        gate.set()
        assert all(isinstance(w.recv_reply(), m.LsOk) for w in hogs)
    finally:
        gate.set()
        for w in hogs:
            w.close()


# ---------------------------------------------------------------- item 13


class _PeakTransport(PlainTransport):
    """Records the largest output queue; the socket's own send buffer is made small so
    that the queue, not the kernel, holds what the peer does not read."""

    peak = 0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        assert self.sock is not None
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    def write(self, data: bytes | memoryview) -> None:
        super().write(data)
        _PeakTransport.peak = max(_PeakTransport.peak, self.get_write_buffer_size())


def _send_until_refused(sock: socket.socket, data: bytes) -> int:
    """Send what the daemon reads; stop once it has read nothing for a second."""
    sock.setblocking(False)
    sent = 0
    while sent < len(data):
        _, writable, _ = select.select([], [sock], [], 1.0)
        if not writable:
            break                                   # the daemon stopped reading
        try:
            sent += sock.send(data[sent:sent + 65536])
        except BlockingIOError:
            continue
    return sent


@pytest.mark.parametrize("during_upload", [True, False], ids=["during-upload", "idle"])
def test_pipelined_requests_stop_being_answered_over_the_high_water_mark(inproc_server,
                                                                         during_upload):
    """10,000 pipelined pings from a client that never reads: the daemon's queued
    output stays within the high-water mark plus one reply."""
    high = 64 * 1024
    # Clear text: the test swaps in a plain transport that records its queue's peak.
    daemon = inproc_server(high_water=high, low_water=16 * 1024, tls=False)
    daemon.add_user("flood", "pw")
    server = daemon.server
    _PeakTransport.peak = 0
    server.make_transport = lambda sock, peer: _PeakTransport(server.io, sock, peer)
    w = Wire(daemon.host, daemon.port, rcvbuf=4096).logged_in("flood", "pw")
    try:
        head = b""
        if during_upload:
            ready = w.call(m.Put(id=w.next_id(), path="/big", size=1 << 20))
            assert isinstance(ready, m.PutReady)
            head = encode_data(b"x" * 1000)
        payload = "p" * 1000
        flood = head + b"".join(encode(m.Ping(id=1000 + i, payload=payload))
                                for i in range(10_000))
        sent = _send_until_refused(w.sock, flood)
        assert sent < len(flood), "the daemon read everything: no backpressure at all"
        assert _PeakTransport.peak <= high + 2 * 1100, _PeakTransport.peak
        # The connection is intact: what was answered arrives in order.
        w.sock.setblocking(True)
        w.sock.settimeout(10)
        stream, got = MessageStream("client"), []
        while len(got) < 50:
            got += [e for e in stream.feed(w.sock.recv(65536)) if hasattr(e, "id")]
        ids = [e.id for e in got[:50]]
        assert ids == sorted(ids)
    finally:
        w.close()
