"""The lockout promises of docs/SECURITY.md, held black-box over the wire.

A real daemon subprocess; loopback source addresses (127.0.0.x) stand for
different hosts.  Nothing here names the throttle's internals, so the tests
survive a rework of ``ftpd/throttle.py`` as long as the documented behaviour
stays:

* after ``lockout_threshold`` consecutive failures of a user name or an
  address, both are refused with ``LOCKED_OUT`` for ``lockout_seconds`` --
  and "a token login is checked against the address's lockout (and the
  user's, if it names the user)";
* the count is of *consecutive* failures: once a lockout has been served,
  the user name and address start again from zero.
"""

from __future__ import annotations

from typing import Any

import protocol.messages as m
from tests.daemon import wait_for
from tests.test_hostile_support import SourceWire

VICTIM, VICTIM_PW = "victim", "the right one"


def token_for(daemon: Any, source: str) -> str:
    """A login token of the victim, issued to a password login from ``source``."""
    with SourceWire(daemon.host, daemon.port, source) as wire:
        ok = wire.login(VICTIM, VICTIM_PW, want_token=True)
        assert isinstance(ok, m.LoginOk) and ok.token, ok
        return ok.token


def token_login(wire: SourceWire, token: str, user: str | None = None) -> Any:
    return wire.call(m.Login(id=wire.next_id(), user=user, token=token))


def test_a_token_login_is_refused_while_its_user_is_locked_out(server_factory):
    daemon = server_factory(lockout_threshold=3, lockout_seconds=60)
    daemon.add_user(VICTIM, VICTIM_PW)
    token = token_for(daemon, "127.0.0.20")
    with SourceWire(daemon.host, daemon.port, "127.0.0.21") as attacker:
        assert [attacker.login(VICTIM, "wrong").code for _ in range(3)] == ["AUTH_FAILED"] * 3
    with SourceWire(daemon.host, daemon.port, "127.0.0.22") as wire:   # a clean address
        reply = token_login(wire, token, user=VICTIM)
        assert reply.code == "LOCKED_OUT" and reply.details["retry_after"] > 0


def test_a_token_login_is_refused_from_a_locked_out_address(server_factory):
    daemon = server_factory(lockout_threshold=3, lockout_seconds=60)
    daemon.add_user(VICTIM, VICTIM_PW)
    token = token_for(daemon, "127.0.0.30")
    with SourceWire(daemon.host, daemon.port, "127.0.0.31") as wire:
        # Guesses at other names lock the address, not the victim's name.
        assert [wire.login(f"nobody{i}", "wrong").code for i in range(3)] == ["AUTH_FAILED"] * 3
        reply = token_login(wire, token)
        assert reply.code == "LOCKED_OUT" and reply.details["retry_after"] > 0
    with SourceWire(daemon.host, daemon.port, "127.0.0.32") as wire:
        assert isinstance(token_login(wire, token), m.LoginOk)    # the token itself is fine


def test_a_served_lockout_starts_a_fresh_count_of_failures(server_factory):
    """After a lockout ends, the name and address get ``lockout_threshold`` attempts
    again (SECURITY.md counts *consecutive* failures): not one more failure and
    locked again."""
    daemon = server_factory(lockout_threshold=3, lockout_seconds=1.5)
    daemon.add_user(VICTIM, VICTIM_PW)
    with SourceWire(daemon.host, daemon.port, "127.0.0.40") as wire:
        assert [wire.login(VICTIM, "wrong").code for _ in range(3)] == ["AUTH_FAILED"] * 3
        assert wire.login(VICTIM, VICTIM_PW).code == "LOCKED_OUT"
        # Served: the first guess after the lockout is judged again (AUTH_FAILED) ...
        wait_for(lambda: wire.login(VICTIM, "wrong").code == "AUTH_FAILED", 20,
                 "the lockout to end")
        # ... and it is the first of a fresh three.
        assert [wire.login(VICTIM, "wrong").code for _ in range(2)] == ["AUTH_FAILED"] * 2
        assert wire.login(VICTIM, VICTIM_PW).code == "LOCKED_OUT"
