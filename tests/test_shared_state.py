"""The state every worker process shares (``storage.shared``, ``storage.registry``):
limits hold across processes, and nothing a SIGKILLed process held stays held.

Two ``SharedState`` objects with different ``pid`` stand for two workers; the
kill tests use real child processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storage.registry import PENDING, WriterRegistry
from storage.shared import RootLocked, SharedState, lock_root

REPO = Path(__file__).resolve().parent.parent


def _holder(code: str) -> subprocess.Popen[str]:
    """A child process that runs ``code``, prints ``held`` and waits to be killed."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code) + "\nprint('held', "
                             "flush=True)\nimport time\ntime.sleep(60)\n"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture
def two(tmp_path: Path) -> tuple[SharedState, SharedState]:
    a, b = SharedState(tmp_path, pid=1_000_001), SharedState(tmp_path, pid=1_000_002)
    yield a, b
    a.close()
    b.close()


def test_total_connection_limit_counts_every_process(two):
    a, b = two
    assert a.open_connection("10.0.0.1", max_total=2, max_per_ip=10) is None
    assert b.open_connection("10.0.0.2", max_total=2, max_per_ip=10) is None
    assert b.open_connection("10.0.0.3", max_total=2, max_per_ip=10) == "total"
    a.close_connection("10.0.0.1")
    assert b.open_connection("10.0.0.3", max_total=2, max_per_ip=10) is None


def test_per_address_limit_counts_every_process(two):
    a, b = two
    assert a.open_connection("10.0.0.1", max_total=10, max_per_ip=1) is None
    assert b.open_connection("10.0.0.1", max_total=10, max_per_ip=1) == "ip"
    assert b.open_connection("10.0.0.2", max_total=10, max_per_ip=1) is None


def test_per_user_session_limit_counts_every_process(two):
    a, b = two
    assert a.login("alice", limit=1)
    assert not b.login("alice", limit=1)
    a.logout("alice")
    assert b.login("alice", limit=1)


def test_upload_slots_count_every_process(two):
    a, b = two
    assert a.take_upload("alice", limit=2)
    assert b.take_upload("alice", limit=2)
    assert not a.take_upload("alice", limit=2)
    b.free_upload("alice")
    b.free_upload("alice")          # an extra free gives back nothing of a's
    assert a.count("up:alice") == 1
    assert a.take_upload("alice", limit=2)


def test_a_refused_connection_counts_nothing(two):
    a, b = two
    a.open_connection("10.0.0.1", max_total=10, max_per_ip=1)
    assert b.open_connection("10.0.0.1", max_total=10, max_per_ip=1) == "ip"
    assert b.count("*") == 1


def test_forget_pid_frees_a_reaped_workers_rows(two):
    a, b = two
    a.open_connection("10.0.0.1", 10, 10)
    a.login("alice", 10)
    a.take_upload("alice", 10)
    assert b.forget_pid(a.pid) == 4
    assert b.count("*") == b.count("ip:10.0.0.1") == b.count("user:alice") == 0
    assert b.count("up:alice") == 0


def test_rows_of_a_sigkilled_worker_are_swept(tmp_path):
    proc = _holder(f"""
        from storage.shared import SharedState
        s = SharedState({str(tmp_path)!r})
        s.open_connection("10.0.0.9", 10, 10)
        s.take_upload("alice", 10)
    """)
    me = SharedState(tmp_path)
    try:
        assert me.count("ip:10.0.0.9") == 1
        _kill(proc)
        assert me.sweep_dead() == 3
        assert me.count("*") == 0 and me.count("up:alice") == 0
    finally:
        me.close()


def test_reset_forgets_everything(two):
    a, b = two
    a.open_connection("10.0.0.1", 10, 10)
    b.take_upload("bob", 10)
    a.reset()
    assert b.count("*") == 0 and b.count("up:bob") == 0


# ----- the one-writer rule


def test_a_claim_in_one_registry_makes_another_busy(tmp_path):
    one, two = WriterRegistry(tmp_path / "w.lock"), WriterRegistry(tmp_path / "w.lock")
    assert one.try_claim("alice", "/f", PENDING)
    assert not two.try_claim("alice", "/f", PENDING)
    assert two.is_active("alice", "/f")
    assert two.try_claim("alice", "/g", PENDING)       # another target is free
    one.drop("alice", "/f", PENDING)
    assert not two.is_active("alice", "/f")
    assert two.try_claim("alice", "/f", PENDING)


def test_a_sigkilled_writer_leaves_no_lock_held(tmp_path):
    proc = _holder(f"""
        from storage.registry import PENDING, WriterRegistry
        WriterRegistry({str(tmp_path / "w.lock")!r}).try_claim("alice", "/big", PENDING)
    """)
    mine = WriterRegistry(tmp_path / "w.lock")
    assert not mine.try_claim("alice", "/big", PENDING)
    _kill(proc)
    assert mine.try_claim("alice", "/big", PENDING)


def test_a_released_claim_is_free_for_another_process(tmp_path):
    one, two = WriterRegistry(tmp_path / "w.lock"), WriterRegistry(tmp_path / "w.lock")
    with one.holding("alice", "/f") as claimed:
        assert claimed and two.is_active("alice", "/f")
    assert not two.is_active("alice", "/f")
    assert two.try_claim("alice", "/f", PENDING)


def test_many_claims_of_one_process_stay_independent(tmp_path):
    """Claims share one lock file: dropping one target's claim keeps the others held."""
    one, two = WriterRegistry(tmp_path / "w.lock"), WriterRegistry(tmp_path / "w.lock")
    for i in range(50):
        assert one.try_claim("alice", f"/f{i}", PENDING)
    one.drop("alice", "/f7", PENDING)
    assert two.try_claim("alice", "/f7", PENDING)
    assert not any(two.try_claim("alice", f"/f{i}", PENDING) for i in range(50) if i != 7)


def test_holding_yields_false_while_another_writes(tmp_path):
    one, two = WriterRegistry(tmp_path / "w.lock"), WriterRegistry(tmp_path / "w.lock")
    assert one.try_claim("alice", "/f", PENDING)
    with two.holding("alice", "/f") as claimed:
        assert not claimed
    assert one.is_active("alice", "/f")        # the refused holder took nothing away


# ----- the data-root lock


def test_a_second_daemon_cannot_take_the_root(tmp_path):
    fd = lock_root(tmp_path)
    try:
        with pytest.raises(RootLocked, match=f"pid {os.getpid()}"):
            lock_root(tmp_path)
    finally:
        os.close(fd)
    os.close(lock_root(tmp_path))


def test_a_sigkilled_daemon_leaves_the_root_free(tmp_path):
    proc = _holder(f"""
        from storage.shared import lock_root
        lock_root({str(tmp_path)!r})
    """)
    with pytest.raises(RootLocked):
        lock_root(tmp_path)
    _kill(proc)
    os.close(lock_root(tmp_path))


# ----- the login throttle's checks in flight


def test_password_checks_in_flight_are_budgeted_over_every_worker(tmp_path):
    """Threshold 3: three checks running on one worker leave none for the same address
    on another, so a parallel burst spread over workers cannot outrun the lockout."""
    from ftpd.throttle import LoginThrottle
    from storage import Store

    store = Store(tmp_path, scrypt_n=16)
    one, two = (LoginThrottle(base=0.01, max_delay=0.01, threshold=3, lockout=60, store=store)
                for _ in range(2))
    one.shared, two.shared = SharedState(tmp_path, pid=1_000_001), SharedState(tmp_path,
                                                                               pid=1_000_002)
    try:
        assert all(one.admit(None, "10.0.0.7") for _ in range(3))
        assert not two.admit(None, "10.0.0.7")
        one.release(None, "10.0.0.7")
        assert two.admit(None, "10.0.0.7")
        assert two.admit(None, "10.0.0.8")           # another address has its own budget
    finally:
        one.shared.close()
        two.shared.close()
        store.close()


def test_start_up_recovery_leaves_alone_a_commit_another_process_holds(tmp_path):
    """A restarting worker recovers interrupted commits; a marked row whose target a
    live worker holds is that worker's commit in progress and must not be touched."""
    from storage import Store

    live = Store(tmp_path, scrypt_n=16)
    live.create_user("alice", "pw-alice")
    upload = live.begin_upload("alice", "/f.bin", 3, None)
    live._ctx.db.conn().execute(             # as if its commit were between mark and account
        "UPDATE uploads SET commit_dev = 1, commit_ino = 2, commit_old = 0")

    def marked() -> bool:
        return live._ctx.db.one("SELECT commit_ino FROM uploads")[0] is not None

    Store(tmp_path, scrypt_n=16).close()      # a worker starting meanwhile
    assert marked()
    upload.release()
    Store(tmp_path, scrypt_n=16).close()      # nobody holds it: an interrupted commit
    assert not marked()
    live.close()
