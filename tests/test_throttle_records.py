"""The login throttle's records (ftpd/throttle.py over storage/logins.py): decay, trust,
sharing between processes, bounds.  Unit level, with a fake clock."""

from __future__ import annotations

import pytest

from ftpd.throttle import DAY, TRUST_REFRESH, LoginThrottle
from storage import Store


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock):
    s = Store(tmp_path / "root", scrypt_n=16, clock=clock)
    s.create_user("alice", "pw")
    yield s
    s.close()


def throttle_on(store: Store | None, clock: FakeClock, **kw) -> LoginThrottle:
    settings = {"base": 0.5, "max_delay": 4.0, "threshold": 5, "lockout": 60.0,
                "decay": 10.0, "trust_days": 30.0, **kw}
    return LoginThrottle(clock=clock, store=store, **settings)


def test_address_failures_decay_one_per_period(clock):
    throttle = throttle_on(None, clock)
    for _ in range(4):
        throttle.failure(None, "10.0.0.1")
    assert throttle.failures(addr="10.0.0.1") == 4
    clock.now += 25                                    # two periods and a half
    assert throttle.failures(addr="10.0.0.1") == 2
    clock.now += 100
    assert throttle.failures(addr="10.0.0.1") == 0


def test_after_a_served_lockout_the_next_failure_locks_again(clock):
    throttle = throttle_on(None, clock, decay=1000.0)
    for _ in range(5):
        throttle.failure(None, "10.0.0.1")
    assert throttle.locked(None, "10.0.0.1") == pytest.approx(60)
    clock.now += 61
    assert throttle.locked(None, "10.0.0.1") == 0
    assert throttle.admit(None, "10.0.0.1")            # one more guess, not a fresh budget
    throttle.release(None, "10.0.0.1")
    throttle.failure(None, "10.0.0.1")
    assert throttle.locked(None, "10.0.0.1") == pytest.approx(60)


def test_an_address_that_logged_in_is_exempt_from_the_user_names_lockout(store, clock):
    throttle = throttle_on(store, clock)
    throttle.success("alice", "10.0.0.1")
    for i in range(5):
        throttle.failure("alice", f"10.9.9.{i}")       # spread over addresses
    assert throttle.locked("alice", "10.0.0.2") > 0     # untrusted: refused
    assert throttle.locked("alice", "10.0.0.1") == 0    # trusted: not
    assert throttle.admit("alice", "10.0.0.1")
    assert throttle.locked("alice", "10.0.0.2", token=True) == 0


def test_trust_expires_after_the_window(store, clock):
    throttle = throttle_on(store, clock, trust_days=30.0)
    throttle.success("alice", "10.0.0.1")
    for i in range(5):
        throttle.failure("alice", f"10.9.9.{i}")
    clock.now += 31 * DAY
    for i in range(5):                                  # the old lockout has long decayed
        throttle.failure("alice", f"10.8.8.{i}")
    assert throttle.locked("alice", "10.0.0.1") > 0


def test_trust_is_per_account_not_per_name(store, clock):
    throttle = throttle_on(store, clock)
    throttle.success("alice", "10.0.0.1")
    store.delete_user("alice")
    store.create_user("alice", "other")
    throttle.unlock("alice")                            # drop the cached answer as well
    for i in range(5):
        throttle.failure("alice", f"10.9.9.{i}")
    assert throttle.locked("alice", "10.0.0.1") > 0


def test_a_new_password_ends_the_trust_of_addresses(store, clock):
    throttle = throttle_on(store, clock)
    throttle.success("alice", "10.0.0.1")
    store.set_password("alice", "new")
    throttle.unlock("alice")
    for i in range(5):
        throttle.failure("alice", f"10.9.9.{i}")
    assert throttle.locked("alice", "10.0.0.1") > 0


def test_two_processes_share_failures_and_lockouts(tmp_path, clock):
    """Two stores on one data root stand for two daemon processes."""
    with Store(tmp_path / "r", scrypt_n=16, clock=clock) as one, \
            Store(tmp_path / "r", scrypt_n=16, clock=clock) as two:
        first, second = throttle_on(one, clock), throttle_on(two, clock)
        for _ in range(3):
            first.failure(None, "10.0.0.1")
        for _ in range(2):
            second.failure(None, "10.0.0.1")
        assert first.locked(None, "10.0.0.1") > 0 and second.locked(None, "10.0.0.1") > 0
        assert one.unlock_user("bob") is False


def test_unlock_clears_the_user_name_only(store, clock):
    throttle = throttle_on(store, clock)
    for _ in range(5):
        throttle.failure("alice", "10.0.0.1")
    assert store.unlock_user("alice") is True
    assert throttle.locked("alice", "10.0.0.2") == 0
    assert throttle.locked("alice", "10.0.0.1") > 0      # the guessing address stays locked


def test_a_trusted_check_gives_back_no_budget_it_did_not_take(store, clock):
    """The owner's check at a trusted address takes no user-name budget, so its release
    must not give one back to a stranger's parallel guesses."""
    throttle = throttle_on(store, clock, threshold=2)
    throttle.success("alice", "10.0.0.1")
    assert throttle.admit("alice", "10.6.6.6") and throttle.admit("alice", "10.6.6.7")
    assert throttle.admit("alice", "10.0.0.1")          # trusted: not counted
    throttle.release("alice", "10.0.0.1")
    assert not throttle.admit("alice", "10.6.6.8")      # the strangers' budget is still spent


def _counting_trust(throttle: LoginThrottle) -> list[str]:
    looked: list[str] = []
    trust = throttle.ledger.trust

    def counted(user: str, addr: str, now: float, refresh: float) -> None:
        looked.append(addr)
        trust(user, addr, now, refresh)
    throttle.ledger.trust = counted                     # type: ignore[method-assign]
    return looked


def test_a_reconnecting_login_looks_at_its_trust_record_once_per_refresh(store, clock):
    throttle = throttle_on(store, clock)
    info = store.get_user("alice")
    looked = _counting_trust(throttle)
    for _ in range(3):
        throttle.success("alice", "10.0.0.1", (info.uid, info.generation))
    assert looked == ["10.0.0.1"]
    clock.now += TRUST_REFRESH
    throttle.success("alice", "10.0.0.1", (info.uid, info.generation))
    assert looked == ["10.0.0.1", "10.0.0.1"]


def test_a_login_after_a_new_password_is_trusted_again_despite_what_was_remembered(store,
                                                                                   clock):
    throttle = throttle_on(store, clock)
    before = store.get_user("alice")
    throttle.success("alice", "10.0.0.1", (before.uid, before.generation))
    store.set_password("alice", "new")                  # deletes the trust records
    after = store.get_user("alice")
    throttle.success("alice", "10.0.0.1", (after.uid, after.generation))
    throttle.unlock("alice")                            # drop the cached answer
    for i in range(5):
        throttle.failure("alice", f"10.9.9.{i}")
    assert throttle.locked("alice", "10.0.0.1") == 0
