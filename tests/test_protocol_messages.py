"""Typed messages and the JSON codec: round trips, validation, total decoding."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol as p
from tests.conftest import examples
from tests.strategies import (
    RECORD_STRATEGIES,
    REPLY_STRATEGIES,
    REQUEST_STRATEGIES,
    json_scalars,
    json_values,
    messages,
    requests,
    sha256s,
    text,
)

MAX_INT = 2**53 - 1

#: Each message type gets a share of the profile's budget (there are ~50 of them);
#: the mixed-type properties below get the whole budget.  Under ci each type gets 100
#: (50 x 500 round trips alone took two minutes of CI's ten).
per_type = settings(max_examples=examples(max(5, settings.default.max_examples // 20), ci=100))

ALL_TYPES = [("request", name) for name in REQUEST_STRATEGIES] + \
            [("reply", name) for name in REPLY_STRATEGIES]


def payload(message: p.Message) -> bytes:
    """The control payload (JSON text) of an encoded message."""
    frame = p.encode(message)
    return frame[p.HEADER_SIZE:]


def raw(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def decode(kind: str, data: bytes) -> p.Message:
    return p.decode_request(data) if kind == "request" else p.decode_reply(data)


# ------------------------------------------------------------------ coverage


def test_strategies_cover_every_request_and_reply_type():
    assert set(REQUEST_STRATEGIES) == set(p.REQUESTS)
    assert set(REPLY_STRATEGIES) == set(p.REPLIES)


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize(("kind", "name"), ALL_TYPES, ids=[f"{k}:{n}" for k, n in ALL_TYPES])
@per_type
@given(data=st.data())
def test_every_message_type_round_trips(kind, name, data):
    strategy = (REQUEST_STRATEGIES if kind == "request" else REPLY_STRATEGIES)[name]
    message = data.draw(strategy)
    frame = p.encode(message)
    assert int.from_bytes(frame[:4], "big") == len(frame) - p.HEADER_SIZE
    assert frame[4] == p.FrameType.CONTROL
    decoded = decode(kind, frame[p.HEADER_SIZE:])
    assert type(decoded) is type(message)
    assert decoded == message


@pytest.mark.parametrize("cls", list(RECORD_STRATEGIES), ids=lambda c: c.__name__)
@per_type
@given(data=st.data())
def test_records_round_trip(cls, data):
    record = data.draw(RECORD_STRATEGIES[cls])
    assert cls.from_wire(json.loads(json.dumps(record.to_wire()))) == record


@given(messages)
def test_control_payload_is_one_utf8_json_object_naming_its_command_or_type(message):
    obj = json.loads(payload(message).decode("utf-8"))
    assert isinstance(obj, dict)
    if isinstance(message, p.Request):
        assert obj["cmd"] == message.cmd
    else:
        assert obj["type"] == message.type


@given(messages)
def test_null_optional_fields_are_omitted_when_encoding(message):
    obj = json.loads(payload(message))
    records = [obj, *obj.get("entries", ()), *obj.get("uploads", ())]
    if "entry" in obj:
        records.append(obj["entry"])
    for record in records:
        assert None not in record.values()


@given(requests)
def test_every_valid_request_fits_in_a_default_control_frame(request):
    assert len(payload(request)) <= p.DEFAULT_MAX_CONTROL


def test_largest_possible_request_fits_in_a_default_control_frame():
    # Control characters are escaped as \\u00XX: six bytes for one character.
    worst = "\x01" * 4096
    assert len(payload(p.Mv(id=MAX_INT, src=worst, dst=worst, overwrite=True))) \
        <= p.DEFAULT_MAX_CONTROL


@given(messages, st.dictionaries(text(max_size=8), json_scalars, max_size=3))
def test_unknown_fields_are_ignored(message, extra):
    known = {f.name for f in dataclasses.fields(message)} | {"cmd", "type"}
    obj = {**{k: v for k, v in extra.items() if k not in known}, **message.to_wire()}
    decode_fn = p.decode_request if isinstance(message, p.Request) else p.decode_reply
    assert decode_fn(raw(obj)) == message


def test_null_for_an_optional_field_means_the_same_as_omitting_it():
    assert p.decode_request(b'{"cmd":"put","id":1,"path":"a","size":0,"sha256":null}') == \
        p.Put(id=1, path="a", size=0)
    assert p.decode_reply(b'{"type":"error","id":null,"code":"TIMEOUT"}') == \
        p.ErrorReply(code="TIMEOUT")


def test_defaults_fill_omitted_fields():
    assert p.decode_request(b'{"cmd":"ls","id":1}') == p.Ls(id=1, path=".")
    assert p.decode_request(b'{"cmd":"get","id":1,"path":"f"}') == \
        p.Get(id=1, path="f", offset=0, verify=True)
    assert p.decode_request(b'{"cmd":"hello","id":1,"protocol":1}') == \
        p.Hello(id=1, protocol=1, client="", max_data=None)


def test_escaped_and_raw_utf8_strings_decode_the_same():
    escaped = b'{"cmd":"rm","id":1,"path":"caf\\u00e9/\\ud83d\\ude00"}'
    plain = '{"cmd":"rm","id":1,"path":"café/😀"}'.encode()
    assert p.decode_request(escaped) == p.decode_request(plain) == p.Rm(id=1, path="café/😀")


def test_json_whitespace_around_and_inside_the_object_is_allowed():
    assert p.decode_request(b' \r\n\t{ "cmd" : "quit" , "id" : 3 }\n') == p.Quit(id=3)


def test_request_ids_span_0_to_2_pow_53_minus_1():
    assert p.decode_request(raw({"cmd": "ping", "id": 0})).id == 0
    assert p.decode_request(raw({"cmd": "ping", "id": MAX_INT})).id == MAX_INT


# ------------------------------------------------------------------ validation


def rejects(obj: Any, error: type[p.ProtocolError] = p.BadRequest) -> p.ProtocolError:
    data = obj if isinstance(obj, bytes) else raw(obj)
    with pytest.raises(error) as info:
        p.decode_request(data)
    return info.value


def rejects_reply(obj: Any) -> p.ProtocolError:
    data = obj if isinstance(obj, bytes) else raw(obj)
    with pytest.raises(p.BadMessage) as info:
        p.decode_reply(data)
    return info.value


WRONG_TYPES = {
    "str for int": {"cmd": "put", "id": 1, "path": "a", "size": "10"},
    "bool for int id": {"cmd": "ping", "id": True},
    "bool for int offset": {"cmd": "get", "id": 1, "path": "a", "offset": False},
    "float for int": {"cmd": "get", "id": 1, "path": "a", "offset": 1.0},
    "int for bool": {"cmd": "mkdir", "id": 1, "path": "a", "parents": 1},
    "str for bool defer_sha256": {"cmd": "put", "id": 1, "path": "a", "size": 1,
                                  "defer_sha256": "true"},
    "null for commit sha256": {"cmd": "commit", "id": 1, "sha256": None},
    "str for bool": {"cmd": "mv", "id": 1, "src": "a", "dst": "b", "overwrite": "true"},
    "int for str": {"cmd": "rm", "id": 1, "path": 5},
    "list for str": {"cmd": "cd", "id": 1, "path": ["a"]},
    "object for str": {"cmd": "stat", "id": 1, "path": {"a": 1}},
    "null for a required field": {"cmd": "hash", "id": 1, "path": None},
    "null for a field with a default": {"cmd": "ls", "id": 1, "path": None},
}


@pytest.mark.parametrize("obj", list(WRONG_TYPES.values()), ids=list(WRONG_TYPES))
def test_wrong_json_type_is_bad_request(obj):
    error = rejects(obj)
    assert error.code == "BAD_REQUEST"
    assert not error.fatal


@pytest.mark.parametrize("text", ["1.0", "1e3", "1E3", "-0.0"])
def test_integer_written_with_fraction_or_exponent_is_bad_request(text):
    rejects(b'{"cmd":"get","id":1,"path":"a","offset":' + text.encode() + b"}")


OUT_OF_RANGE = {
    "negative id": {"cmd": "ping", "id": -1},
    "id above 2^53-1": {"cmd": "ping", "id": MAX_INT + 1},
    "negative size": {"cmd": "put", "id": 1, "path": "a", "size": -1},
    "size above 2^53-1": {"cmd": "put", "id": 1, "path": "a", "size": 2**53},
    "negative offset": {"cmd": "get", "id": 1, "path": "a", "offset": -5},
    "negative protocol": {"cmd": "hello", "id": 1, "protocol": -1},
    "hello max_data below 4096": {"cmd": "hello", "id": 1, "protocol": 1, "max_data": 4095},
    "hello max_data above 64 MiB": {"cmd": "hello", "id": 1, "protocol": 1,
                                    "max_data": 64 * 1024 * 1024 + 1},
}


@pytest.mark.parametrize("obj", list(OUT_OF_RANGE.values()), ids=list(OUT_OF_RANGE))
def test_integer_out_of_range_is_bad_request(obj):
    rejects(obj)


def test_out_of_range_numbers_in_replies_are_bad_message():
    rejects_reply({"type": "quota", "id": 1, "used": -1, "reserved": 0, "limit": 0, "free": 0})
    entry = {"name": "a", "type": "file", "size": 1, "mtime": -0.5}
    rejects_reply({"type": "stat", "id": 1, "path": "/a", "entry": entry})


#: (command, field, longest accepted length, other fields)
LENGTH_LIMITS = [
    ("rm", "path", 4096, {}),
    ("mv", "src", 4096, {"dst": "b"}),
    ("mv", "dst", 4096, {"src": "a"}),
    ("register", "user", 64, {"password": "pw"}),
    ("register", "password", 1024, {"user": "u"}),
    ("login", "password", 1024, {"user": "u"}),
    ("login", "token", 256, {}),
    ("ping", "payload", 1024, {}),
    ("hello", "client", 256, {"protocol": 1}),
]


@pytest.mark.parametrize(("cmd", "field", "limit", "rest"), LENGTH_LIMITS,
                         ids=[f"{c}.{f}" for c, f, _, _ in LENGTH_LIMITS])
def test_string_longer_than_its_limit_is_bad_request(cmd, field, limit, rest):
    # Lengths count characters (code points), not bytes.
    base = {"cmd": cmd, "id": 1, **rest}
    assert p.decode_request(raw({**base, field: "é" * limit}))
    rejects({**base, field: "é" * (limit + 1)})


EMPTY_STRINGS = {
    "path": {"cmd": "rm", "id": 1, "path": ""},
    "ls path": {"cmd": "ls", "id": 1, "path": ""},
    "user": {"cmd": "register", "id": 1, "user": "", "password": "pw"},
    "password": {"cmd": "register", "id": 1, "user": "u", "password": ""},
    "token": {"cmd": "login", "id": 1, "token": ""},
}


@pytest.mark.parametrize("obj", list(EMPTY_STRINGS.values()), ids=list(EMPTY_STRINGS))
def test_empty_string_where_one_is_required_is_bad_request(obj):
    rejects(obj)


@pytest.mark.parametrize("digest", ["A" * 64, "0" * 63, "0" * 65, "g" * 64, " " + "0" * 63,
                                    "0" * 63 + "\n", ""])
def test_malformed_sha256_is_bad_request(digest):
    rejects({"cmd": "put", "id": 1, "path": "a", "size": 1, "sha256": digest})
    rejects({"cmd": "commit", "id": 1, "sha256": digest})


@pytest.mark.parametrize("kind", ["link", "File", "", "directory"])
def test_entry_type_outside_file_dir_other_is_refused(kind):
    entry = {"name": "a", "type": kind, "size": 1, "mtime": 0}
    rejects_reply({"type": "stat", "id": 1, "path": "/a", "entry": entry})
    with pytest.raises(p.BadRequest):
        p.Entry(name="a", type=kind, size=1, mtime=0)


#: Fields without which each request is invalid (besides login's cross-field rule).
REQUIRED = {
    "hello": {"id", "protocol"}, "register": {"id", "user", "password"}, "login": {"id"},
    "logout": {"id"}, "whoami": {"id"}, "pwd": {"id"}, "cd": {"id", "path"}, "ls": {"id"},
    "stat": {"id", "path"}, "mkdir": {"id", "path"}, "rmdir": {"id", "path"},
    "rm": {"id", "path"}, "mv": {"id", "src", "dst"}, "put": {"id", "path", "size"},
    "get": {"id", "path"}, "uploads": {"id"}, "abort": {"id", "path"}, "cancel": {"id"},
    "quota": {"id"}, "hash": {"id", "path"}, "ping": {"id"}, "quit": {"id"},
    "commit": {"id", "sha256"},
}


def test_required_field_table_covers_every_command():
    assert set(REQUIRED) == set(p.REQUESTS)


@given(requests, st.integers(0, 255))
def test_missing_required_field_is_bad_request(request, pick):
    obj = request.to_wire()
    required = sorted(REQUIRED[request.cmd])
    field = required[pick % len(required)]
    del obj[field]
    error = rejects(obj)
    assert error.request_id == (None if field == "id" else request.id)


@given(requests, st.integers(0, 2**8 - 1))
def test_optional_fields_may_be_omitted(request, mask):
    obj = request.to_wire()
    optional = sorted(set(obj) - REQUIRED[request.cmd] - {"cmd"})
    if request.cmd == "login":      # the cross-field rule needs password or token
        optional = [f for f in optional if f not in ("password", "token", "user")]
    for bit, field in enumerate(optional):
        if mask >> bit & 1:
            del obj[field]
    assert type(p.decode_request(raw(obj))) is type(request)


UNKNOWN = {
    "no such command": {"cmd": "nope", "id": 4},
    "commands are case-sensitive": {"cmd": "PING", "id": 4},
    "empty cmd": {"cmd": "", "id": 4},
    "cmd missing": {"id": 4},
    "cmd not a string": {"cmd": 7, "id": 4},
    "cmd null": {"cmd": None, "id": 4},
    "reply type is not a command": {"type": "ping", "id": 4},
}


@pytest.mark.parametrize("obj", list(UNKNOWN.values()), ids=list(UNKNOWN))
def test_unknown_command_is_unknown_command_with_the_request_id(obj):
    error = rejects(obj, p.UnknownCommand)
    assert error.code == "UNKNOWN_COMMAND"
    assert error.request_id == 4
    assert not error.fatal


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\ude00\\ud83d", "a\\udbffb"])
def test_lone_surrogate_in_a_string_is_bad_request(escape):
    rejects(b'{"cmd":"rm","id":1,"path":"' + escape.encode() + b'"}')
    rejects(b'{"cmd":"ping","id":1,"payload":"' + escape.encode() + b'"}')


def test_lone_surrogate_in_a_message_constructor_is_refused():
    with pytest.raises(p.BadRequest):
        p.Rm(id=1, path="\ud800")


@pytest.mark.parametrize("data", [
    b'{"cmd":"rm","id":1,"path":"\xed\xa0\x80"}',      # a surrogate encoded in UTF-8
    b'{"cmd":"rm","id":1,"path":"\xff"}',
    b'{"cmd":"rm","id":1,"path":"\xc3"}',              # truncated sequence
    b'{"cmd":"rm","id":1,"path":"\xc0\xaf"}',          # overlong "/"
    b"\xef\xbb\xbf{}",                                 # a byte order mark
    "{\"cmd\":\"quit\",\"id\":1}".encode("utf-16"),
], ids=["surrogate", "ff", "truncated", "overlong", "bom", "utf-16"])
def test_invalid_utf8_is_bad_message(data):
    error = rejects(data, p.BadMessage)
    assert error.fatal


@given(st.binary())
def test_bytes_that_are_not_utf8_are_bad_message(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        rejects(data, p.BadMessage)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["offset", "unknown"])
def test_nan_and_infinity_are_bad_message_even_in_unknown_fields(constant, field):
    rejects(f'{{"cmd":"get","id":1,"path":"a","{field}":{constant}}}'.encode(), p.BadMessage)


def test_number_overflowing_to_infinity_is_refused():
    entry = b'{"name":"a","type":"file","size":1,"mtime":1e400}'
    rejects_reply(b'{"type":"stat","id":1,"path":"/a","entry":' + entry + b"}")
    rejects_reply(b'{"type":"error","id":1,"code":"X","details":{"n":-1e999}}')
    with pytest.raises(p.BadRequest):
        p.Entry(name="a", type="file", size=1, mtime=float("inf"))


def test_error_details_must_be_encodable_json():
    rejects_reply(b'{"type":"error","id":1,"code":"X","details":{"s":"\\ud800"}}')
    with pytest.raises(p.BadRequest):
        p.ErrorReply(code="X", details={"s": {1, 2}})
    with pytest.raises(p.BadRequest):
        p.ErrorReply(code="X", details={"n": float("nan")})


def test_integer_literal_too_long_to_parse_is_bad_message():
    rejects(b'{"cmd":"ping","id":' + b"9" * 5000 + b"}", p.BadMessage)


@pytest.mark.parametrize("text", ["[]", "[1,2]", '"cmd"', "1", "true", "null", "", " "])
def test_json_that_is_not_an_object_is_bad_message(text):
    rejects(text.encode(), p.BadMessage)
    with pytest.raises(p.BadMessage):
        p.decode_reply(text.encode())


@pytest.mark.parametrize("data", [
    b'{"cmd":"rm","id":1,"path":"a"} {}',
    b'{"cmd":"rm","id":1,"path":"a"}x',
    b'{"cmd":"rm","id":1,"path":"a",}',
    b"{'cmd':'rm'}",
    b'{"cmd":"rm","id":1,"path":"a"}\x00',
], ids=["two objects", "trailing junk", "trailing comma", "single quotes", "trailing nul"])
def test_anything_but_exactly_one_json_object_is_bad_message(data):
    rejects(data, p.BadMessage)


@pytest.mark.parametrize("data", [
    b"[" * 100_000,
    b'{"a":' * 100_000,
    b'{"cmd":"ping","id":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
], ids=["arrays", "objects", "inside a valid request"])
def test_deeply_nested_json_is_bad_message_not_recursion_error(data):
    rejects(data, p.BadMessage)
    with pytest.raises(p.BadMessage):
        p.decode_reply(data)


@pytest.mark.parametrize("data", [
    b'{"cmd":"rm","id":1,"path":"a","cmd":"ls"}',
    b'{"cmd":"rm","id":1,"path":"a","path":"b"}',
    b'{"cmd":"rm","id":1,"id":2,"path":"a"}',
    b'{"cmd":"ping","id":1,"x":{"k":1,"k":2}}',
], ids=["cmd", "path", "id", "nested"])
def test_duplicate_keys_are_bad_message(data):
    rejects(data, p.BadMessage)


def test_reply_with_duplicate_type_is_bad_message():
    rejects_reply(b'{"type":"ping","id":1,"type":"quit"}')


LOGIN_CROSS_FIELD = {
    "password and token": {"cmd": "login", "id": 1, "user": "u", "password": "p", "token": "t"},
    "neither": {"cmd": "login", "id": 1, "user": "u"},
    "nothing": {"cmd": "login", "id": 1},
    "password without user": {"cmd": "login", "id": 1, "password": "p"},
}


@pytest.mark.parametrize("obj", list(LOGIN_CROSS_FIELD.values()), ids=list(LOGIN_CROSS_FIELD))
def test_login_needs_a_user_with_a_password_or_a_token_alone(obj):
    assert rejects(obj).request_id == 1


DIGEST = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"


def test_an_inline_put_round_trips():
    put = p.Put(id=5, path="a.txt", size=6, sha256=DIGEST, inline=True)
    assert json.loads(payload(put))["inline"] is True
    assert p.decode_request(payload(put)) == put


def test_an_inline_put_cannot_defer_its_sha256():
    obj = {"cmd": "put", "id": 1, "path": "a", "size": 1, "inline": True, "defer_sha256": True}
    assert rejects(obj).request_id == 1


def test_a_greeting_without_inline_max_means_no_inline_puts():
    greeting = p.decode_reply(json.dumps({"type": "greeting", "protocol": 1, "server": "x",
                                          "max_control": 65536, "max_data": 4096}).encode())
    assert greeting.inline_max == 0


def test_put_with_a_deferred_sha256_and_its_commit_round_trip():
    put = p.Put(id=5, path="docs/a.txt", size=6, defer_sha256=True)
    assert json.loads(payload(put)) == {"cmd": "put", "id": 5, "path": "docs/a.txt",
                                        "size": 6, "overwrite": False, "defer_sha256": True,
                                        "inline": False}
    assert p.decode_request(payload(put)) == put
    commit = p.Commit(id=6, sha256=DIGEST)
    assert json.loads(payload(commit)) == {"cmd": "commit", "id": 6, "sha256": DIGEST}
    assert p.decode_request(payload(commit)) == commit


def test_defer_sha256_defaults_to_false_and_an_older_put_decodes_unchanged():
    put = p.decode_request(raw({"cmd": "put", "id": 1, "path": "a", "size": 3, "sha256": DIGEST}))
    assert put.defer_sha256 is False and put.sha256 == DIGEST


PUT_CROSS_FIELD = {
    "sha256 and defer": {"cmd": "put", "id": 1, "path": "a", "size": 3, "sha256": DIGEST,
                         "defer_sha256": True},
}


@pytest.mark.parametrize("obj", list(PUT_CROSS_FIELD.values()), ids=list(PUT_CROSS_FIELD))
def test_put_may_not_both_declare_and_defer_its_sha256(obj):
    error = rejects(obj)
    assert error.code == "BAD_REQUEST" and error.request_id == 1 and not error.fatal
    with pytest.raises(p.BadRequest):
        p.Put(id=1, path="a", size=3, sha256=DIGEST, defer_sha256=True)


@pytest.mark.parametrize("fields", [{"sha256": DIGEST}, {"defer_sha256": True}, {},
                                    {"sha256": DIGEST, "defer_sha256": False},
                                    {"sha256": None, "defer_sha256": True}])
def test_put_declares_its_sha256_or_defers_it_or_neither(fields):
    obj = {"cmd": "put", "id": 1, "path": "a", "size": 3, **fields}
    put = p.decode_request(raw(obj))
    assert put.defer_sha256 is fields.get("defer_sha256", False)
    assert put.sha256 == fields.get("sha256")


@given(requests)
def test_generated_puts_obey_the_cross_field_rule(request):
    if isinstance(request, p.Put):
        assert not (request.defer_sha256 and request.sha256 is not None)


def test_login_with_a_token_may_name_a_user():
    assert p.decode_request(raw({"cmd": "login", "id": 1, "user": "u", "token": "t"})) == \
        p.Login(id=1, user="u", token="t")


NESTED = {
    "entry not an object": {"type": "stat", "id": 1, "path": "/a", "entry": "x"},
    "entry missing": {"type": "stat", "id": 1, "path": "/a"},
    "entries not a list": {"type": "ls", "id": 1, "path": "/", "entries": {}},
    "entry in list not an object": {"type": "ls", "id": 1, "path": "/", "entries": [1]},
    "upload info missing offset": {"type": "uploads", "id": 1, "uploads": [
        {"path": "a", "size": 1, "updated": 0}]},
    "details not an object": {"type": "error", "id": 1, "code": "X", "details": [1]},
}


@pytest.mark.parametrize("obj", list(NESTED.values()), ids=list(NESTED))
def test_malformed_nested_record_in_a_reply_is_bad_message(obj):
    assert rejects_reply(obj).request_id == 1


def test_greeting_has_no_id_and_an_error_may_lack_one():
    assert "id" not in p.Greeting(protocol=1, server="s", max_control=1, max_data=1).to_wire()
    assert p.decode_reply(b'{"type":"error","code":"TIMEOUT"}').id is None


@pytest.mark.parametrize("cmd", sorted(REQUIRED))
def test_constructing_a_message_with_an_invalid_field_raises_bad_request(cmd):
    # A message object that exists is a valid one: the constructor validates.
    valid = {"id": 1, "protocol": 1, "user": "u", "password": "p", "path": "a",
             "src": "a", "dst": "b", "size": 1, "sha256": "0" * 64}
    cls = p.REQUESTS[cmd]
    fields = {f.name: valid[f.name] for f in dataclasses.fields(cls) if f.name in valid}
    cls(**fields)
    for bad_id in (-1, MAX_INT + 1, True, "1", None):
        with pytest.raises(p.BadRequest):
            cls(**{**fields, "id": bad_id})


# ------------------------------------------------------------------ totality


def decode_is_total(data: bytes) -> None:
    for decode_fn in (p.decode_request, p.decode_reply):
        try:
            message = decode_fn(data)
        except p.ProtocolError as exc:
            assert exc.code in p.ERROR_CODES
        else:
            # Whatever is accepted is valid: it encodes and decodes to itself.
            assert decode_fn(payload(message)) == message


@given(st.binary(max_size=200))
def test_decode_of_arbitrary_bytes_returns_a_message_or_raises_protocol_error(data):
    decode_is_total(data)


@given(json_values)
def test_decode_of_arbitrary_json_returns_a_message_or_raises_protocol_error(value):
    decode_is_total(raw(value))


ALL_FIELDS = sorted({"id", "cmd", "type", "protocol", "client", "max_data", "user", "password",
                     "token", "want_token", "path", "parents", "src", "dst", "overwrite", "size",
                     "sha256", "offset", "verify", "payload", "server", "max_control", "register",
                     "code", "message", "details", "cwd", "entries", "more", "entry",
                     "restarted", "uploads", "used", "reserved", "limit", "free", "name",
                     "mtime", "updated", "defer_sha256"})
field_values = st.one_of(json_scalars, st.integers(-2, 2**53 + 1), sha256s,
                         st.lists(st.dictionaries(st.sampled_from(ALL_FIELDS), json_scalars,
                                                  max_size=5), max_size=2),
                         st.dictionaries(st.sampled_from(ALL_FIELDS), json_scalars, max_size=5))


@given(st.sampled_from(sorted(set(p.REQUESTS) | set(p.REPLIES)) + ["", "x"]),
       st.dictionaries(st.sampled_from(ALL_FIELDS), field_values, max_size=6))
def test_decode_of_message_shaped_objects_returns_a_message_or_raises_protocol_error(name, obj):
    decode_is_total(raw({**obj, "cmd": name}))
    decode_is_total(raw({**obj, "type": name}))
