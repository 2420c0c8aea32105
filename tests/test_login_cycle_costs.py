"""What a connect + token login + quit cycle costs the daemon (issue 17), counted:
replies encoded, SQLite statements run.  Each count is a promise the hot path
keeps; the behaviour around it (refusals, revocation) is tested where it lives.

Sessions run through ``test_session_unit``'s fake transport and hand-driven clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import protocol.messages as m
from ftpd import handlers
from ftpd.session import Session
from protocol import encode
from tests.call_counting import python_calls
from tests.test_session_unit import USER, FakeTransport, Harness


@pytest.fixture
def h(tmp_path: Path) -> Any:
    harness = Harness(tmp_path / "root")
    harness.ctx.throttle.ledger = harness.store.logins      # the daemon's: one catalogue
    harness.store.create_user(USER, "correct horse")
    yield harness
    harness.store.close()


def _session(h: Harness) -> tuple[Session, FakeTransport]:
    transport = FakeTransport()
    session = Session(h.ctx, transport)           # type: ignore[arg-type]
    transport.set_protocol(session)
    session.start(b"")
    return session, transport


def _replies(transport: FakeTransport) -> list[Any]:
    from protocol import MessageStream
    return MessageStream("client").feed(bytes(transport.out))


def _counting_encode(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    made: list[Any] = []

    def counted(message: Any) -> bytes:
        made.append(message)
        return encode(message)
    from ftpd import session
    monkeypatch.setattr(session, "encode", counted)           # replies encoded per send
    monkeypatch.setattr(handlers, "encode", counted, raising=False)
    getattr(handlers, "_frames", {}).clear()
    return made


def test_the_hello_reply_is_encoded_once_for_every_connection_asking_the_same(h, monkeypatch):
    made = _counting_encode(monkeypatch)
    answers = []
    for _ in range(3):
        session, transport = _session(h)
        session.data_received(memoryview(encode(m.Hello(id=1, protocol=1))))
        answers.append(_replies(transport))
    assert len(made) == 1
    assert answers[0] == answers[1] == answers[2] and isinstance(answers[0][0], m.HelloOk)


def test_a_hello_asking_other_terms_gets_its_own_reply(h, monkeypatch):
    _counting_encode(monkeypatch)
    sizes = []
    for max_data in (1 << 16, 1 << 17):
        session, transport = _session(h)
        session.data_received(memoryview(encode(m.Hello(id=1, protocol=1, max_data=max_data))))
        [reply] = _replies(transport)
        sizes.append(reply.max_data)
    assert sizes == [1 << 16, 1 << 17]


def test_the_quit_reply_is_encoded_once_and_still_closes_every_session(h, monkeypatch):
    made = _counting_encode(monkeypatch)
    for _ in range(2):
        session, transport = _session(h)
        session.data_received(memoryview(encode(m.Hello(id=1, protocol=1)) +
                                         encode(m.Quit(id=2))))
        assert [type(r) for r in _replies(transport)] == [m.HelloOk, m.QuitOk]
        assert transport.lost
    assert [type(x) for x in made] == [m.HelloOk, m.QuitOk]


def _counting_parse(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    from protocol import codec
    parsed: list[bytes] = []
    parse = codec.parse_object

    def counted(payload: bytes) -> Any:
        parsed.append(bytes(payload))
        return parse(payload)
    monkeypatch.setattr(codec, "parse_object", counted)
    getattr(codec, "_decoded", {}).clear()
    getattr(codec, "_decoded_replies", {}).clear()
    return parsed


def _payload(message: Any) -> bytes:
    return encode(message)[5:]                      # the frame without its 5-byte header


def test_the_same_small_request_payload_is_parsed_once(monkeypatch):
    from protocol.codec import decode_request
    parsed = _counting_parse(monkeypatch)
    hello = _payload(m.Hello(id=1, protocol=1))
    first, second = decode_request(hello), decode_request(hello)
    assert first == second == m.Hello(id=1, protocol=1) and len(parsed) == 1


def test_a_request_carrying_a_token_or_password_is_never_kept(monkeypatch):
    from protocol.codec import decode_request
    parsed = _counting_parse(monkeypatch)
    for login in (m.Login(id=2, token="t" * 43), m.Login(id=2, user="ada", password="pw")):
        decode_request(_payload(login))
        decode_request(_payload(login))
    assert len(parsed) == 4


def test_a_reconnecting_clients_greeting_hello_login_and_quit_replies_are_parsed_once(
        monkeypatch):
    from protocol.codec import decode_reply
    parsed = _counting_parse(monkeypatch)
    replies = [m.Greeting(protocol=1, server="ftpd", max_control=65536, max_data=1 << 20),
               m.HelloOk(id=1, protocol=1, max_data=1 << 20), m.LoginOk(id=2, user="ada",
                                                                        cwd="/"),
               m.QuitOk(id=3)]
    for _ in range(2):
        assert [decode_reply(_payload(r)) for r in replies] == replies
    assert len(parsed) == len(replies)


def test_a_login_reply_carrying_a_token_and_other_replies_are_never_kept(monkeypatch):
    from protocol.codec import decode_reply
    parsed = _counting_parse(monkeypatch)
    for reply in (m.LoginOk(id=2, user="ada", cwd="/", token="t" * 43),
                  m.ErrorReply(id=2, code="NOT_FOUND", message="no", details={"a": 1})):
        decode_reply(_payload(reply))
        decode_reply(_payload(reply))
    assert len(parsed) == 4


def test_a_token_login_reply_is_encoded_once_per_user_and_a_new_token_never_kept(h,
                                                                                monkeypatch):
    made = _counting_encode(monkeypatch)
    token = h.store.issue_token(USER)
    logins = []
    for _ in range(2):
        session, transport = _session(h)
        session.data_received(memoryview(encode(m.Hello(id=1, protocol=1)) +
                                         encode(m.Login(id=2, token=token))))
        logins.append(_replies(transport)[1])
        session.close("test")
    assert logins[0] == logins[1] == m.LoginOk(id=2, user=USER, cwd="/")
    assert [type(x) for x in made] == [m.HelloOk, m.LoginOk]
    session, transport = _session(h)
    session.data_received(memoryview(encode(m.Hello(id=1, protocol=1)) +
                                     encode(m.Login(id=2, token=token, want_token=True))))
    fresh = _replies(transport)[1]
    assert fresh.token and fresh.token != token and not any(
        fresh.token.encode() in frame for frame in handlers._frames.values())


def _cycle(h: Harness, token: str) -> FakeTransport:
    session, transport = _session(h)
    for message in (m.Hello(id=1, protocol=1), m.Login(id=2, token=token), m.Quit(id=3)):
        session.data_received(memoryview(encode(message)))
    return transport


def test_a_token_reconnect_runs_two_sqlite_statements_on_the_reactor(h):
    """The token with the address's and user name's throttle records (one read), the
    login's revocation check before quit; the trust record only once in a while."""
    token = h.store.issue_token(USER)
    _cycle(h, token)                                    # the first one writes the trust
    statements: list[str] = []
    h.store._ctx.db.conn().set_trace_callback(statements.append)
    try:
        transport = _cycle(h, token)
    finally:
        h.store._ctx.db.conn().set_trace_callback(None)
    assert [type(r) for r in _replies(transport)] == [m.HelloOk, m.LoginOk, m.QuitOk]
    assert len(statements) == 2, statements


def _statements_of_login(h: Harness, login: m.Login) -> tuple[Any, list[str]]:
    session, transport = _session(h)
    session.data_received(memoryview(encode(m.Hello(id=1, protocol=1))))
    statements: list[str] = []
    h.store._ctx.db.conn().set_trace_callback(statements.append)
    try:
        session.data_received(memoryview(encode(login)))
    finally:
        h.store._ctx.db.conn().set_trace_callback(None)
    return _replies(transport)[-1], statements


def test_a_token_login_reads_the_token_and_both_throttle_records_in_one_statement(h):
    token = h.store.issue_token(USER)
    _cycle(h, token)                                    # the first one writes the trust
    reply, statements = _statements_of_login(h, m.Login(id=2, token=token))
    assert isinstance(reply, m.LoginOk)
    assert len(statements) == 1 and "login_failures" in statements[0], statements


def test_a_token_login_through_the_one_statement_still_meets_the_address_lockout(h):
    token = h.store.issue_token(USER)
    throttle = h.ctx.throttle
    for i in range(throttle.threshold):
        throttle.failure(f"someone{i}", "127.0.0.1")     # the fake transport's address
    reply, statements = _statements_of_login(h, m.Login(id=2, token=token))
    assert isinstance(reply, m.ErrorReply) and reply.code == "LOCKED_OUT", reply
    assert len(statements) == 1, statements


def test_a_token_login_still_clears_the_user_names_failures(h):
    throttle = h.ctx.throttle
    for i in range(3):
        throttle.failure(USER, f"10.9.9.{i}")
    assert throttle.failures(USER) == 3
    transport = _cycle(h, h.store.issue_token(USER))
    assert isinstance(_replies(transport)[1], m.LoginOk)
    assert throttle.failures(USER) == 0


def test_the_check_before_each_request_matches_no_name_pattern(h, monkeypatch):
    """The logged-in name is looked up as it is (one indexed read): a name that is
    not valid is in no row, so no pattern match is spent per request (issue 17)."""
    from storage import accounts
    info = h.store.get_user(USER)
    matched: list[object] = []
    valid_name = accounts.is_valid_username

    def counted(name: object) -> bool:
        matched.append(name)
        return valid_name(name)
    monkeypatch.setattr(accounts, "is_valid_username", counted)
    assert h.store.login_valid(USER, info.uid, info.generation)
    assert not h.store.login_valid("no such name", info.uid, info.generation)
    assert not h.store.login_valid("bad\nname", info.uid, info.generation)
    assert h.store._accounts.login_stamp(b"ada") is None       # type: ignore[arg-type]
    assert matched == []


def test_a_remembered_request_or_reply_is_given_back_by_one_python_call():
    from protocol.codec import decode_reply, decode_request
    quit_, quit_ok = _payload(m.Quit(id=3)), _payload(m.QuitOk(id=3))
    decode_request(quit_), decode_reply(quit_ok)                # remembered now
    assert python_calls(lambda: decode_request(quit_)) == ["<lambda>", "decode_request"]
    assert python_calls(lambda: decode_reply(quit_ok)) == ["<lambda>", "decode_reply"]


def test_a_session_decodes_a_remembered_request_without_helpers(h):
    session, _ = _session(h)
    from protocol.framing import ControlFrame
    frame = ControlFrame(_payload(m.Quit(id=3)))
    session._decode(frame)
    calls = python_calls(lambda: session._decode(frame))
    assert calls == ["<lambda>", "_decode", "decode_request"], calls


def test_a_token_reconnect_asks_no_login_check_before_login_and_takes_up_nothing_waiting(
        h):
    """Before the login there is no login to check, and with nothing waiting there is
    nothing to take up: neither helper runs for it (issue 17)."""
    token = h.store.issue_token(USER)
    _cycle(h, token)
    calls = python_calls(lambda: _cycle(h, token))
    assert calls.count("_checks_login") == 1 and calls.count("_revoked") == 1   # quit's
    assert "_take_waiting" not in calls, calls


def _counting_timers(h: Harness, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    delays: list[float] = []
    call_later = h.timers.call_later

    def counted(delay: float, callback: Any) -> Any:
        delays.append(delay)
        return call_later(delay, callback)
    monkeypatch.setattr(h.timers, "call_later", counted)
    return delays


def test_a_token_reconnect_whose_quit_reply_leaves_at_once_arms_one_timer(h, monkeypatch):
    """The session's watchdog at the start; no closing watchdog for a connection that
    the transport closed at once with the quit reply (issue 17)."""
    token = h.store.issue_token(USER)
    _cycle(h, token)                                    # (the revocation sweep's timer)
    delays = _counting_timers(h, monkeypatch)
    transport = _cycle(h, token)
    assert transport.lost and len(delays) == 1, delays


def test_a_closing_session_whose_output_cannot_leave_at_once_still_gets_the_drain_limit(
        h, monkeypatch):
    from ftpd.session_guard import FORCE_CLOSE_AFTER

    class Draining(FakeTransport):
        def close(self) -> None:            # the output waits for the peer to read
            self.closing = True
    delays = _counting_timers(h, monkeypatch)
    transport = Draining()
    session = Session(h.ctx, transport)               # type: ignore[arg-type]
    transport.set_protocol(session)
    session.start(b"")
    session.data_received(memoryview(encode(m.Hello(id=1, protocol=1)) +
                                     encode(m.Quit(id=2))))
    assert transport.closing and not transport.lost
    assert session.watchdog is not None and not session.watchdog.cancelled
    assert session.watchdog.deadline == h.now + FORCE_CLOSE_AFTER and len(delays) == 2
    h.advance_clock(FORCE_CLOSE_AFTER)
    assert transport.lost                              # cut after the drain limit
