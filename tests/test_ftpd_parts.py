"""The daemon's small parts on their own: timers, login throttle, worker pool, config, CLI."""

from __future__ import annotations

import selectors
import subprocess
import sys
import threading

import pytest

from ftpd import cli
from ftpd.config import Config, load
from ftpd.throttle import LoginThrottle
from ftpd.timers import TimerHeap
from ftpd.workers import WorkerPool
from storage import Store


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- timers


def test_timers_fire_in_deadline_order():
    clock = FakeClock()
    timers = TimerHeap(clock)
    fired: list[str] = []
    timers.call_later(2, lambda: fired.append("b"))
    timers.call_later(1, lambda: fired.append("a"))
    clock.now += 5
    assert timers.run_due() == 2 and fired == ["a", "b"]


def test_a_cancelled_timer_never_fires():
    clock = FakeClock()
    timers = TimerHeap(clock)
    fired: list[int] = []
    timer = timers.call_later(1, lambda: fired.append(1))
    timers.cancel(timer)
    clock.now += 5
    assert timers.run_due() == 0 and fired == [] and len(timers) == 0


def test_timeout_is_the_time_to_the_next_live_timer():
    clock = FakeClock()
    timers = TimerHeap(clock)
    assert timers.timeout() is None
    first = timers.call_later(1, lambda: None)
    timers.call_later(3, lambda: None)
    timers.cancel(first)
    assert timers.timeout() == pytest.approx(3)


def test_mass_cancellation_does_not_grow_the_heap_without_bound():
    timers = TimerHeap(FakeClock())
    for _ in range(10_000):
        timers.cancel(timers.call_later(60, lambda: None))
    assert len(timers._heap) <= 1024


# ---------------------------------------------------------------- throttle


def _throttle(clock: FakeClock, **kw) -> LoginThrottle:
    settings = {"base": 0.5, "max_delay": 4.0, "threshold": 5, "lockout": 60.0, **kw}
    return LoginThrottle(clock=clock, **settings)


def test_failure_delays_double_up_to_the_cap():
    throttle = _throttle(FakeClock(), threshold=100)
    delays = [throttle.failure("alice", "10.0.0.1") for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_threshold_failures_lock_the_user_and_the_address():
    clock = FakeClock()
    throttle = _throttle(clock)
    for _ in range(5):
        throttle.failure("alice", "10.0.0.1")
    assert throttle.locked("alice", "10.9.9.9") > 0
    assert throttle.locked("bob", "10.0.0.1") > 0
    assert throttle.locked("bob", "10.9.9.9") == 0
    clock.now += 61
    assert throttle.locked("alice", "10.0.0.1") == 0


def test_success_resets_the_user_names_count_but_not_the_addresss():
    """Issue 13 item 5 reversed the old promise that a success resets both counts: one
    address could mix its own logins into a spray of guesses."""
    throttle = _throttle(FakeClock())
    for _ in range(3):
        throttle.failure("alice", "a")
    throttle.success("alice", "a")
    assert throttle.failure("alice", "b") == 0.5       # the user name starts afresh
    assert throttle.failure("bob", "a") == 4.0         # the address does not


def test_password_checks_in_flight_count_against_the_lockout_budget():
    throttle = _throttle(FakeClock(), threshold=3)
    assert [throttle.admit("alice", "a") for _ in range(4)] == [True, True, True, False]
    throttle.release("alice", "a")
    throttle.failure("alice", "a")              # one finished as a failure: budget stays spent
    assert not throttle.admit("alice", "b")     # the user's budget, from another address
    throttle.release("alice", "a")
    throttle.success("alice", "a")              # a success clears the user's failures
    assert throttle.admit("alice", "a")


def test_the_throttle_tables_stay_bounded():
    throttle = LoginThrottle(base=0.1, max_delay=1, threshold=3, lockout=1, max_entries=100,
                             clock=FakeClock())
    for i in range(1000):
        throttle.failure(f"user{i}", f"addr{i}")
    users, addrs = throttle.entries()
    assert 0 < users <= 100 and 0 < addrs <= 100


def test_huge_failure_counts_do_not_overflow_the_delay():
    throttle = _throttle(FakeClock(), threshold=10**9)
    for _ in range(2000):
        delay = throttle.failure("alice", "a")
    assert delay == 4.0


# ---------------------------------------------------------------- worker pool


def test_worker_results_come_back_through_the_selector():
    pool = WorkerPool(2)
    sel = selectors.DefaultSelector()
    sel.register(pool.wake_r, selectors.EVENT_READ)
    results: list[object] = []
    main = threading.get_ident()
    try:
        pool.submit(lambda: threading.get_ident(), lambda r, e: results.append((r != main, e)))
        pool.submit(lambda: 1 / 0, lambda r, e: results.append(type(e)))
        while len(results) < 2:
            assert sel.select(5), "no wake-up from the pool"
            pool.run_callbacks()
        assert (True, None) in results and ZeroDivisionError in results
        assert pool.pending == 0
    finally:
        pool.close()
        sel.close()


# ---------------------------------------------------------------- configuration


def test_config_file_values_and_overrides(tmp_path):
    path = tmp_path / "ftpd.toml"
    path.write_text('[ftpd]\nport = 2200\nhigh_water = "512K"\nidle_timeout = 5\n')
    cfg = load(path, port=2300)
    assert cfg.port == 2300 and cfg.high_water == 512 * 1024 and cfg.idle_timeout == 5.0


def test_config_rejects_unknown_settings_and_bad_values():
    with pytest.raises(ValueError, match="unknown setting"):
        Config().updated(no_such_thing=1)
    with pytest.raises(ValueError):
        Config().updated(port="eighty")
    with pytest.raises(ValueError):
        Config().updated(low_water=10, high_water=5)


# ---------------------------------------------------------------- ftpd user CLI


def _ftpd(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ftpd.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_user_add_list_quota_disable_and_delete(tmp_path):
    root = str(tmp_path / "data")
    fast = ["--root", root, "--scrypt-n", "16"]
    added = _ftpd("user", "add", "carol", "--quota", "500M", "--password-stdin", *fast,
                  stdin="s3cret\n")
    assert added.returncode == 0, added.stderr
    assert _ftpd("user", "quota", "carol", "1G", *fast).returncode == 0
    assert _ftpd("user", "disable", "carol", *fast).returncode == 0
    listing = _ftpd("user", "list", *fast).stdout
    assert "carol" in listing and f"quota={1 << 30}" in listing and "disabled" in listing
    store = Store(root, scrypt_n=16)
    try:
        assert store.get_user("carol").disabled
    finally:
        store.close()
    assert _ftpd("user", "del", "carol", "--yes", *fast).returncode == 0
    assert "carol" not in _ftpd("user", "list", *fast).stdout


def test_user_add_twice_fails_with_a_clear_message(tmp_path):
    root = str(tmp_path / "data")
    args = ["user", "add", "dave", "--password-stdin", "--root", root, "--scrypt-n", "16"]
    assert _ftpd(*args, stdin="pw\n").returncode == 0
    again = _ftpd(*args, stdin="pw\n")
    assert again.returncode == 1 and "USER_EXISTS" in again.stderr


def test_user_add_without_a_terminal_or_stdin_flag_refuses(tmp_path):
    root = tmp_path / "never-created"
    result = _ftpd("user", "add", "erin", "--root", str(root))
    assert result.returncode != 0 and "--password-stdin" in result.stderr


def test_serve_with_a_bad_config_exits_with_an_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("port = 'x'\n")
    result = _ftpd("serve", "--root", str(tmp_path), "--config", str(path))
    assert result.returncode == 2 and "configuration" in result.stderr


def test_parser_knows_every_documented_subcommand():
    parser = cli.build_parser()
    for argv in (["serve", "--root", "x"], ["user", "list", "--root", "x"],
                 ["user", "passwd", "n", "--root", "x"], ["user", "enable", "n", "--root", "x"]):
        assert parser.parse_args(argv)


def test_a_failing_timer_callback_does_not_stop_the_others(caplog):
    clock = FakeClock()
    timers = TimerHeap(clock)
    fired: list[int] = []
    timers.call_later(1, lambda: 1 / 0)
    timers.call_later(2, lambda: fired.append(2))
    clock.now += 5
    assert timers.run_due() == 2 and fired == [2]
    assert "timer callback failed" in caplog.text


def test_the_partials_and_folder_cost_settings_reach_the_store(tmp_path):
    from ftpd.server import Server
    from storage import StorageError

    server = Server(Config(root=tmp_path, max_partials_per_user=3, folder_cost=0))
    try:
        server.store.create_user("ann", "pw-ann-1", quota=10)
        server.store.mkdir("ann", "/a")                       # free with folder_cost 0
        assert server.store.usage("ann").used == 0
        for name in ("p1", "p2", "p3"):
            server.store.begin_upload("ann", f"/{name}", 1, None).release()
        with pytest.raises(StorageError) as info:
            server.store.begin_upload("ann", "/p4", 1, None)
        assert info.value.code == "TOO_MANY_PARTIALS"
    finally:
        server.store.close()


def test_a_negative_folder_cost_is_refused():
    with pytest.raises(ValueError, match="folder_cost"):
        Config(folder_cost=-1).validate()
