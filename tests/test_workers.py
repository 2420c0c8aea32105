"""``ftpd serve --workers 2``: every promise of one process holds across two.

Connections are spread by the kernel (``SO_REUSEPORT``); a test that needs
connections on both workers opens connections until ``ping`` has reported each
worker id (bounded).  Worker pids come from the supervisor's log lines.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import protocol.messages as m
from storage.registry import PENDING, WriterRegistry
from storage.shared import SharedState
from tests.daemon import REPO, DaemonProcess
from tests.wire import Closed, Wire

USER, PASSWORD = "erin", "pw-erin"
_STARTED = re.compile(r"started w(\d+) \(pid (\d+)\)")


def worker_of(wire: Wire) -> int:
    reply = wire.call(m.Ping(id=wire.next_id()))
    assert isinstance(reply, m.Pong), reply
    assert reply.worker in (1, 2), reply
    return reply.worker


def on_both(daemon: DaemonProcess, per_worker: int = 1,
            attempts: int = 200) -> dict[int, list[Wire]]:
    """``per_worker`` connections on each of the two workers (others are closed)."""
    found: dict[int, list[Wire]] = {1: [], 2: []}
    for _ in range(attempts):
        wire = Wire(daemon.host, daemon.port, timeout=30)
        which = worker_of(wire)
        if len(found[which]) < per_worker:
            found[which].append(wire)
        else:
            wire.close()
        if all(len(w) == per_worker for w in found.values()):
            return found
    for wires in found.values():
        for wire in wires:
            wire.close()
    pytest.fail(f"{attempts} connections did not reach both workers")


def worker_pids(daemon: DaemonProcess) -> dict[int, int]:
    """The latest pid of each worker, from the supervisor's log."""
    return {int(w): int(pid) for w, pid in _STARTED.findall(daemon.log())}


def wait_for(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return any(line.startswith("State:") and "Z" in line for line in fh)
    except FileNotFoundError:
        return True


def start_two(server_factory: Any, **settings: Any) -> DaemonProcess:
    daemon = server_factory(worker_processes=2, **settings)
    daemon.add_user(USER, PASSWORD)
    wait_for(lambda: len(re.findall(r"w\d ftpd: listening on", daemon.log())) == 2,
             "both workers to listen")
    return daemon


@pytest.fixture
def two_workers(server_factory: Any) -> DaemonProcess:
    return start_two(server_factory)


def test_ping_tells_which_worker_answers(two_workers):
    wires = on_both(two_workers)
    assert {worker_of(w[0]) for w in wires.values()} == {1, 2}
    for w in wires.values():
        w[0].close()


def test_log_lines_name_their_worker(two_workers):
    log = two_workers.log(settle=True)
    assert "INFO sup ftpd: supervisor: started w1" in log
    assert "INFO w1 ftpd: listening on" in log and "INFO w2 ftpd: listening on" in log


def test_two_workers_racing_for_one_path_let_exactly_one_write(two_workers):
    wires = on_both(two_workers)
    a, b = wires[1][0], wires[2][0]
    data = os.urandom(256 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    for wire in (a, b):
        wire.logged_in(USER, PASSWORD)
    for wire in (a, b):                         # both puts leave before either is answered
        wire.send(m.Put(id=50, path="same.bin", size=len(data), sha256=digest))
    replies = {1: a.recv_reply(), 2: b.recv_reply()}
    ready = [w for w, r in replies.items() if isinstance(r, m.PutReady)]
    busy = [r.code for r in replies.values() if isinstance(r, m.ErrorReply)]
    assert len(ready) == 1 and busy == ["UPLOAD_BUSY"], replies
    winner = wires[ready[0]][0]
    winner.send_data(data)
    assert isinstance(winner.recv_reply(), m.PutDone)
    assert (two_workers.root / "homes" / USER / "same.bin").read_bytes() == data
    a.close()
    b.close()


def test_upload_slots_are_counted_over_both_workers(server_factory):
    daemon = start_two(server_factory, max_uploads_per_user=1)
    wires = on_both(daemon)
    a, b = wires[1][0], wires[2][0]
    for wire in (a, b):
        wire.logged_in(USER, PASSWORD)
    assert isinstance(a.put("one.bin", b"x" * 1000, stop_at=10), m.PutReady)
    refused = b.put("two.bin", b"y" * 1000)
    assert isinstance(refused, m.ErrorReply) and refused.code == "TOO_MANY_UPLOADS", refused
    a.close()
    b.close()


def test_the_quota_race_across_workers_never_oversubscribes(server_factory):
    """Quota 1 MiB; five 300 KiB uploads from each worker at once: exactly three fit."""
    daemon = start_two(server_factory, max_uploads_per_user=16)
    size, quota = 300 * 1024, 1 << 20
    daemon.add_user("quinn", "pw-quinn", quota=quota)
    wires = [w for ws in on_both(daemon, per_worker=5).values() for w in ws]
    start = threading.Barrier(len(wires))
    results: dict[int, Any] = {}

    def race(index: int, wire: Wire) -> None:
        data = os.urandom(size)
        wire.logged_in("quinn", "pw-quinn")
        start.wait(10)
        results[index] = wire.put(f"race-{index}.bin", data)

    threads = [threading.Thread(target=race, args=(i, w)) for i, w in enumerate(wires)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done = [r for r in results.values() if isinstance(r, m.PutDone)]
    codes = {r.code for r in results.values() if isinstance(r, m.ErrorReply)}
    assert len(results) == 10 and len(done) == quota // size == 3, results
    assert codes == {"QUOTA_EXCEEDED"}
    home = daemon.root / "homes" / "quinn"
    usage = wires[0].call(m.Quota(id=99))
    assert usage.used == sum(p.stat().st_size for p in home.iterdir()) == 3 * size
    assert usage.reserved == 0
    for wire in wires:
        wire.close()


def _guesses_before_lockout(daemon: DaemonProcess, wires: list[Wire]) -> int:
    for count in range(30):
        reply = wires[count % len(wires)].login(USER, "wrong")
        assert isinstance(reply, m.ErrorReply), reply
        if reply.code == "LOCKED_OUT":
            return count
        assert reply.code == "AUTH_FAILED", reply
    pytest.fail("no lockout after 30 guesses")


def test_guesses_spread_over_both_workers_lock_out_at_the_same_count(server_factory):
    single = server_factory(lockout_threshold=5, lockout_seconds=60)
    single.add_user(USER, PASSWORD)
    wires = [Wire(single.host, single.port) for _ in range(2)]
    alone = _guesses_before_lockout(single, wires)
    two = server_factory(worker_processes=2, lockout_threshold=5, lockout_seconds=60)
    two.add_user(USER, PASSWORD)
    both = on_both(two)
    spread = _guesses_before_lockout(two, [both[1][0], both[2][0]])
    assert spread == alone == 5


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_every_upload_resumes(two_workers):
    """kill -9 of w1 while five uploads are half done (some on each worker): the other
    worker keeps serving, the supervisor starts w1 again, every upload resumes and
    verifies, and no writer lock stays held."""
    daemon = two_workers
    victim_pid = worker_pids(daemon)[1]
    wires = on_both(daemon, per_worker=3)
    uploads = [(w, which) for which in (1, 2) for w in wires[which]][:5]
    files = {f"up-{i}.bin": os.urandom(2 << 20) for i in range(5)}
    for (wire, _), (name, data) in zip(uploads, files.items(), strict=True):
        wire.logged_in(USER, PASSWORD)
        assert isinstance(wire.put(name, data, stop_at=1 << 20), m.PutReady)
    os.kill(victim_pid, signal.SIGKILL)
    for (wire, which), (name, data) in zip(uploads, files.items(), strict=True):
        if which == 2:                        # the other worker keeps serving its uploads
            wire.send_data(data[1 << 20:])
            assert isinstance(wire.recv_reply(), m.PutDone), name
        else:
            with pytest.raises((Closed, ConnectionResetError)):
                wire.recv()
        wire.close()
    wait_for(lambda: worker_pids(daemon).get(1) not in (None, victim_pid),
             "the supervisor to start w1 again")
    cut = [name for (_, which), name in zip(uploads, files, strict=True) if which == 1]
    assert cut
    for name in cut:
        data = files[name]
        with Wire(daemon.host, daemon.port, timeout=30) as wire:
            wire.logged_in(USER, PASSWORD)
            done = wire.put(name, data)       # resumes where the killed worker stopped
            assert isinstance(done, m.PutDone), (name, done)
            assert done.sha256 == hashlib.sha256(data).hexdigest()
    for name, data in files.items():
        assert (daemon.root / "homes" / USER / name).read_bytes() == data
    registry = WriterRegistry(daemon.root / "run" / "writers.lock")
    for name in files:
        assert registry.try_claim(USER, "/" + name, PENDING), name
        registry.drop(USER, "/" + name, PENDING)
    again = on_both(daemon)          # the restarted w1 serves
    for ws in again.values():
        ws[0].close()


def test_rows_of_a_killed_worker_are_swept_when_it_is_reaped(two_workers):
    daemon = two_workers
    wires = on_both(daemon, per_worker=2)
    victim = worker_pids(daemon)[1]
    shared = SharedState(daemon.root)
    try:
        assert shared.count("*") == 4
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: shared.count("*") == 2, "the dead worker's connections to go")
    finally:
        shared.close()
        for ws in wires.values():
            for w in ws:
                w.close()


@pytest.mark.slow
def test_sigterm_drains_every_worker_and_exits_0_without_orphans(two_workers):
    daemon = two_workers
    pids = worker_pids(daemon)
    wires = on_both(daemon)
    data = os.urandom(1 << 20)
    for which, ws in wires.items():
        ws[0].logged_in(USER, PASSWORD)
        assert isinstance(ws[0].put(f"drain-{which}.bin", data, stop_at=1 << 19), m.PutReady)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: daemon.log().count("shutting down:") == 2, "both workers to start draining")
    for ws in wires.values():                # running transfers finish within the grace
        ws[0].send_data(data[1 << 19:])
        assert isinstance(ws[0].recv_reply(), m.PutDone)
        ws[0].close()
    assert daemon.proc.wait(30) == 0
    assert all(pid_gone(pid) for pid in pids.values()), pids
    assert "supervisor: stopped" in daemon.log()


def test_a_token_from_one_worker_resumes_an_upload_on_the_other(two_workers):
    daemon = two_workers
    wires = on_both(daemon)
    first, second = wires[1][0], wires[2][0]
    ok = first.login(USER, PASSWORD, want_token=True)
    assert isinstance(ok, m.LoginOk) and ok.token
    data = os.urandom(1 << 20)
    assert isinstance(first.put("tok.bin", data, stop_at=1 << 19), m.PutReady)
    first.close()
    assert isinstance(second.call(m.Login(id=second.next_id(), token=ok.token)), m.LoginOk)
    digest = hashlib.sha256(data).hexdigest()
    ready = None
    for _ in range(100):       # the first worker lets go of the partial as it sees the close
        ready = second.call(m.Put(id=second.next_id(), path="tok.bin", size=len(data),
                                  sha256=digest))
        if not (isinstance(ready, m.ErrorReply) and ready.code == "UPLOAD_BUSY"):
            break
        time.sleep(0.05)
    assert isinstance(ready, m.PutReady) and ready.offset > 0, ready
    second.send_data(data[ready.offset:])
    assert isinstance(second.recv_reply(), m.PutDone)
    second.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_daemon_on_the_same_root_refuses_to_start(server_factory, workers):
    first = server_factory(worker_processes=workers)
    second = subprocess.run([sys.executable, "-m", "ftpd.cli", "serve", "--root",
                             str(first.root), "--port", "0", "--workers", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "another ftpd" in lines[0], second.stderr
    assert isinstance(Wire(first.host, first.port).call(m.Ping(id=1)), m.Pong)


def test_workers_that_keep_dying_at_start_stop_the_supervisor_with_status_1(tmp_path):
    root = tmp_path / "root"
    (root / "run" / "live.db").mkdir(parents=True)   # no worker can open the shared state
    proc = subprocess.run([sys.executable, "-m", "ftpd.cli", "serve", "--root", str(root),
                           "--port", "0", "--workers", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "ftpd: error: workers keep dying at start" in proc.stderr


def test_workers_do_not_outlive_a_killed_supervisor(two_workers):
    daemon = two_workers
    pids = worker_pids(daemon)
    daemon.kill()                              # SIGKILL: the supervisor runs no clean-up
    try:
        wait_for(lambda: all(pid_gone(pid) for pid in pids.values()), "the workers to stop")
    finally:
        for pid in pids.values():              # never leave an orphan behind, even red
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)
    daemon.start()                             # the data root is free again
    assert isinstance(Wire(daemon.host, daemon.port).call(m.Ping(id=1)), m.Pong)


def test_a_tls_session_from_one_worker_resumes_on_the_other(two_workers):
    """The supervisor makes the TLS context before it forks, so both workers hold one
    session-ticket key: a reconnecting client resumes wherever the kernel sends it."""
    first = Wire(two_workers.host, two_workers.port)
    session, origin = first.sock.session, worker_of(first)
    first.close()
    assert session is not None
    for _ in range(200):
        wire = Wire(two_workers.host, two_workers.port, session=session)
        try:
            if worker_of(wire) != origin:
                assert wire.sock.session_reused
                return
        finally:
            wire.close()
    pytest.fail("200 connections did not reach the other worker")
