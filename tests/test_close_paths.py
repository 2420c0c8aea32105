"""Every way a connection ends or a request fails, run for real, with its visible effect.

Issue 19 found these paths never executed by any test.  Each test here drives
one through the wire protocol, a setting, or a fault injected at the OS
boundary (``os.write``, ``os.open``, ``os.fsync``, ``socket.send``, the
descriptor limit) -- never through the daemon's private names, so the tests
hold while ``ftpd/`` is refactored -- and asserts what a client or an operator
can see: the reply, the log line, the stream that ends, the upload that
resumes.  The in-process daemon (``inproc_server``) keeps its log in memory
(``daemon.log()``, ``daemon.wait_for_log``); nothing waits for a fixed time.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import resource
import socket
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

import protocol.messages as m
from protocol import MessageStream, ProtocolError, encode, encode_data
from tests.daemon import wait_for
from tests.wire import Wire

USER, PASSWORD = "closer", "pw-closer"
PONG_FLOOD = 8192          # pings of 1000 characters: ~8 MiB of replies, more than any socket
                           # buffer holds, so a client that does not read leaves output queued


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def home(daemon: Any) -> Path:
    return Path(daemon.root) / "homes" / USER


def started(inproc_server: Any, **settings: Any) -> Any:
    daemon = inproc_server(**settings)
    daemon.add_user(USER, PASSWORD)
    return daemon


def session(daemon: Any, **kwargs: Any) -> Wire:
    return Wire(daemon.host, daemon.port, **kwargs).logged_in(USER, PASSWORD)


def pong_flood() -> bytes:
    return b"".join(encode(m.Ping(id=1000 + i, payload="p" * 1000)) for i in range(PONG_FLOOD))


def read_to_the_end(sock: socket.socket, timeout: float = 20.0) -> str:
    """Read and drop everything until the daemon's side is gone: "eof" or "reset"."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return "reset"
    return "eof"


def still_served(daemon: Any) -> bool:
    """A new session is greeted, logs in and gets its ping answered with its id."""
    with session(daemon) as wire:
        pong = wire.call(m.Ping(id=77, payload="still there?"))
    return isinstance(pong, m.Pong) and pong.id == 77 and pong.payload == "still there?"


def big_file(daemon: Any, name: str, size: int) -> bytes:
    """A file put straight into the user's home (no upload needed to download it)."""
    data = os.urandom(size)
    (home(daemon) / name).write_bytes(data)
    return data


def received_until_cut(wire: Wire) -> bytes:
    """The DATA bytes that arrive until the stream ends inside a frame (as it must when a
    download is cut short: a client can tell it from a finished one).  Any control frame
    in between fails the test: inside a DATA frame it would corrupt the file's bytes."""
    body = bytearray()
    with pytest.raises(ProtocolError, match="inside a frame"):
        wire.sock.settimeout(30)
        while True:
            event = wire.recv()
            assert isinstance(event, bytes), f"a control frame inside the download: {event}"
            body += event
    return bytes(body)


def stalled_download(daemon: Any, name: str, **wire: Any) -> tuple[Wire, m.GetReady]:
    """A download to a client that reads nothing: the daemon is left inside a DATA frame."""
    w = session(daemon, rcvbuf=4096, **wire)
    ready = w.call(m.Get(id=w.next_id(), path=name, verify=False))
    assert isinstance(ready, m.GetReady), ready
    return w, ready


# ---------------------------------------------------------------- closing connections


@pytest.mark.slow
def test_a_closing_connection_whose_peer_does_not_read_is_cut_after_the_drain_limit(
        inproc_server):
    """``quit`` behind ~8 MiB of replies the client never reads: the daemon stops reading,
    tries to drain, and after FORCE_CLOSE_AFTER (5 s) cuts the connection, saying why."""
    daemon = started(inproc_server, high_water=64 << 20, low_water=1 << 20)
    wire = session(daemon, rcvbuf=4096)
    with wire:
        wire.send_raw(pong_flood() + encode(m.Quit(id=2)))
        daemon.wait_for_log(rf"close \S+ user={USER} reason=quit; peer did not read seconds=", 30)
        assert read_to_the_end(wire.sock) in ("eof", "reset")
    assert still_served(daemon)


def test_a_fatal_error_inside_a_download_frame_ends_the_stream_without_an_error_frame(
        inproc_server):
    """A broken frame header from the client while a DATA frame is half sent: no error
    frame can be put inside the DATA, so the connection ends at once (mid-frame, not
    after a drain), the download is logged as interrupted, and every byte that did
    arrive is the file's."""
    daemon = started(inproc_server, max_data_frame=16 << 20)
    data = big_file(daemon, "big.bin", 16 << 20)
    wire, _ = stalled_download(daemon, "big.bin")
    with wire:
        wire.send_raw(b"\xff\xff\xff\xff\x01")           # a 4 GiB control frame: fatal
        daemon.wait_for_log(rf"download user={USER} path=/big.bin bytes=\d+ .* "
                            r"result=interrupted \(FRAME_TOO_LARGE\)")
        daemon.wait_for_log(rf"close \S+ user={USER} reason=frame_too_large seconds=")
        body = received_until_cut(wire)
    assert len(body) < len(data) and body == data[:len(body)]
    assert still_served(daemon)


def test_a_bug_in_a_request_handler_is_an_internal_error_and_a_close(inproc_server,
                                                                      monkeypatch):
    daemon = started(inproc_server)
    daemon.allow_tracebacks = True                   # the bug's traceback is the point

    def buggy_stat(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected bug in stat")

    monkeypatch.setattr(daemon.store, "stat", buggy_stat)
    with session(daemon) as wire:
        reply = wire.call(m.Stat(id=5, path="anything"))
        assert isinstance(reply, m.ErrorReply) and reply.code == "INTERNAL"
        assert wire.closed_by_peer()
    daemon.wait_for_log(r"(?s)failed; closing it.*RuntimeError: injected bug in stat")
    assert still_served(daemon)


def test_a_bug_in_a_worker_jobs_completion_is_an_internal_error_and_a_close(inproc_server,
                                                                             monkeypatch):
    daemon = started(inproc_server)
    daemon.allow_tracebacks = True

    def buggy_iter_dir(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected bug in iter_dir")

    monkeypatch.setattr(daemon.store, "iter_dir", buggy_iter_dir)
    with session(daemon) as wire:
        reply = wire.call(m.Ls(id=6, path="/"))
        assert isinstance(reply, m.ErrorReply) and reply.code == "INTERNAL"
        assert wire.closed_by_peer()
    daemon.wait_for_log(r"(?s)completion failed on \S+.*RuntimeError: injected bug in iter_dir")
    assert still_served(daemon)


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_a_stalled_transfer_times_out(inproc_server, direction):
    """No progress for ``stall_timeout``: an upload gets TIMEOUT and a close, and keeps
    its bytes for a resume; a download (stuck inside a frame) is cut without a frame."""
    daemon = started(inproc_server, stall_timeout=0.3, max_data_frame=16 << 20)
    if direction == "upload":
        with session(daemon) as wire:
            assert isinstance(wire.put("slow.bin", b"x" * 1000, stop_at=10), m.PutReady)
            reply = wire.recv_reply()
            assert reply.code == "TIMEOUT" and "stalled" in reply.message
            assert wire.closed_by_peer()
        with session(daemon) as wire:
            held = wire.call(m.Uploads(id=wire.next_id())).uploads
            assert [(u.path, u.offset) for u in held] == [("/slow.bin", 10)]
    else:
        data = big_file(daemon, "big.bin", 16 << 20)
        wire, _ = stalled_download(daemon, "big.bin")
        with wire:
            daemon.wait_for_log(rf"download user={USER} path=/big.bin .* "
                                r"result=interrupted \(TIMEOUT\)")
            body = received_until_cut(wire)
        assert len(body) < len(data) and body == data[:len(body)]
    assert re.search(rf"timeout \S+ user={USER} \(transfer stalled\)", daemon.log())


# ---------------------------------------------------------------- downloads


@pytest.mark.parametrize("use_sendfile", [True, False], ids=["sendfile", "pread"])
def test_a_download_arrives_whole_with_and_without_sendfile(inproc_server, use_sendfile):
    daemon = started(inproc_server, use_sendfile=use_sendfile)
    data = big_file(daemon, "d.bin", 3 * (1 << 20) + 12345)
    with session(daemon) as wire:
        ready, body, done = wire.get("d.bin")
    assert ready.sha256 == sha(data) and body == data
    assert isinstance(done, m.GetDone) and done.size == len(data)


@pytest.mark.parametrize("use_sendfile", [True, False], ids=["sendfile", "pread"])
def test_a_file_that_shrinks_during_its_download_ends_the_stream(inproc_server, use_sendfile):
    """The file is truncated while its download waits for a slow client: the frame in
    progress cannot be finished, so the stream ends inside it -- the client can tell it
    is cut short -- and the reason is logged."""
    daemon = started(inproc_server, use_sendfile=use_sendfile)
    data = big_file(daemon, "shrinks.bin", 16 << 20)
    wire, _ = stalled_download(daemon, "shrinks.bin")
    with wire:
        os.truncate(home(daemon) / "shrinks.bin", 0)
        body = received_until_cut(wire)
    assert len(body) < len(data) and body == data[:len(body)]
    daemon.wait_for_log(rf"close \S+ user={USER} reason=file shrank during download seconds=")
    assert still_served(daemon)


def test_replies_the_socket_takes_only_in_part_arrive_whole(inproc_server, monkeypatch):
    """Every ``send`` of the daemon accepts at most 1000 bytes: queued replies, a paged
    listing and a download without sendfile go out in pieces and arrive intact."""
    real_send = socket.socket.send
    reactor: list[threading.Thread] = []

    def short_send(self: socket.socket, data: Any, *flags: Any) -> int:
        if threading.current_thread() in reactor:
            data = memoryview(data)[:1000]
        return real_send(self, data, *flags)

    monkeypatch.setattr(socket.socket, "send", short_send)
    daemon = started(inproc_server, use_sendfile=False)
    reactor.append(daemon.thread)
    data = big_file(daemon, "p.bin", 300_000)
    for i in range(300):
        (home(daemon) / f"file-{i:03d}-{'n' * 60}").write_bytes(b"")
    with session(daemon) as wire:
        pages = []
        wire.send(m.Ls(id=10, path="/"))
        while not pages or pages[-1].more:
            pages.append(wire.recv_reply())
        assert sum(len(page.entries) for page in pages) == 301 and len(pages) >= 2
        ready, body, done = wire.get("p.bin")
        assert body == data and isinstance(done, m.GetDone)
        pong = wire.call(m.Ping(id=11, payload="q" * 1000))
        assert pong.id == 11 and pong.payload == "q" * 1000


# ---------------------------------------------------------------- the daemon itself


def lowest_free_fd(pid: int) -> int:
    used = {int(name) for name in os.listdir(f"/proc/{pid}/fd")}
    fd = 0
    while fd in used:
        fd += 1
    return fd


def test_accepting_pauses_when_the_daemon_runs_out_of_descriptors(server_factory):
    """The descriptor limit is lowered under the running daemon so the next ``accept``
    fails with EMFILE: the daemon logs it, pauses accepting instead of spinning, and
    greets the waiting client once descriptors are available again.  (Clear text: the
    raw socket reads the greeting itself.)"""
    daemon = server_factory(tls=False)
    soft, hard = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (lowest_free_fd(daemon.pid), hard))
    waiting = socket.create_connection((daemon.host, daemon.port), timeout=20)
    try:
        wait_for(lambda: "pausing accepts for a second" in daemon.log(), 20,
                 "the EMFILE warning")
    finally:
        resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (soft, hard))
    with waiting:
        stream = MessageStream("client")
        events: list[Any] = []
        while not events:
            chunk = waiting.recv(65536)
            assert chunk, "closed instead of greeted"
            events += stream.feed(chunk)
        assert isinstance(events[0], m.Greeting)
    # One warning per pause, not one per turn of the loop: it did not spin on the
    # listening socket (the limit was low only until the first warning was seen).
    assert 1 <= daemon.log().count("accept failed: [Errno 24]") < 5


def test_the_database_is_checkpointed_periodically_on_a_worker(inproc_server, monkeypatch):
    import ftpd.server

    monkeypatch.setattr(ftpd.server, "CHECKPOINT_INTERVAL", 0.05)
    daemon = started(inproc_server)
    real = daemon.store.checkpoint
    threads: list[str] = []

    def checkpoint() -> Any:
        threads.append(threading.current_thread().name)
        return real()

    monkeypatch.setattr(daemon.store, "checkpoint", checkpoint)
    wait_for(lambda: len(threads) >= 3, 20, "three checkpoints")
    assert daemon.thread.name not in threads and all("worker" in name for name in threads)


def test_a_failed_checkpoint_is_logged_and_the_daemon_goes_on(inproc_server, monkeypatch):
    import ftpd.server

    monkeypatch.setattr(ftpd.server, "CHECKPOINT_INTERVAL", 0.05)
    daemon = started(inproc_server)

    def checkpoint() -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(daemon.store, "checkpoint", checkpoint)
    daemon.wait_for_log(r"WARNING ftpd: database checkpoint failed: disk I/O error")
    assert still_served(daemon)


# ---------------------------------------------------------------- failed writes and commits


class Fault:
    """An error injected into one kind of OS call on staging files (partial uploads)
    until ``clear()`` ("space is back"): ``OSError(code)`` for an errno, or the given
    exception itself (a file system misbehaving in a way nobody planned for)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, call: str,
                 code: int | BaseException) -> None:
        self.call, self.code, self.on, self.hits = call, code, True, 0
        self.real = getattr(os, call)
        monkeypatch.setattr(os, call, getattr(self, call))

    def clear(self) -> None:
        self.on = False

    def _fail(self) -> None:
        self.hits += 1
        if isinstance(self.code, int):
            raise OSError(self.code, os.strerror(self.code))
        raise self.code

    @staticmethod
    def _staging(fd: int) -> bool:
        try:
            return "/staging/" in os.readlink(f"/proc/self/fd/{fd}") and \
                stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            return False

    def write(self, fd: int, data: Any) -> int:
        if self.on and self._staging(fd):
            self._fail()
        return self.real(fd, data)

    def fsync(self, fd: int) -> None:
        if self.on and self._staging(fd):
            self._fail()
        return self.real(fd)

    def open(self, path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if self.on and str(path).endswith(".part") and flags & os.O_CREAT:
            self._fail()
        return self.real(path, flags, *args, **kwargs)


SPACE = [errno.ENOSPC, errno.EDQUOT]
SPACE_IDS = ["ENOSPC", "EDQUOT"]


@pytest.mark.parametrize("code", SPACE, ids=SPACE_IDS)
@pytest.mark.parametrize("call", ["write", "open", "fsync"])
def test_no_space_on_any_write_path_of_a_put_is_no_space(inproc_server, monkeypatch, call,
                                                         code):
    """The disk fills (or the user's disk quota runs out) while a put writes its bytes
    (``write``), creates its partial (``open``, in begin) or makes it durable (the
    commit's ``fsync``): the put gets NO_SPACE and the session goes on."""
    daemon = started(inproc_server)
    fault = Fault(monkeypatch, call, code)
    with session(daemon) as wire:
        reply = wire.put("full.bin", os.urandom(200_000))
        assert isinstance(reply, m.ErrorReply) and reply.code == "NO_SPACE", reply
        assert fault.hits >= 1
        assert isinstance(wire.call(m.Ping(id=wire.next_id())), m.Pong)


@pytest.mark.parametrize("code", SPACE, ids=SPACE_IDS)
@pytest.mark.parametrize("call", ["write", "open",
                                  "fsync"])
def test_a_put_refused_for_lack_of_space_completes_once_space_is_back(inproc_server,
                                                                      monkeypatch, call, code):
    daemon = started(inproc_server)
    data = os.urandom(200_000)
    fault = Fault(monkeypatch, call, code)
    with session(daemon) as wire:
        assert wire.put("full.bin", data).code == "NO_SPACE"
        fault.clear()
        done = wire.put("full.bin", data)
        assert isinstance(done, m.PutDone) and done.sha256 == sha(data), done
    assert (home(daemon) / "full.bin").read_bytes() == data


@pytest.mark.parametrize("code", SPACE, ids=SPACE_IDS)
@pytest.mark.parametrize("call", ["write", "fsync"])
def test_no_space_for_an_inline_put_is_no_space_and_leaves_nothing(inproc_server,
                                                                   monkeypatch, call, code):
    """Inline puts are whole files: one that meets a full disk gets NO_SPACE in its
    place in the pipeline, leaves no partial or file, and the next one succeeds."""
    daemon = started(inproc_server)
    fault = Fault(monkeypatch, call, code)
    with session(daemon) as wire:
        wire.send_raw(encode(m.Put(id=1, path="a.txt", size=5, sha256=sha(b"hello"),
                                   inline=True)) + encode_data(b"hello"))
        reply = wire.recv_reply()
        assert isinstance(reply, m.ErrorReply) and reply.code == "NO_SPACE" and reply.id == 1
        assert wire.call(m.Uploads(id=2)).uploads == ()
        fault.clear()
        wire.send_raw(encode(m.Put(id=3, path="a.txt", size=5, sha256=sha(b"hello"),
                                   inline=True)) + encode_data(b"hello"))
        done = wire.recv_reply()
        assert isinstance(done, m.PutDone) and done.id == 3
    assert (home(daemon) / "a.txt").read_bytes() == b"hello"


def test_an_io_error_in_a_commit_is_io_error_and_the_session_goes_on(inproc_server,
                                                                      monkeypatch):
    daemon = started(inproc_server)
    Fault(monkeypatch, "fsync", errno.EIO)
    with session(daemon) as wire:
        reply = wire.put("eio.bin", os.urandom(100_000))
        assert isinstance(reply, m.ErrorReply) and reply.code == "IO_ERROR", reply
        assert isinstance(wire.call(m.Ping(id=wire.next_id())), m.Pong)
    assert not (home(daemon) / "eio.bin").exists()


def test_a_put_whose_commit_failed_can_be_retried(inproc_server, monkeypatch):
    daemon = started(inproc_server)
    data = os.urandom(100_000)
    fault = Fault(monkeypatch, "fsync", errno.EIO)
    with session(daemon) as wire:
        assert wire.put("eio.bin", data).code == "IO_ERROR"
        fault.clear()
        done = wire.put("eio.bin", data)
        assert isinstance(done, m.PutDone) and done.sha256 == sha(data), done


def test_an_unexpected_error_in_a_commit_is_io_error_and_logged(inproc_server, monkeypatch):
    daemon = started(inproc_server)
    daemon.allow_tracebacks = True                     # logged with its traceback, on purpose
    Fault(monkeypatch, "fsync", RuntimeError("injected: the file system driver misbehaves"))
    with session(daemon) as wire:
        reply = wire.put("odd.bin", b"z" * 1000)
        assert isinstance(reply, m.ErrorReply) and reply.code == "IO_ERROR", reply
        assert "driver misbehaves" in reply.message
        assert isinstance(wire.call(m.Ping(id=wire.next_id())), m.Pong)
    daemon.wait_for_log(r"(?s)commit of /odd.bin failed.*RuntimeError: injected")


@pytest.mark.parametrize("failure", ["EIO", "unexpected"])
def test_a_failed_inline_store_is_io_error_for_each_put(inproc_server, monkeypatch, failure):
    daemon = started(inproc_server)
    if failure == "unexpected":
        daemon.allow_tracebacks = True                 # logged with its traceback, on purpose
        Fault(monkeypatch, "fsync", RuntimeError("injected: the group commit broke"))
    else:
        Fault(monkeypatch, "fsync", errno.EIO)
    with session(daemon) as wire:
        wire.send_raw(b"".join(
            encode(m.Put(id=i, path=f"f{i}.txt", size=3, inline=True)) + encode_data(b"abc")
            for i in (1, 2, 3)))
        replies = [wire.recv_reply() for _ in range(3)]
        assert [(r.id, r.code) for r in replies] == [(i, "IO_ERROR") for i in (1, 2, 3)]
        assert isinstance(wire.call(m.Ping(id=4)), m.Pong)
    assert not any(home(daemon).iterdir())
    if failure == "unexpected":
        daemon.wait_for_log(r"(?s)storing inline put f1.txt failed.*RuntimeError: injected")
