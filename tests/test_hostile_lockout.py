"""A token login meets the address's lockout (docs/SECURITY.md), held black-box.

A real daemon subprocess; loopback source addresses (127.0.0.x) stand for
different hosts.  Nothing here names the throttle's internals, so the test
survives reworks of ``ftpd/throttle.py`` as long as the documented promise
stays: an address locked out for its failures is refused whatever it
presents -- "tokens do not help against an address lockout".  (A valid token
is exempt from its *user name's* lockout since issue 13:
``test_hostile_login.py::test_a_session_token_is_not_subject_to_the_user_names_lockout``.)
"""

from __future__ import annotations

from typing import Any

import protocol.messages as m
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
