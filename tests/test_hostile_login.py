"""Password guessing against the daemon's login throttle (ftpd/throttle.py).

White-box: the reactor runs in a thread of the test process (``inproc_server``)
so the tests can count scrypt invocations (``store.hash_calls``) and record the
delay the throttle imposed on each failure.  Different loopback source addresses
(127.0.0.x) stand for different hosts, because the throttle counts failures per
user name *and* per address.
"""

from __future__ import annotations

import logging
import ssl
import subprocess
import sys
import time
from typing import Any

import pytest

import protocol.messages as m
from tests.daemon import REPO
from tests.test_hostile_support import SourceWire

VICTIM, VICTIM_PW = "victim", "the right one"
OTHER, OTHER_PW = "bystander", "also right"


@pytest.fixture(autouse=True)
def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.INFO, logger="ftpd")
    yield
    crashes = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not crashes, [r.getMessage() for r in crashes]


def record_delays(daemon: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float]]:
    """Make the throttle report each failure's (user, delay) into the returned list."""
    throttle = daemon.server.throttle
    seen: list[tuple[str, float]] = []
    real = throttle.failure

    def failure(user: str | None, addr: str) -> float:
        delay = real(user, addr)
        seen.append((user or "", delay))
        return delay

    monkeypatch.setattr(throttle, "failure", failure)
    return seen


def timed_login(wire: SourceWire, user: str, password: str) -> tuple[Any, float]:
    start = time.monotonic()
    reply = wire.login(user, password)
    return reply, time.monotonic() - start


def lock_out(daemon: Any, user: str, source: str, attempts: int) -> None:
    with SourceWire(daemon.host, daemon.port, source) as wire:
        for _ in range(attempts):
            wire.login(user, "wrong")
        assert wire.login(user, "wrong").code == "LOCKED_OUT"


def test_twenty_wrong_passwords_get_growing_delays_then_a_lockout(inproc_server, monkeypatch):
    """20 wrong passwords for one user from one connection (base 0.02 s, cap 0.16 s,
    lockout after 8): the throttle's delays double from 0.02 s up to the cap, each reply
    takes at least its delay, the 8th failure locks the account, and the 12 attempts after
    it are LOCKED_OUT at once without spending a password hash."""
    daemon = inproc_server(auth_delay_base=0.02, auth_delay_max=0.16, lockout_threshold=8,
                           lockout_seconds=60)
    daemon.add_user(VICTIM, VICTIM_PW)
    delays = record_delays(daemon, monkeypatch)
    codes, latencies, hashes = [], [], []
    with SourceWire(daemon.host, daemon.port, "127.0.0.1") as wire:
        for i in range(20):
            before = daemon.store.hash_calls
            reply, took = timed_login(wire, VICTIM, f"guess-{i}")
            codes.append(reply.code)
            latencies.append(took)
            hashes.append(daemon.store.hash_calls - before)
    assert codes == ["AUTH_FAILED"] * 8 + ["LOCKED_OUT"] * 12
    assert [d for _, d in delays] == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.16, 0.16, 0.16,
                                                    0.16])
    for (_, delay), took in zip(delays, latencies, strict=False):
        assert took >= delay, (delay, took)           # the client really waited that long
    assert hashes == [1] * 8 + [0] * 12
    assert daemon.server.throttle.locked(VICTIM, "127.0.0.9") > 50


def test_the_right_password_is_refused_during_a_lockout(inproc_server):
    """Once locked out, even the correct password gets LOCKED_OUT (with retry_after), and
    no scrypt is spent on it."""
    daemon = inproc_server(lockout_threshold=3, lockout_seconds=60)
    daemon.add_user(VICTIM, VICTIM_PW)
    lock_out(daemon, VICTIM, "127.0.0.1", 3)
    before = daemon.store.hash_calls
    with SourceWire(daemon.host, daemon.port, "127.0.0.1") as wire:
        reply = wire.login(VICTIM, VICTIM_PW)
    assert reply.code == "LOCKED_OUT" and 0 < reply.details["retry_after"] <= 61
    assert daemon.store.hash_calls == before


def test_other_users_on_other_addresses_are_unaffected_by_a_lockout(inproc_server):
    """While the victim's name and the attacker's address are locked, another user from
    another address logs in at once, with one hash and no delay: its reply and a listing
    overtake the throttled reply to a failed login sent before it."""
    daemon = inproc_server(auth_delay_base=1.0, auth_delay_max=1.0, lockout_threshold=2,
                           lockout_seconds=60)
    daemon.add_user(VICTIM, VICTIM_PW)
    daemon.add_user(OTHER, OTHER_PW)
    lock_out(daemon, VICTIM, "127.0.0.1", 2)
    before = daemon.store.hash_calls
    with SourceWire(daemon.host, daemon.port, "127.0.0.6") as delayed, \
            SourceWire(daemon.host, daemon.port, "127.0.0.2") as wire:
        delayed.send(m.Login(id=9, user="somebody", password="wrong"))   # held back 1 s
        reply = wire.login(OTHER, OTHER_PW)
        assert isinstance(reply, m.LoginOk), reply
        assert isinstance(wire.call(m.Ls(id=50)), m.LsOk)
        delayed.sock.setblocking(False)
        with pytest.raises((BlockingIOError, ssl.SSLWantReadError)):   # nothing to read yet
            delayed.sock.recv(1)                      # the failure's reply is still held
        delayed.sock.settimeout(10)
        assert delayed.recv_reply().code == "AUTH_FAILED"
    assert daemon.store.hash_calls == before + 2      # one each: no extra for the other user


def test_a_locked_user_name_is_refused_from_every_address(inproc_server):
    """The lockout is per user name for untrusted sources: from a fresh address (one that
    never logged in as the victim, without a token) the victim's name is refused too, so
    guesses spread over many addresses stay capped.  Trusted sources are exempt (below)."""
    daemon = inproc_server(lockout_threshold=3, lockout_seconds=60)
    daemon.add_user(VICTIM, VICTIM_PW)
    lock_out(daemon, VICTIM, "127.0.0.1", 3)
    with SourceWire(daemon.host, daemon.port, "127.0.0.3") as wire:
        assert wire.login(VICTIM, VICTIM_PW).code == "LOCKED_OUT"


def test_a_locked_address_is_refused_for_every_user(inproc_server):
    """The lockout is also per address: guessing many names from one host locks the host,
    so spreading guesses over user names does not escape the limit."""
    daemon = inproc_server(lockout_threshold=4, lockout_seconds=60)
    daemon.add_user(OTHER, OTHER_PW)
    with SourceWire(daemon.host, daemon.port, "127.0.0.4") as wire:
        codes = [wire.login(f"name{i}", "wrong").code for i in range(4)]
        assert codes == ["AUTH_FAILED"] * 4
        assert wire.login(OTHER, OTHER_PW).code == "LOCKED_OUT"
    with SourceWire(daemon.host, daemon.port, "127.0.0.5") as wire:
        assert isinstance(wire.login(OTHER, OTHER_PW), m.LoginOk)


def test_unknown_user_and_wrong_password_are_indistinguishable(inproc_server, monkeypatch):
    """From two addresses, one attacker guesses passwords of a real user and the other of
    names that do not exist (well-formed and malformed): every reply has the same code,
    message and details, each attempt costs exactly one scrypt, and the throttle imposes the
    same delay sequence on both."""
    daemon = inproc_server(auth_delay_base=0.01, auth_delay_max=0.04, lockout_threshold=100)
    daemon.add_user(VICTIM, VICTIM_PW)
    delays = record_delays(daemon, monkeypatch)
    attempts = {
        "127.0.0.6": [(VICTIM, "wrong-1"), (VICTIM, "wrong-2"), (VICTIM, "x" * 1024),
                      (VICTIM, "wrong-4")],
        "127.0.0.7": [("nosuchuser", "wrong-1"), ("nosuchuser", "wrong-2"),
                      ("Not A Valid Name!", "x" * 1024), ("x" * 64, "wrong-4")],
    }
    replies: dict[str, list[Any]] = {}
    for source, tries in attempts.items():
        replies[source] = []
        with SourceWire(daemon.host, daemon.port, source) as wire:
            for user, password in tries:
                before = daemon.store.hash_calls
                reply = wire.login(user, password)
                assert daemon.store.hash_calls == before + 1, (user, password)
                replies[source].append((reply.type, reply.code, reply.message, reply.details))
    real, unknown = replies["127.0.0.6"], replies["127.0.0.7"]
    assert real == unknown
    assert {r[1] for r in real} == {"AUTH_FAILED"}
    real_delays = [d for user, d in delays if user == VICTIM]
    unknown_delays = [d for user, d in delays if user != VICTIM]
    assert real_delays == unknown_delays == pytest.approx([0.01, 0.02, 0.04, 0.04])


def test_parallel_guesses_from_one_address_are_capped_by_the_lockout(inproc_server):
    """40 connections from one address each send one wrong password at the same moment
    (lockout after 3): at most 3 password checks may run before the address is locked;
    the rest must be LOCKED_OUT without a hash."""
    daemon = inproc_server(lockout_threshold=3, lockout_seconds=60)
    daemon.add_user(VICTIM, VICTIM_PW)
    wires = [SourceWire(daemon.host, daemon.port, "127.0.0.8") for _ in range(40)]
    try:
        before = daemon.store.hash_calls
        for wire in wires:
            wire.send(m.Login(id=1, user=VICTIM, password="guess"))
        codes = [wire.recv_reply().code for wire in wires]
    finally:
        for wire in wires:
            wire.close()
    spent = daemon.store.hash_calls - before
    assert spent <= 3, f"{spent} passwords were checked: {codes.count('AUTH_FAILED')} answered"


# ---------------------------------------------------------------- lockout is no weapon
# (issue 13): an attacker's address is locked out; the owner, at an address it logged
# in from before or with a token, and other users at other addresses, are not.


def login_ok(daemon: Any, source: str, user: str, password: str,
             want_token: bool = False) -> Any:
    with SourceWire(daemon.host, daemon.port, source) as wire:
        reply = wire.login(user, password, want_token)
        assert isinstance(reply, m.LoginOk), (source, user, reply)
        return reply


def test_a_stranger_cannot_lock_the_owner_out_of_an_address_it_used_before(inproc_server):
    """The owner logged in from .20 last week; an attacker at .21 sends wrong passwords
    for the owner's name until it is locked.  The attacker's address is refused for every
    name; a fresh untrusted address is refused the owner's name (spread guesses stay
    capped); the owner at .20 logs in at once with one hash; another user at .22 too."""
    daemon = inproc_server(auth_delay_base=0.4, auth_delay_max=0.4, lockout_threshold=3,
                           lockout_seconds=60)
    daemon.add_user(VICTIM, VICTIM_PW)
    daemon.add_user(OTHER, OTHER_PW)
    login_ok(daemon, "127.0.0.20", VICTIM, VICTIM_PW)
    lock_out(daemon, VICTIM, "127.0.0.21", 3)
    with SourceWire(daemon.host, daemon.port, "127.0.0.21") as wire:
        assert wire.login(OTHER, OTHER_PW).code == "LOCKED_OUT"          # the attacker
    with SourceWire(daemon.host, daemon.port, "127.0.0.23") as wire:
        assert wire.login(VICTIM, VICTIM_PW).code == "LOCKED_OUT"        # untrusted source
    for source, user, password in (("127.0.0.20", VICTIM, VICTIM_PW),
                                   ("127.0.0.22", OTHER, OTHER_PW)):
        before = daemon.store.hash_calls
        with SourceWire(daemon.host, daemon.port, source) as wire:
            reply, took = timed_login(wire, user, password)
            assert isinstance(reply, m.LoginOk), (source, reply)
            assert isinstance(wire.call(m.Ls(id=50)), m.LsOk)
        assert took < 0.4, f"{user} at {source} waited {took:.3f} s"
        assert daemon.store.hash_calls == before + 1


def test_a_session_token_is_not_subject_to_the_user_names_lockout(inproc_server):
    """With address trust off, the owner's token still logs in while strangers have the
    name locked; the owner's password from that untrusted address does not."""
    daemon = inproc_server(lockout_threshold=3, lockout_seconds=60, login_trust_days=0)
    daemon.add_user(VICTIM, VICTIM_PW)
    token = login_ok(daemon, "127.0.0.30", VICTIM, VICTIM_PW, want_token=True).token
    lock_out(daemon, VICTIM, "127.0.0.31", 3)
    with SourceWire(daemon.host, daemon.port, "127.0.0.32") as wire:
        assert wire.login(VICTIM, VICTIM_PW).code == "LOCKED_OUT"
        reply = wire.call(m.Login(id=wire.next_id(), user=VICTIM, token=token))
        assert isinstance(reply, m.LoginOk) and reply.user == VICTIM


def test_logging_in_between_guesses_does_not_reset_the_address(inproc_server):
    """Issue 13 item 5: one address sprays wrong passwords over many names and logs in to
    its own account after every 2 failures (lockout after 5).  Before the fix each success
    reset the address's count and the spray was never locked out."""
    daemon = inproc_server(lockout_threshold=5, lockout_seconds=60)
    daemon.add_user(OTHER, OTHER_PW)
    codes = []
    with SourceWire(daemon.host, daemon.port, "127.0.0.40") as wire:
        for round_ in range(4):
            codes += [wire.login(f"name{round_}x{i}", "wrong").code for i in range(2)]
            reply = wire.login(OTHER, OTHER_PW)
            codes.append(reply.code if reply.type == "error" else "OK")
            if reply.type != "error":
                wire.call(m.Logout(id=wire.next_id()))
    assert codes[:5] == ["AUTH_FAILED", "AUTH_FAILED", "OK", "AUTH_FAILED", "AUTH_FAILED"]
    assert "LOCKED_OUT" in codes and codes[-1] == "LOCKED_OUT", codes


def test_a_lockout_start_is_logged_as_a_warning(inproc_server, caplog):
    daemon = inproc_server(lockout_threshold=3, lockout_seconds=60)
    daemon.add_user(VICTIM, VICTIM_PW)
    lock_out(daemon, VICTIM, "127.0.0.50", 3)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "ftpd.throttle"]
    assert any("lockout started: address 127.0.0.50" in w for w in warnings), warnings
    assert any(f"user name (for untrusted sources) {VICTIM}" in w for w in warnings), warnings


def test_ftpd_user_unlock_ends_a_running_daemons_lockout(inproc_server):
    """The lockout is in the catalogue, so ``ftpd user unlock`` (another process) ends it
    for the running daemon at once.  (The attacker's address stays locked.)"""
    daemon = inproc_server(lockout_threshold=3, lockout_seconds=600)
    daemon.add_user(VICTIM, VICTIM_PW)
    lock_out(daemon, VICTIM, "127.0.0.60", 3)
    with SourceWire(daemon.host, daemon.port, "127.0.0.61") as wire:
        assert wire.login(VICTIM, VICTIM_PW).code == "LOCKED_OUT"
    done = subprocess.run([sys.executable, "-m", "ftpd.cli", "user", "unlock", VICTIM,
                           "--root", str(daemon.root)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0 and f"unlocked user {VICTIM}" in done.stdout, done.stderr
    login_ok(daemon, "127.0.0.61", VICTIM, VICTIM_PW)
    with SourceWire(daemon.host, daemon.port, "127.0.0.60") as wire:
        assert wire.login(VICTIM, VICTIM_PW).code == "LOCKED_OUT"


# ---------------------------------------------------------------- name probing (item 11)


def test_register_is_throttled_per_address_like_a_failed_login(inproc_server):
    """Before the fix ``register`` told taken names apart at once, without a hash and
    without a limit.  Now every register costs one scrypt whether the name is taken or
    free, counts against the address like a failed login, and past the threshold the
    address is LOCKED_OUT for register and login alike; other addresses are not."""
    daemon = inproc_server(allow_register=True, lockout_threshold=3, lockout_seconds=60)
    daemon.add_user(VICTIM, VICTIM_PW)
    codes, hashes = [], []
    with SourceWire(daemon.host, daemon.port, "127.0.0.70") as wire:
        for name in (VICTIM, "newbie", "newbie", "another"):
            before = daemon.store.hash_calls
            reply = wire.call(m.Register(id=wire.next_id(), user=name, password="pw"))
            codes.append(reply.code if reply.type == "error" else "OK")
            hashes.append(daemon.store.hash_calls - before)
        assert wire.login("newbie", "pw").code == "LOCKED_OUT"
    assert codes == ["USER_EXISTS", "OK", "USER_EXISTS", "LOCKED_OUT"]
    assert hashes == [1, 1, 1, 0]
    with SourceWire(daemon.host, daemon.port, "127.0.0.71") as wire:
        assert wire.call(m.Register(id=1, user="another", password="pw")).type == "register"
        assert isinstance(wire.login("newbie", "pw"), m.LoginOk)
