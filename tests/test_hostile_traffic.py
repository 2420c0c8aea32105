"""Malformed traffic against a live daemon: garbage, broken frames, bad JSON, wrong order.

One daemon subprocess serves the whole module.  Each hypothesis example opens a
fresh connection (before hello, after hello, or logged in), sends the hostile
bytes, half-closes and reads until the daemon closes.  The promises:

* every reply is a well-formed frame; a fatal error, if any, is the last one;
* the connection ends (EOF or reset) within seconds: never a hang;
* where the bytes alone decide the outcome, the daemon's verdict is the one the
  framing rules of docs/PROTOCOL.md give (computed here by an independent
  reference parser of the frame headers);
* after every example the daemon's process is alive and a well-behaved client on
  another connection (logged in for the whole module) is still served (ping and ls);
* its memory does not grow with the number of hostile examples;
* its log never holds a traceback (checked after every test).
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import protocol.messages as m
from protocol import (
    ERROR_CODES,
    FATAL_CODES,
    BadMessage,
    BadRequest,
    decode_request,
    encode,
    encode_control,
    encode_data,
)
from protocol.codec import _request_id
from tests.conftest import examples
from tests.daemon import DaemonProcess
from tests.test_hostile_support import alive, close_daemon, drain, open_daemon, served
from tests.wire import Wire

USER, PASSWORD = "eve", "hunter2"
MAX_CONTROL, MAX_DATA = 64 * 1024, 1 << 20
HOSTILE = settings(max_examples=examples(150), deadline=None, derandomize=False,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow, HealthCheck.data_too_large])
HEADER = struct.Struct(">IB")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Wrong passwords are part of the hostile mix: keep the address from being locked out.
    d = open_daemon(tmp_path_factory.mktemp("traffic") / "root",
                    lockout_threshold=1_000_000, auth_delay_base=0.001, auth_delay_max=0.002)
    d.add_user(USER, PASSWORD)
    try:
        yield d
    finally:
        close_daemon(d)


@pytest.fixture(scope="module")
def bystander(daemon: DaemonProcess) -> Any:
    """A well-behaved client, logged in for the whole module."""
    with Wire(daemon.host, daemon.port, timeout=10) as wire:
        wire.logged_in(USER, PASSWORD)
        yield wire


@pytest.fixture(autouse=True)
def _daemon_survives(daemon: DaemonProcess, bystander: Wire) -> Any:
    yield
    assert alive(daemon), "the daemon died"
    assert served(bystander), "a well-behaved client was not served after the test"
    assert "Traceback" not in daemon.log(), daemon.log()[-4000:]


# ---------------------------------------------------------------- helpers


def connect(daemon: DaemonProcess, state: str) -> socket.socket:
    """A raw socket in ``state``: "greeted" (no hello), "anonymous" or "ready"."""
    wire = Wire(daemon.host, daemon.port, timeout=10, hello=state != "greeted")
    if state == "ready":
        wire.logged_in(USER, PASSWORD)
    assert not wire.events and not wire.stream.frames.in_frame
    return wire.sock


def attack(daemon: DaemonProcess, state: str, payload: bytes,
           half_close: bool = True) -> tuple[list[Any], str]:
    """Send ``payload`` on a fresh connection, half-close, return (replies, how it ended)."""
    sock = connect(daemon, state)
    try:
        try:
            sock.sendall(payload)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass          # the daemon already refused and closed: fine, read its verdict
        return drain(sock, timeout=10)
    finally:
        sock.close()


def predict(payload: bytes) -> set[str] | None:
    """The fatal codes the daemon may end with, by an independent reading of the framing rules.

    ``set()``: no fatal error frame (the stream ends cleanly or inside a frame);
    ``None``: a valid request changes the session, so the bytes alone do not decide.
    Several verdicts are possible once a first fatal event (a stray DATA frame, a
    control frame that is not JSON) is followed by more broken frames: the daemon
    decodes what one ``recv`` returned before acting on it, so a later broken frame
    read in the same chunk pre-empts the earlier event; which one wins depends on
    how TCP cut the stream.
    """
    pos, end = 0, len(payload)
    verdicts: set[str] = set()
    while end - pos >= HEADER.size:
        length, ftype = HEADER.unpack_from(payload, pos)
        if ftype not in (1, 2) or length == 0:
            return verdicts | {"BAD_FRAME"}
        if length > (MAX_CONTROL if ftype == 1 else MAX_DATA):
            return verdicts | {"FRAME_TOO_LARGE"}
        body = payload[pos + HEADER.size:pos + HEADER.size + length]
        if ftype == 2:
            if body:
                verdicts.add("BAD_STATE")   # even a cut DATA frame hands its bytes over
        elif len(body) == length:
            try:
                decode_request(body)
            except BadMessage:
                verdicts.add("BAD_MESSAGE")
            except BadRequest:
                pass                        # Rejected: a non-fatal error, the stream goes on
            else:
                if not verdicts:
                    return None             # a request really runs: the session changes
        if len(body) < length:
            break                           # EOF inside the frame: a close, no error frame
        pos += HEADER.size + length
    return verdicts


def still_serving(daemon: DaemonProcess, bystander: Wire) -> None:
    """After every example: the daemon is alive and a client on another connection is served."""
    assert alive(daemon), "the daemon died"
    assert served(bystander), "a well-behaved client on another connection was not served"


def check_verdict(replies: list[Any], how: str, expected: set[str] | None) -> None:
    event(f"predicted: {'(request ran)' if expected is None else sorted(expected)}")
    assert how in ("eof", "reset"), f"the daemon neither answered nor closed: {replies}"
    errors = [r for r in replies if isinstance(r, m.ErrorReply)]
    assert all(e.code in ERROR_CODES for e in errors), errors
    # BAD_STATE with a null id is the closing verdict on a stray DATA frame.
    fatal = [e for e in errors if e.code in FATAL_CODES or (e.code == "BAD_STATE" and e.id is None)]
    assert len(fatal) <= 1, f"more than one fatal error: {fatal}"
    if fatal:
        assert replies[-1] is fatal[0], f"frames after a fatal error: {replies}"
    if expected is not None:
        got = {e.code for e in fatal}
        if expected:
            assert got and got <= expected, f"expected one of {expected}, got {replies}"
        else:
            assert not got, f"expected no fatal error, got {replies}"


# ---------------------------------------------------------------- strategies

STATES = st.sampled_from(["greeted", "anonymous", "ready"])

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@st.composite
def wrong_field_requests(draw: Any) -> dict[str, Any]:
    """A known command whose fields (id included) hold random JSON, valid or not."""
    cmd = draw(st.sampled_from(sorted(m.REQUESTS)))
    obj: dict[str, Any] = {"cmd": cmd}
    names = [f for f in m.REQUESTS[cmd].__dataclass_fields__]
    for name in draw(st.lists(st.sampled_from(names), unique=True)):
        obj[name] = draw(json_values)
    if draw(st.booleans()):
        obj["id"] = draw(st.integers(0, 2**53 - 1))
    return obj


unknown_commands = st.builds(
    lambda cmd, rid: {"cmd": cmd, "id": rid},
    st.text(max_size=30).filter(lambda c: c not in m.REQUESTS) | json_values,
    st.integers(0, 2**53 - 1))


def control(obj: Any) -> bytes:
    return encode_control(json.dumps(obj).encode())


def nested(depth: int, kind: str) -> bytes:
    inner = b"[" * depth + b"]" * depth if kind == "list" else \
        b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"cmd":"ping","id":1,"payload":' + inner + b"}"


VALID = [
    encode(m.Ping(id=11, payload="x")), encode(m.Whoami(id=12)), encode(m.Pwd(id=13)),
    encode(m.Hello(id=14, protocol=1)), encode(m.Hello(id=15, protocol=7)),
    encode(m.Login(id=16, user=USER, password="wrong")), encode(m.Ls(id=17)),
    encode(m.Put(id=18, path="fuzz.bin", size=3, overwrite=True)), encode(m.Cancel(id=19)),
    encode(m.Get(id=20, path="nope")), encode(m.Quota(id=21)), encode(m.Logout(id=22)),
    encode(m.Register(id=23, user="x", password="y")), encode(m.Quit(id=24)),
]

frames = st.one_of(
    st.binary(max_size=64),                                               # raw garbage
    st.builds(HEADER.pack,                                                # bare headers
              st.sampled_from([0, 1, 5, MAX_CONTROL, MAX_CONTROL + 1, MAX_DATA, MAX_DATA + 1,
                               2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1),
              st.sampled_from([0, 1, 2, 3, 255]) | st.integers(0, 255)),
    st.builds(lambda f, cut: f[:max(1, int(len(f) * cut))],               # truncated frames
              st.sampled_from(VALID), st.floats(0, 0.99)),
    wrong_field_requests().map(control),
    unknown_commands.map(control),
    json_values.map(control),                                             # not an object
    st.builds(nested, st.integers(1, 30_000), st.sampled_from(["list", "dict"])),
    st.builds(lambda n: encode_control(b'{"cmd":"ping","id":1,"payload":"' + b"A" * n + b'"}'),
              st.integers(MAX_CONTROL - 40, MAX_CONTROL + 100)),          # around the limit
    st.builds(lambda f, bad, at: encode_control(f[5:][:at] + bad + f[5:][at:]),  # bad UTF-8
              st.sampled_from(VALID), st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80",
                                                      b"\xf8\x88\x80\x80\x80", b"\x80"]),
              st.integers(0, 40)),
    st.binary(min_size=1, max_size=256).map(encode_data),                # DATA frames
    st.sampled_from(VALID),                                               # valid requests
)


# ---------------------------------------------------------------- property tests


@HOSTILE
@given(state=STATES, payload=st.binary(max_size=4096))
def test_random_garbage_gets_an_error_frame_or_a_close(daemon, bystander, state, payload):
    """Random bytes: well-formed replies only, the predicted fatal error, then a close."""
    replies, how = attack(daemon, state, payload)
    check_verdict(replies, how, predict(payload))
    still_serving(daemon, bystander)


@HOSTILE
@given(state=STATES, parts=st.lists(frames, min_size=1, max_size=6))
def test_hostile_frame_sequences_get_errors_or_a_close(daemon, bystander, state, parts):
    """Mixes of broken headers, cut frames, bad JSON and stray DATA: as above."""
    payload = b"".join(parts)
    replies, how = attack(daemon, state, payload)
    check_verdict(replies, how, predict(payload))
    still_serving(daemon, bystander)


@settings(HOSTILE, max_examples=examples(80))
@given(state=STATES, obj=wrong_field_requests() | unknown_commands)
def test_requests_with_wrong_fields_are_refused_and_the_connection_survives(daemon, bystander,
                                                                          state, obj):
    """A JSON object that is not a valid request gets BAD_REQUEST/UNKNOWN_COMMAND with its
    id echoed, and a ping on the same connection is still answered."""
    body = json.dumps(obj).encode()
    try:
        decode_request(body)
    except BadRequest as exc:
        expected = exc.code
    else:
        assume(False)               # happened to be a valid request
    with Wire(daemon.host, daemon.port, timeout=10, hello=state != "greeted") as wire:
        if state == "ready":
            wire.logged_in(USER, PASSWORD)
        wire.send_raw(encode_control(body))
        reply = wire.recv_reply()
        assert isinstance(reply, m.ErrorReply) and reply.code == expected, reply
        assert reply.id == _request_id(obj)
        assert isinstance(wire.call(m.Ping(id=99)), m.Pong)
    still_serving(daemon, bystander)


# The state model: which commands each state accepts (docs/PROTOCOL.md, protocol/state.py).
_ORDER_REQUESTS = {
    "hello": lambda i: m.Hello(id=i, protocol=1),
    "login": lambda i: m.Login(id=i, user=USER, password=PASSWORD),
    "logout": lambda i: m.Logout(id=i),
    "whoami": lambda i: m.Whoami(id=i),
    "ping": lambda i: m.Ping(id=i),
    "pwd": lambda i: m.Pwd(id=i),
    "ls": lambda i: m.Ls(id=i),
    "stat": lambda i: m.Stat(id=i, path="/"),
    "quota": lambda i: m.Quota(id=i),
    "uploads": lambda i: m.Uploads(id=i),
    "cancel": lambda i: m.Cancel(id=i),
    "abort": lambda i: m.Abort(id=i, path="never-started"),
    "put": lambda i: m.Put(id=i, path="x", size=1),
    "get": lambda i: m.Get(id=i, path="x"),
    "register": lambda i: m.Register(id=i, user="newbie", password="pw"),
}
_OK_REPLY = {"login": m.LoginOk, "hello": m.HelloOk}


@settings(HOSTILE, max_examples=examples(60))
@given(commands=st.lists(st.sampled_from(sorted(_ORDER_REQUESTS)), min_size=1, max_size=12))
def test_commands_out_of_order_are_refused_without_changing_the_state(daemon, bystander,
                                                                      commands):
    """Random command sequences from a fresh connection: each command the state table does
    not allow gets BAD_STATE or AUTH_REQUIRED (put before login, hello twice, cancel with no
    transfer...) and leaves the state as it was; allowed ones succeed."""
    from protocol import State, next_state, refusal_code

    state = State.GREETED
    with Wire(daemon.host, daemon.port, timeout=10, hello=False) as wire:
        for i, cmd in enumerate(commands, start=1):
            # put/get would succeed in READY only with a real file: keep them to refusals.
            if cmd in ("put", "get") and state is State.READY:
                continue
            reply = wire.call(_ORDER_REQUESTS[cmd](i))
            assert reply.id == i, reply
            target = next_state(state, cmd)
            if target is None:
                assert isinstance(reply, m.ErrorReply), (state, cmd, reply)
                assert reply.code == refusal_code(state, cmd), (state, cmd, reply)
            else:
                expected_type = _OK_REPLY.get(cmd)
                if expected_type is not None:
                    assert isinstance(reply, expected_type), (state, cmd, reply)
                    state = target
                elif cmd == "logout":
                    assert isinstance(reply, m.LogoutOk), reply
                    state = target
                elif cmd in ("abort", "register"):
                    assert reply.code in ("NOT_FOUND", "REGISTRATION_DISABLED"), reply
                else:
                    assert not isinstance(reply, m.ErrorReply), (state, cmd, reply)
        assert isinstance(wire.call(m.Ping(id=1000)), m.Pong)
    still_serving(daemon, bystander)


# ---------------------------------------------------------------- one frame, one verdict


@pytest.mark.parametrize("ftype", [1, 2, 3])
def test_declared_length_zero_is_bad_frame_and_closes(daemon, ftype):
    """A header declaring an empty frame (of any type) gets BAD_FRAME, then a close."""
    replies, how = attack(daemon, "ready", HEADER.pack(0, ftype))
    assert [r.code for r in replies] == ["BAD_FRAME"] and how in ("eof", "reset")


@pytest.mark.parametrize("ftype", [1, 2])
def test_declared_length_2_to_32_minus_1_is_refused_after_the_header_alone(daemon, ftype):
    """A header declaring 4 GiB gets FRAME_TOO_LARGE without a single payload byte sent
    (the socket stays open for writing: the daemon must not wait for the body)."""
    replies, how = attack(daemon, "ready", HEADER.pack(2**32 - 1, ftype), half_close=False)
    assert [r.code for r in replies] == ["FRAME_TOO_LARGE"] and how in ("eof", "reset")
    assert replies[0].id is None


def test_oversized_json_is_frame_too_large(daemon):
    """A 64 KiB + 1 control frame, body and all, is refused as FRAME_TOO_LARGE."""
    body = b'{"cmd":"ping","id":1,"payload":"' + b"A" * MAX_CONTROL + b'"}'
    replies, how = attack(daemon, "ready", encode_control(body))
    assert [r.code for r in replies] == ["FRAME_TOO_LARGE"] and how in ("eof", "reset")


def test_json_at_the_control_limit_is_parsed(daemon):
    """Exactly 64 KiB of JSON is a legal frame: an over-long payload field is BAD_REQUEST."""
    head, tail = b'{"cmd":"ping","id":5,"payload":"', b'"}'
    body = head + b"A" * (MAX_CONTROL - len(head) - len(tail)) + tail
    assert len(body) == MAX_CONTROL
    replies, how = attack(daemon, "ready", encode_control(body))
    assert [(r.code, r.id) for r in replies] == [("BAD_REQUEST", 5)] and how == "eof"


@pytest.mark.parametrize(("kind", "depth"), [("list", 30_000), ("dict", 10_000)])
def test_deeply_nested_json_is_bad_message_and_closes(daemon, kind, depth):
    """Tens of thousands of nesting levels (inside 64 KiB) cannot crash the parser:
    BAD_MESSAGE, then a close."""
    replies, how = attack(daemon, "ready", encode_control(nested(depth, kind)))
    assert [r.code for r in replies] == ["BAD_MESSAGE"] and how in ("eof", "reset")


def test_moderately_nested_json_is_a_bad_request_and_the_connection_survives(daemon):
    """Nesting the parser accepts, in a field that wants a string: BAD_REQUEST, no close."""
    with Wire(daemon.host, daemon.port) as wire:
        wire.send_raw(encode_control(nested(200, "list")))
        assert wire.recv_reply().code == "BAD_REQUEST"
        assert isinstance(wire.call(m.Ping(id=2)), m.Pong)


@pytest.mark.parametrize("bad", [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                 b"\xe2\x82"])
def test_invalid_utf8_is_bad_message_and_closes(daemon, bad):
    """Invalid UTF-8 (stray byte, overlong, encoded surrogate, > U+10FFFF, cut sequence)
    inside a JSON string: BAD_MESSAGE, then a close."""
    body = b'{"cmd":"ping","id":1,"payload":"' + bad + b'"}'
    replies, how = attack(daemon, "ready", encode_control(body))
    assert [r.code for r in replies] == ["BAD_MESSAGE"] and how in ("eof", "reset")


def test_lone_surrogate_escape_is_a_bad_request_and_the_connection_survives(daemon):
    """A \\ud800 escape is valid JSON but not valid text: BAD_REQUEST, connection kept."""
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        wire.send_raw(encode_control(b'{"cmd":"mkdir","id":3,"path":"a\\ud800b"}'))
        reply = wire.recv_reply()
        assert reply.code == "BAD_REQUEST" and reply.id == 3
        assert isinstance(wire.call(m.Ping(id=4)), m.Pong)


def test_unknown_frame_type_is_bad_frame(daemon):
    """A frame of type 7 (only 1 and 2 exist): BAD_FRAME, then a close."""
    replies, how = attack(daemon, "anonymous", HEADER.pack(3, 7) + b"abc")
    assert [r.code for r in replies] == ["BAD_FRAME"] and how in ("eof", "reset")


def test_put_before_login_is_auth_required(daemon):
    """put after hello but before login: AUTH_REQUIRED, and the connection goes on."""
    with Wire(daemon.host, daemon.port) as wire:
        reply = wire.call(m.Put(id=4, path="x", size=10))
        assert reply.code == "AUTH_REQUIRED" and reply.id == 4
        assert isinstance(wire.call(m.Ping(id=5)), m.Pong)


@pytest.mark.parametrize("state", ["greeted", "anonymous", "ready"])
def test_data_frame_with_no_transfer_open_is_bad_state_and_closes(daemon, state):
    """A DATA frame before hello, before login or with no upload open: BAD_STATE (id null),
    then a close."""
    replies, how = attack(daemon, state, encode_data(b"stray bytes"))
    assert [(r.code, r.id) for r in replies] == [("BAD_STATE", None)] and how in ("eof", "reset")


def test_data_past_the_declared_size_is_bad_state_and_closes(daemon):
    """An upload of 4 bytes fed 8: BAD_STATE and a close; the partial stays resumable."""
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        ready = wire.call(m.Put(id=2, path="overfed.bin", size=4, overwrite=True))
        assert isinstance(ready, m.PutReady)
        wire.send_raw(encode_data(b"12345678"))
        replies, how = drain(wire.sock, stream=wire.stream)
    assert [(r.code, r.id) for r in replies] == [("BAD_STATE", None)] and how in ("eof", "reset")
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        assert isinstance(wire.call(m.Abort(id=3, path="overfed.bin")), m.AbortOk)


# ---------------------------------------------------------------- memory


def test_memory_stays_bounded_across_hostile_examples(daemon, bystander):
    """Resident memory after 400 hostile examples (big bodies included) is within 4 MiB of
    what it was after a warm-up of 60."""
    def run(n: int) -> None:
        @settings(HOSTILE, max_examples=n, database=None)
        @given(state=STATES, parts=st.lists(frames, min_size=1, max_size=6))
        def one(state: str, parts: list[bytes]) -> None:
            replies, how = attack(daemon, state, b"".join(parts))
            check_verdict(replies, how, None)
            still_serving(daemon, bystander)
        one()

    run(60)
    before = daemon.rss()
    run(400)
    after = daemon.rss()
    assert after - before < 4 << 20, f"RSS grew from {before >> 10} KiB to {after >> 10} KiB"
