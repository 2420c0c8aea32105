"""Issue 14: the daemon does what docs/PROTOCOL.md says, driven with raw frames.

One test (or a small group) per numbered point of the issue, plus the places
where the document used to be silent.  Every test talks to a live daemon
through ``tests.wire.Wire`` and checks the exact frames that come back.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

import protocol.messages as m
from protocol import encode, encode_control, encode_data
from tests.test_hostile_support import wait_until
from tests.wire import Wire

USER, PASSWORD = "conf", "pw-conf"


@pytest.fixture
def daemon(server_factory: Any) -> Any:
    # Clear text (tls=False): the framing is what is under test, and several cases
    # half-close inside a frame, which a Python TLS socket cannot do without leaving
    # TLS (TLS-level attacks: tests/test_hostile_tls.py).
    d = server_factory(allow_register=True, tls=False)
    d.add_user(USER, PASSWORD)
    return d


def home(daemon: Any) -> Path:
    return daemon.root / "homes" / USER


def session(daemon: Any) -> Wire:
    return Wire(daemon.host, daemon.port).logged_in(USER, PASSWORD)


def rest(wire: Wire) -> list[Any]:
    """Every frame the daemon still sends, until it closes (fails if it does not)."""
    frames: list[Any] = []
    wire.sock.settimeout(10)
    try:
        while True:
            frames.append(wire.recv())
    except (OSError, Exception) as exc:          # Closed, or a reset after the close
        assert not isinstance(exc, TimeoutError), f"the daemon did not close: {frames}"
    return frames


def raw(wire: Wire, obj: dict[str, Any]) -> Any:
    wire.send_raw(encode_control(json.dumps(obj).encode()))
    return wire.recv_reply()


# ---------------------------------------------------------------- 1. symbolic links


@pytest.fixture
def links(daemon: Any, tmp_path: Path) -> dict[str, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"SECRET")
    os.symlink(outside / "secret.txt", home(daemon) / "ln_file")
    os.symlink(outside, home(daemon) / "ln_dir")
    return {"outside": outside, "file": home(daemon) / "ln_file", "dir": home(daemon) / "ln_dir"}


def test_stat_of_a_symlink_is_its_own_entry_of_type_other(daemon, links):
    with session(daemon) as w:
        for name in ("ln_file", "ln_dir"):
            reply = w.call(m.Stat(id=w.next_id(), path=name))
            assert isinstance(reply, m.StatOk), reply
            assert (reply.path, reply.entry.type, reply.entry.size) == (f"/{name}", "other", 0)


def test_rm_of_a_symlink_removes_the_link_and_never_its_target(daemon, links):
    with session(daemon) as w:
        for name in ("ln_file", "ln_dir"):
            reply = w.call(m.Rm(id=w.next_id(), path=name))
            assert isinstance(reply, m.RmOk) and reply.path == f"/{name}", reply
    assert not os.path.lexists(links["file"]) and not os.path.lexists(links["dir"])
    assert (links["outside"] / "secret.txt").read_bytes() == b"SECRET"


def test_a_symlink_never_reads_or_writes_outside_the_home(daemon, links):
    """get, hash, put (even overwrite) of a link, and anything through one: BAD_PATH."""
    with session(daemon) as w:
        for request in (m.Get(id=w.next_id(), path="ln_file"),
                        m.Hash(id=w.next_id(), path="ln_file"),
                        m.Put(id=w.next_id(), path="ln_file", size=1, overwrite=True),
                        m.Stat(id=w.next_id(), path="ln_dir/secret.txt"),
                        m.Rm(id=w.next_id(), path="ln_dir/secret.txt"),
                        m.Put(id=w.next_id(), path="ln_dir/new", size=1)):
            reply = w.call(request)
            assert (reply.type, reply.code) == ("error", "BAD_PATH"), (request, reply)
    assert sorted(os.listdir(links["outside"])) == ["secret.txt"]
    assert (links["outside"] / "secret.txt").read_bytes() == b"SECRET"


def test_a_fifo_is_other_in_stat_refused_by_get_and_hash_and_removed_by_rm(daemon):
    os.mkfifo(home(daemon) / "pipe")
    with session(daemon) as w:
        assert w.call(m.Stat(id=w.next_id(), path="pipe")).entry.type == "other"
        assert w.call(m.Get(id=w.next_id(), path="pipe")).code == "BAD_PATH"
        assert w.call(m.Hash(id=w.next_id(), path="pipe")).code == "BAD_PATH"
        assert isinstance(w.call(m.Rm(id=w.next_id(), path="pipe")), m.RmOk)
    assert not os.path.lexists(home(daemon) / "pipe")


# ---------------------------------------------------------------- 2. inline put before login


def test_an_inline_put_before_login_gets_one_fatal_bad_state_and_its_data_is_never_read(daemon):
    with Wire(daemon.host, daemon.port) as w:
        w.send_raw(encode(m.Put(id=5, path="a", size=3, inline=True)) + encode_data(b"abc"))
        frames = rest(w)
    assert [(f.type, f.id, f.code) for f in frames] == [("error", 5, "BAD_STATE")]
    assert not (home(daemon) / "a").exists()


# ---------------------------------------------------------------- 3. inline put during an upload


def test_an_inline_put_during_a_resumable_upload_is_fatal_and_adds_nothing_to_it(daemon):
    data = b"0123456789"
    with session(daemon) as w:
        assert w.put("big.bin", data, stop_at=3).offset == 0
        w.send_raw(encode(m.Put(id=50, path="small", size=4, inline=True)) +
                   encode_data(b"XXXX"))
        frames = rest(w)
    assert [(f.type, f.id, f.code) for f in frames] == [("error", 50, "BAD_STATE")]
    with session(daemon) as w:
        [info] = w.call(m.Uploads(id=w.next_id())).uploads
        assert (info.path, info.offset) == ("/big.bin", 3)   # not 7: no inline byte went in
        assert isinstance(w.put("big.bin", data), m.PutDone)
    assert (home(daemon) / "big.bin").read_bytes() == data
    assert not (home(daemon) / "small").exists()


# ---------------------------------------------------------------- 4. per-command error lists


def test_a_file_used_as_a_folder_is_not_a_directory_for_stat_get_hash_and_rm(daemon):
    (home(daemon) / "file").write_bytes(b"x")
    with session(daemon) as w:
        for request in (m.Stat(id=w.next_id(), path="/file/x"),
                        m.Get(id=w.next_id(), path="/file/x"),
                        m.Hash(id=w.next_id(), path="/file/x"),
                        m.Rm(id=w.next_id(), path="/file/x")):
            assert w.call(request).code == "NOT_A_DIRECTORY", request


def test_mv_follows_the_precedence_table(daemon):
    h = home(daemon)
    for name in ("f1", "f2"):
        (h / name).write_bytes(name.encode())
    for name in ("d1", "d2", "empty", "full"):
        (h / name).mkdir()
    (h / "full" / "x").write_bytes(b"x")
    expected = [
        ("f1", "d2", False, "EXISTS"), ("f1", "d2", True, "IS_A_DIRECTORY"),
        ("d1", "f2", False, "EXISTS"), ("d1", "f2", True, "NOT_A_DIRECTORY"),
        ("d1", "full", False, "EXISTS"), ("d1", "full", True, "NOT_EMPTY"),
        ("d1", "empty", False, "EXISTS"), ("f1", "f2", False, "EXISTS"),
        ("/", "x", True, "BAD_PATH"), ("f1", "/", True, "BAD_PATH"),
        ("d1", "d1/in", False, "BAD_PATH"), ("nothing", "f2", True, "NOT_FOUND"),
    ]
    with session(daemon) as w:
        for src, dst, overwrite, code in expected:
            reply = w.call(m.Mv(id=w.next_id(), src=src, dst=dst, overwrite=overwrite))
            assert getattr(reply, "code", None) == code, (src, dst, overwrite, reply)
        assert isinstance(w.call(m.Mv(id=w.next_id(), src="d1", dst="empty", overwrite=True)),
                          m.MvOk)
        assert isinstance(w.call(m.Mv(id=w.next_id(), src="f1", dst="f2", overwrite=True)),
                          m.MvOk)
    assert (h / "f2").read_bytes() == b"f1" and (h / "empty").is_dir() and not (h / "d1").exists()


def test_rm_slash_mkdir_slash_and_mkdir_parents_onto_a_file(daemon):
    (home(daemon) / "file").write_bytes(b"x")
    with session(daemon) as w:
        assert w.call(m.Rm(id=w.next_id(), path="/")).code == "IS_A_DIRECTORY"
        assert w.call(m.Rmdir(id=w.next_id(), path="/")).code == "BAD_PATH"
        assert w.call(m.Mkdir(id=w.next_id(), path="/")).code == "EXISTS"
        assert isinstance(w.call(m.Mkdir(id=w.next_id(), path="/", parents=True)), m.MkdirOk)
        assert w.call(m.Mkdir(id=w.next_id(), path="file", parents=True)).code == "EXISTS"
        assert w.call(m.Mkdir(id=w.next_id(), path="file/x", parents=True)).code == \
            "NOT_A_DIRECTORY"


# ---------------------------------------------------------------- 5. BAD_PASSWORD


@pytest.mark.parametrize("password", ["", "p" * 1025])
def test_a_password_outside_the_rule_is_bad_request_for_register_and_login(daemon, password):
    with Wire(daemon.host, daemon.port) as w:
        for cmd in ("register", "login"):
            reply = raw(w, {"cmd": cmd, "id": 9, "user": "newbie", "password": password})
            assert (reply.type, reply.id, reply.code) == ("error", 9, "BAD_REQUEST"), reply


def test_register_refusals_carry_the_documented_details(daemon):
    with Wire(daemon.host, daemon.port) as w:
        bad = w.call(m.Register(id=1, user="Not-Valid", password="pw"))
        assert (bad.code, bad.details) == ("BAD_USERNAME", {"name": "Not-Valid"})
        taken = w.call(m.Register(id=2, user=USER, password="pw"))
        assert (taken.code, taken.details) == ("USER_EXISTS", {"user": USER})


# ---------------------------------------------------------------- 6. the fatal error is last


def test_the_fatal_error_is_the_last_frame_even_while_a_commit_runs(daemon):
    """put size 10, then DATA(10) + DATA(1) in one send: the 11th byte arrives while the
    file is being committed; BAD_STATE without id is the last frame (no put.done)."""
    data = b"0123456789"
    with session(daemon) as w:
        ready = w.call(m.Put(id=7, path="ten", size=10,
                             sha256=hashlib.sha256(data).hexdigest()))
        assert isinstance(ready, m.PutReady)
        w.send_raw(encode_data(data) + encode_data(b"!"))
        frames = rest(w)
    assert frames, "no error frame"
    assert (frames[-1].type, frames[-1].id, frames[-1].code) == ("error", None, "BAD_STATE")
    assert all(not isinstance(f, m.ErrorReply) for f in frames[:-1]), frames


def test_data_sent_before_put_ready_ends_with_the_fatal_error_alone(daemon):
    """put and its DATA in one send (the client did not wait for put.ready, 7.1 step 3):
    the DATA is unexpected, and the fatal BAD_STATE is the only and last frame -- the
    upload being begun meanwhile is never answered."""
    with session(daemon) as w:
        w.send_raw(encode(m.Put(id=7, path="ten", size=10)) + encode_data(b"0123456789") +
                   encode_data(b"!"))
        frames = rest(w)
    assert [(f.type, f.id, f.code) for f in frames] == [("error", None, "BAD_STATE")]
    # Its slot and partial are let go: once the begin that was under way when the
    # connection ended comes back from its worker (UPLOAD_BUSY until then), never later.
    replies: list[Any] = []

    def stored() -> bool:
        with session(daemon) as w:
            replies.append(w.put("ten", b"0123456789"))
        return isinstance(replies[-1], m.PutDone)
    assert wait_until(stored, 10.0), replies
    assert all(r.code == "UPLOAD_BUSY" for r in replies[:-1]), replies


# ---------------------------------------------------------------- 7. EOF inside a frame


@pytest.mark.parametrize("cut", [
    b"\x00\x00",                                          # two bytes into a header
    (20).to_bytes(4, "big") + b"\x01" + b'{"cmd"',        # inside a control payload
    (9).to_bytes(4, "big") + b"\x02" + b"abc",            # inside a DATA payload
], ids=["header", "control", "data"])
def test_a_half_close_inside_a_frame_gets_a_final_bad_frame(daemon, cut):
    with Wire(daemon.host, daemon.port) as w:
        w.send_raw(cut)
        w.sock.shutdown(socket.SHUT_WR)
        frames = rest(w)
    expected = "BAD_STATE" if cut[4:5] == b"\x02" else "BAD_FRAME"   # DATA bytes: stray first
    assert [(f.type, f.id, f.code) for f in frames] == [("error", None, expected)]


def test_a_half_close_inside_an_uploads_data_frame_gets_bad_frame_and_keeps_the_bytes(daemon):
    data = b"0123456789"
    with session(daemon) as w:
        assert isinstance(w.put("part.bin", data, stop_at=2), m.PutReady)
        w.send_raw((8).to_bytes(4, "big") + b"\x02" + b"234")
        w.sock.shutdown(socket.SHUT_WR)
        frames = rest(w)
    assert [(f.type, f.id, f.code) for f in frames] == [("error", None, "BAD_FRAME")]
    with session(daemon) as w:
        [info] = w.call(m.Uploads(id=w.next_id())).uploads
        assert info.offset == 5                # the cut frame's bytes that arrived are kept


# ---------------------------------------------------------------- silent places


def test_a_token_login_naming_another_user_is_auth_failed(daemon):
    daemon.add_user("other", "pw-other")
    with Wire(daemon.host, daemon.port) as w:
        token = w.login(USER, PASSWORD, want_token=True).token
        assert token
        assert isinstance(w.call(m.Logout(id=w.next_id())), m.LogoutOk)
        reply = w.call(m.Login(id=w.next_id(), user="other", token=token))
        assert reply.code == "AUTH_FAILED"
        assert isinstance(w.call(m.Login(id=w.next_id(), user=USER, token=token)), m.LoginOk)


@pytest.mark.parametrize("body", [
    '{"cmd":"ping","id":3,"extra":1e400}',
    '{"cmd":"ping","id":3,"extra":"\\ud800"}',
])
def test_overflowing_numbers_and_lone_surrogates_in_unknown_fields_are_ignored(daemon, body):
    with Wire(daemon.host, daemon.port) as w:
        w.send_raw(encode_control(body.encode()))
        assert w.recv_reply() == m.Pong(id=3)


@pytest.mark.parametrize(("body", "reply_id", "code"), [
    ('{"cmd":"ping","id":3,"payload":"\\ud800"}', 3, "BAD_REQUEST"),
    ('{"cmd":"get","id":3,"path":"a","offset":1e400}', 3, "BAD_REQUEST"),
    ('{"cmd":"ping","id":1e400}', None, "BAD_REQUEST"),
    ('{"cmd":"\\ud800","id":3}', 3, "UNKNOWN_COMMAND"),
])
def test_overflowing_numbers_and_lone_surrogates_in_known_fields_are_refused(daemon, body,
                                                                           reply_id, code):
    with Wire(daemon.host, daemon.port) as w:
        w.send_raw(encode_control(body.encode()))
        reply = w.recv_reply()
        assert (reply.type, reply.id, reply.code) == ("error", reply_id, code), reply
        assert w.call(m.Ping(id=4)) == m.Pong(id=4)       # the connection goes on


def test_a_malformed_request_is_bad_request_even_where_its_command_is_not_allowed(daemon):
    """Fields are checked before the state (PROTOCOL.md 3.4, the order of the checks)."""
    with Wire(daemon.host, daemon.port) as w:
        assert raw(w, {"cmd": "ls", "id": 3, "path": 7}).code == "BAD_REQUEST"
        assert raw(w, {"cmd": "ls", "id": 4}).code == "AUTH_REQUIRED"


def test_a_malformed_inline_put_during_an_upload_is_refused_and_closes_adding_nothing(daemon):
    """A put the message layer refuses (size -1) that says inline: its BAD_REQUEST, then the
    connection closes; the DATA behind it never reaches the running upload."""
    data = b"0123456789"
    with session(daemon) as w:
        assert w.put("big.bin", data, stop_at=3).offset == 0
        w.send_raw(encode_control(json.dumps({"cmd": "put", "id": 60, "path": "s", "size": -1,
                                              "inline": True}).encode()) + encode_data(b"XX"))
        frames = rest(w)
    assert [(f.type, f.id, f.code) for f in frames] == [("error", 60, "BAD_REQUEST")]
    with session(daemon) as w:
        [info] = w.call(m.Uploads(id=w.next_id())).uploads
        assert info.offset == 3
