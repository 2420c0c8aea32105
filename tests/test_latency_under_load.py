"""Small requests stay prompt while big transfers run (issue 17, latency under load).

Each test pins one rule that the profile in docs/BENCHMARKS.md ("Latency under
load: profile and fixes") showed was needed: short worker jobs do not queue
behind long ones; a turn of the reactor serves the connections with requests
before the streaming ones and gives the streaming ones a time budget; a
streaming connection reads or sends one buffer per wake-up once the turn's
time is up.  No timing is asserted: clocks are the tests' own, and order is
observed directly.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

import protocol.messages as m
from ftpd.timers import TimerHeap
from ftpd.transport import IOContext, PlainTransport
from ftpd.turns import TurnScheduler
from ftpd.workers import LongJob, SyncJob, WorkerPool
from protocol import encode_data
from tests.test_session_unit import Harness

WAIT = 10.0     # a bound on waiting for worker threads, never reached when all is well

# ------------------------------------------------------------------ worker lanes


def _pump(pool: WorkerPool, finished: threading.Event) -> None:
    """Run the pool's callbacks, as the reactor does, until ``finished`` (bounded)."""
    sel = selectors.DefaultSelector()
    sel.register(pool.wake_r, selectors.EVENT_READ)
    try:
        for _ in range(100):
            if finished.is_set():
                return
            sel.select(WAIT / 100)
            pool.run_callbacks()
    finally:
        sel.close()


@pytest.mark.parametrize("disk_job", [LongJob, SyncJob], ids=["long", "small-puts"])
def test_a_short_job_runs_while_disk_jobs_fill_their_lane(disk_job):
    # LongJob: flushes and commits.  SyncJob (session 7): a group of small puts
    # (write + fsync, slow behind streaming uploads), which used to take the worker
    # kept for short jobs, so that every ls waited for them.
    pool = WorkerPool(2)                 # one disk job at a time; a thread kept for short ones
    order: list[str] = []
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    left = [3]

    def done(_: Any, error: BaseException | None) -> None:
        assert error is None
        left[0] -= 1
        if not left[0]:
            finished.set()

    def first() -> None:
        started.set()
        assert release.wait(WAIT)

    def short() -> None:
        order.append("short")
        release.set()

    try:
        pool.submit(disk_job(first), done)
        assert started.wait(WAIT)
        pool.submit(disk_job(lambda: order.append("disk")), done)
        pool.submit(short, done)
        _pump(pool, finished)
        assert order == ["short", "disk"]
    finally:
        release.set()
        pool.close()


def test_a_group_of_small_puts_and_a_flush_share_one_lane():
    pool = WorkerPool(3)                 # two disk jobs at once, a thread kept for short ones
    order: list[str] = []
    gate, finished = threading.Event(), threading.Event()
    running = threading.Semaphore(0)
    left = [4]

    def done(_: Any, error: BaseException | None) -> None:
        assert error is None
        left[0] -= 1
        if not left[0]:
            finished.set()

    def held(name: str) -> None:
        running.release()
        assert gate.wait(WAIT)
        order.append(name)

    def listing() -> None:
        order.append("ls")
        gate.set()

    try:
        pool.submit(LongJob(lambda: held("flush")), done)
        pool.submit(SyncJob(lambda: held("put")), done)
        assert running.acquire(timeout=WAIT) and running.acquire(timeout=WAIT)
        pool.submit(SyncJob(lambda: order.append("put2")), done)   # the lane is full
        pool.submit(listing, done)
        _pump(pool, finished)
        # the listing went first; the third disk job only once one of the two left
        assert order[0] == "ls"
        assert order.index("put2") > min(order.index("flush"), order.index("put"))
    finally:
        gate.set()
        pool.close()


def test_a_stream_of_short_jobs_does_not_starve_a_long_one():
    pool = WorkerPool(2)                 # both threads busy with short jobs at first
    order: list[str] = []
    gates = [threading.Event(), threading.Event()]
    running = threading.Semaphore(0)
    first = threading.Event()

    def blocker(gate: threading.Event) -> None:
        running.release()
        assert gate.wait(WAIT)

    def record(name: str) -> None:
        order.append(name)
        first.set()

    try:
        for gate in gates:
            pool.submit(lambda gate=gate: blocker(gate), lambda r, e: None)
        assert running.acquire(timeout=WAIT) and running.acquire(timeout=WAIT)
        pool.submit(LongJob(lambda: record("long")), lambda r, e: None)
        pool.submit(lambda: record("short"), lambda r, e: None)
        gates[0].set()                   # one thread comes free: the older job is the long one
        assert first.wait(WAIT)
        assert order[0] == "long"
    finally:
        for gate in gates:
            gate.set()
        pool.close()


def test_with_one_thread_long_jobs_still_run():
    pool = WorkerPool(1)
    results: list[Any] = []
    ran = threading.Event()
    try:
        pool.submit(LongJob(lambda: 41 + 1), lambda r, e: (results.append(r), ran.set()))
        sel = selectors.DefaultSelector()
        sel.register(pool.wake_r, selectors.EVENT_READ)
        for _ in range(100):
            if ran.is_set():
                break
            sel.select(WAIT / 100)
            pool.run_callbacks()
        sel.close()
        assert results == [42]
    finally:
        pool.close()


# ------------------------------------------------------------------ the turn scheduler


class _Key:
    def __init__(self, data: Any) -> None:
        self.data = data


class _Conn:
    """A ready connection: records its turn in ``log``, costs ``cost`` clock seconds."""

    def __init__(self, name: str, heavy: bool, log: list[str], clock: list[float],
                 cost: float = 0.003) -> None:
        self.name, self.heavy, self.log, self.clock, self.cost = name, heavy, log, clock, cost

    def moves_bulk(self) -> bool:
        return self.heavy

    def on_event(self, mask: int) -> None:
        self.log.append(self.name)
        self.clock[0] += self.cost


def _scheduler() -> tuple[TurnScheduler, list[str], list[float], Any]:
    clock = [100.0]
    io = IOContext(selectors.DefaultSelector(), TimerHeap(), 4096, 1 << 20, 1 << 18, False)
    return TurnScheduler(io, budget=0.004, clock=lambda: clock[0]), [], clock, io


def test_connections_with_requests_are_served_before_streaming_ones():
    turns, log, clock, _ = _scheduler()
    up = _Conn("upload", True, log, clock)
    stat = _Conn("stat", False, log, clock)
    waker = _Conn("waker", False, log, clock)
    turns.dispatch([(_Key(up), 1), (_Key(stat), 1), (_Key(waker), 1)])
    assert log[:2] == ["stat", "waker"]


def test_streaming_connections_past_the_budget_wait_and_go_first_next_turn():
    turns, log, clock, _ = _scheduler()
    conns = [_Conn(f"bulk{i}", True, log, clock) for i in range(4)]   # 3 ms each
    turns.dispatch([(_Key(c), 1) for c in conns])
    assert log == ["bulk0", "bulk1"]            # 4 ms budget: the third would pass it
    log.clear()
    turns.dispatch([(_Key(c), 1) for c in conns])
    assert log == ["bulk2", "bulk3"]            # the owed ones first: nobody starves


def test_streaming_connections_get_as_long_as_the_requests_took():
    turns, log, clock, _ = _scheduler()
    busy = _Conn("requests", False, log, clock, cost=0.010)            # 10 ms of requests
    conns = [_Conn(f"bulk{i}", True, log, clock) for i in range(5)]    # 3 ms each
    turns.dispatch([(_Key(busy), 1)] + [(_Key(c), 1) for c in conns])
    assert log == ["requests", "bulk0", "bulk1", "bulk2", "bulk3"]     # 10 ms for them too


def test_the_first_streaming_connection_of_a_turn_is_always_served():
    turns, log, clock, _ = _scheduler()
    slow = _Conn("requests", False, log, clock, cost=0.010)            # past the budget alone
    bulk = _Conn("bulk", True, log, clock)
    turns.dispatch([(_Key(slow), 1), (_Key(bulk), 1)])
    assert log == ["requests", "bulk"]


# ------------------------------------------------------------------ the transports


class _Sink:
    """A TransportProtocol streaming an upload: counts what it is handed."""

    def __init__(self) -> None:
        self.received = 0
        self.reads = 0

    def data_received(self, data: memoryview) -> None:
        self.received += len(data)
        self.reads += 1

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def wants_bulk_reads(self) -> bool:
        return True

    def moves_bulk(self) -> bool:
        return True


@pytest.fixture
def pair():
    sel = selectors.DefaultSelector()
    io = IOContext(sel, TimerHeap(), 4096, 1 << 20, 1 << 18, use_sendfile=True)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    sink = _Sink()
    transport = PlainTransport(io, ours, ("test", 1))
    transport.set_protocol(sink)
    transport.start()
    yield io, transport, sink, theirs
    transport.abort()
    theirs.close()
    sel.close()


def test_a_streaming_read_takes_several_buffers_while_the_turn_has_time(pair):
    io, transport, sink, theirs = pair
    theirs.sendall(b"x" * 4096 * 4)
    transport.on_event(selectors.EVENT_READ)
    assert sink.reads == 4


def test_a_streaming_read_stops_after_one_buffer_once_the_turn_is_over(pair):
    io, transport, sink, theirs = pair
    theirs.sendall(b"x" * 4096 * 4)
    io.turn_deadline = 0.0                       # long past
    transport.on_event(selectors.EVENT_READ)
    assert (sink.reads, sink.received) == (1, 4096)


def test_a_file_send_stops_after_one_chunk_once_the_turn_is_over(pair, tmp_path: Path):
    io, transport, sink, theirs = pair
    path = tmp_path / "f"
    path.write_bytes(b"y" * 3000)
    fd = os.open(path, os.O_RDONLY)
    try:
        transport.on_event(0)                    # a wake-up: a fresh send budget
        io.turn_deadline = 0.0
        assert transport.send_file(fd, 0, 1000) == 1000
        assert transport.send_file(fd, 1000, 1000) == 0      # later, on the next turn
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the session


@pytest.fixture
def h(tmp_path: Path) -> Any:
    harness = Harness(tmp_path / "root")
    yield harness
    harness.store.close()


def test_a_group_of_inline_puts_goes_to_the_disk_lane(h):
    h.logged_in()
    h.feed(m.Put(id=7, path="small", size=3, inline=True), encode_data(b"abc"))
    [(job, _)] = h.pool.jobs
    assert isinstance(job, SyncJob)
    h.run_jobs()
    [reply] = h.replies()
    assert isinstance(reply, m.PutDone)
    assert (h.config.root / "homes" / "ada" / "small").read_bytes() == b"abc"


def test_a_session_moves_bulk_while_its_upload_streams_and_not_after(h):
    h.logged_in()
    assert not h.session.moves_bulk()
    h.feed(m.Put(id=7, path="f", size=5))
    h.run_jobs()
    h.replies()
    assert h.session.moves_bulk()
    h.feed(encode_data(b"hello"))
    h.run_jobs()
    assert isinstance(h.replies()[0], m.PutDone)
    assert not h.session.moves_bulk()


def _count_login_checks(h: Any) -> list[int]:
    calls = [0]
    real = h.store.login_valid

    def counted(*args: Any) -> bool:
        calls[0] += 1
        return real(*args)
    h.store.login_valid = counted
    return calls


def test_data_that_does_not_end_an_upload_is_not_checked_against_the_login(h):
    h.logged_in()
    h.feed(m.Put(id=7, path="f", size=10))
    h.run_jobs()
    h.replies()
    calls = _count_login_checks(h)
    h.feed(encode_data(b"hello"))                # half the file: no request, no check
    assert calls[0] == 0
    h.feed(encode_data(b"world"))                # the last bytes commit: checked first
    assert calls[0] == 1


def test_a_revoked_upload_is_not_committed_by_its_last_bytes(h):
    h.logged_in()
    h.feed(m.Put(id=7, path="f", size=10))
    h.run_jobs()
    h.replies()
    h.feed(encode_data(b"hello"))
    h.store.set_password("ada", "a new password")
    h.feed(encode_data(b"world"))
    h.run_jobs()
    [reply] = h.replies()
    assert reply.code == "LOGIN_REVOKED"
    assert not (h.config.root / "homes" / "ada" / "f").exists()


# ------------------------------------------------------------------ the profiling switch


def test_loopstats_writes_turns_events_and_job_waits_when_asked(tmp_path: Path, monkeypatch):
    import json
    import types

    from ftpd import loopstats

    out = tmp_path / "stats.jsonl"
    assert loopstats.install_from_env(object()) is None        # off without the variable
    monkeypatch.setenv(loopstats.ENV, str(out))
    sel = selectors.DefaultSelector()
    turns, log, clock, _ = _scheduler()
    server = types.SimpleNamespace(selector=sel, turns=turns, pool=WorkerPool(1),
                                   auth_pool=WorkerPool(1))
    stats = loopstats.install_from_env(server)
    try:
        finished = threading.Event()
        server.pool.submit(LongJob(lambda: 1), lambda r, e: finished.set())
        sel.register(server.pool.wake_r, selectors.EVENT_READ,
                     types.SimpleNamespace(on_event=lambda mask: server.pool.run_callbacks()))
        for _ in range(100):
            if finished.is_set():
                break
            turns.dispatch(sel.select(WAIT / 100))
        turns.dispatch([(_Key(_Conn("bulk", True, log, clock)), 1)])
        sel.select(0)                                          # ends the turn
        stats.dump()
    finally:
        server.pool.close()
        server.auth_pool.close()
        sel.close()
    line = json.loads(out.read_text().splitlines()[-1])
    assert line["turns"]["n"] >= 1
    assert "_Conn" in line["events"]
    [name] = line["jobs"]
    assert name.startswith("file:") and line["jobs"][name]["wait"]["n"] == 1
