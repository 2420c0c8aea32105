"""Every command of docs/PROTOCOL.md against a real daemon, and each error code it can give."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

import protocol.messages as m
from protocol import encode, encode_control, encode_data
from tests.wire import Closed, Wire

USER, PASSWORD = "alice", "correct horse"


@pytest.fixture
def daemon(server):
    server.add_user(USER, PASSWORD, quota=50 << 20)
    return server


@pytest.fixture
def conn(daemon):
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        yield wire


def blob(n: int, seed: int = 0) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"x" * (n % 32)


# ---------------------------------------------------------------- opening and session


def test_greeting_announces_protocol_version_and_limits(daemon):
    with Wire(daemon.host, daemon.port, hello=False) as wire:
        g = wire.greeting
        assert isinstance(g, m.Greeting)
        assert g.protocol == 1 and g.max_control == 64 * 1024 and g.max_data == 1 << 20
        assert g.register is False


def test_hello_with_unknown_version_is_refused_and_closed(daemon):
    with Wire(daemon.host, daemon.port, hello=False) as wire:
        reply = wire.call(m.Hello(id=1, protocol=99))
        assert reply.code == "VERSION_MISMATCH" and reply.id == 1
        assert reply.details == {"supported": [1]}
        assert wire.closed_by_peer()


def test_a_login_pipelined_behind_a_refused_hello_is_never_processed(daemon):
    with Wire(daemon.host, daemon.port, hello=False) as wire:
        wire.send_raw(encode(m.Hello(id=1, protocol=99))
                      + encode(m.Login(id=2, user=USER, password=PASSWORD)))
        reply = wire.recv_reply()
        assert reply.code == "VERSION_MISMATCH" and reply.id == 1
        rest = []
        with pytest.raises((Closed, ConnectionResetError)):
            while True:
                rest.append(wire.recv())
        assert rest == []


def test_a_login_pipelined_behind_hello_is_answered_after_it(daemon):
    with Wire(daemon.host, daemon.port, hello=False) as wire:
        wire.send_raw(encode(m.Hello(id=1, protocol=1))
                      + encode(m.Login(id=2, user=USER, password=PASSWORD)))
        first, second = wire.recv_reply(), wire.recv_reply()
        assert isinstance(first, m.HelloOk) and first.id == 1
        assert isinstance(second, m.LoginOk) and second.id == 2


def test_hello_negotiates_the_smaller_data_frame(daemon):
    with Wire(daemon.host, daemon.port, hello=False) as wire:
        reply = wire.call(m.Hello(id=1, protocol=1, max_data=64 * 1024))
        assert isinstance(reply, m.HelloOk) and reply.max_data == 64 * 1024


def test_login_before_hello_is_bad_state(daemon):
    with Wire(daemon.host, daemon.port, hello=False) as wire:
        reply = wire.login(USER, PASSWORD)
        assert reply.code == "BAD_STATE"


def test_file_command_before_login_is_auth_required(daemon):
    with Wire(daemon.host, daemon.port) as wire:
        assert wire.call(m.Ls(id=5)).code == "AUTH_REQUIRED"
        assert wire.call(m.Put(id=6, path="x", size=1)).code == "AUTH_REQUIRED"


def test_login_with_the_right_password_succeeds(daemon):
    with Wire(daemon.host, daemon.port) as wire:
        reply = wire.login(USER, PASSWORD)
        assert isinstance(reply, m.LoginOk) and reply.user == USER and reply.cwd == "/"
        assert reply.token is None


def test_wrong_password_and_unknown_user_get_the_same_reply(daemon):
    with Wire(daemon.host, daemon.port) as wire:
        wrong = wire.login(USER, "nope")
        unknown = wire.login("mallory", "nope")
    assert wrong.code == unknown.code == "AUTH_FAILED"
    assert wrong.message == unknown.message


def test_login_token_logs_in_without_the_password(daemon):
    with Wire(daemon.host, daemon.port) as wire:
        token = wire.login(USER, PASSWORD, want_token=True).token
    assert token
    with Wire(daemon.host, daemon.port) as wire:
        reply = wire.call(m.Login(id=9, token=token))
        assert isinstance(reply, m.LoginOk) and reply.user == USER


def test_invalid_token_is_auth_failed(daemon):
    with Wire(daemon.host, daemon.port) as wire:
        assert wire.call(m.Login(id=9, token="not-a-token")).code == "AUTH_FAILED"


def test_disabled_account_is_refused(daemon):
    store = daemon.store()
    try:
        store.set_disabled(USER, True)
    finally:
        store.close()
    with Wire(daemon.host, daemon.port) as wire:
        assert wire.login(USER, PASSWORD).code == "ACCOUNT_DISABLED"


def test_register_is_refused_unless_enabled(daemon):
    with Wire(daemon.host, daemon.port) as wire:
        assert wire.call(m.Register(id=1, user="bob", password="pw")).code == \
            "REGISTRATION_DISABLED"


def test_register_creates_an_account_when_enabled(server_factory):
    daemon = server_factory(allow_register=True)
    with Wire(daemon.host, daemon.port) as wire:
        assert wire.greeting.register is True
        assert isinstance(wire.call(m.Register(id=1, user="bob", password="pw")), m.RegisterOk)
        assert wire.call(m.Register(id=2, user="bob", password="pw")).code == "USER_EXISTS"
        assert wire.call(m.Register(id=3, user="Bad Name", password="pw")).code == "BAD_USERNAME"
        assert isinstance(wire.login("bob", "pw"), m.LoginOk)


def test_whoami_before_and_after_login(daemon):
    with Wire(daemon.host, daemon.port) as wire:
        assert wire.call(m.Whoami(id=1)).user is None
        wire.logged_in(USER, PASSWORD)
        assert wire.call(m.Whoami(id=2)).user == USER


def test_logout_returns_to_anonymous(conn):
    assert isinstance(conn.call(m.Logout(id=1)), m.LogoutOk)
    assert conn.call(m.Pwd(id=2)).code == "AUTH_REQUIRED"


def test_login_twice_is_bad_state(conn):
    assert conn.login(USER, PASSWORD).code == "BAD_STATE"


def test_ping_echoes_its_payload(conn):
    reply = conn.call(m.Ping(id=4, payload="hi"))
    assert isinstance(reply, m.Pong) and reply.payload == "hi" and reply.id == 4


def test_quit_replies_then_closes(conn):
    assert isinstance(conn.call(m.Quit(id=3)), m.QuitOk)
    assert conn.closed_by_peer()


def test_pipelined_requests_are_answered_in_order(conn):
    conn.send_raw(b"".join(
        encode_control(f'{{"cmd":"ping","id":{i},"payload":"{i}"}}'.encode()) for i in range(50)))
    assert [conn.recv_reply().id for _ in range(50)] == list(range(50))


def test_requests_pipelined_behind_slow_ones_keep_their_order(conn):
    conn.put("f.bin", blob(300_000), sha=False)          # no cached hash: get hashes on a worker
    conn.send_raw(b"".join(encode(msg) for msg in (
        m.Ls(id=1), m.Ping(id=2), m.Get(id=3, path="f.bin"), m.Ping(id=4))))
    order = []
    while len(order) < 5:
        event = conn.recv()
        if not isinstance(event, bytes):
            order.append((type(event).__name__, event.id))
    assert order == [("LsOk", 1), ("Pong", 2), ("GetReady", 3), ("GetDone", 3), ("Pong", 4)]


def test_a_request_pipelined_behind_an_empty_put_waits_for_its_commit(conn):
    conn.send_raw(encode(m.Put(id=1, path="zero", size=0)) + encode(m.Ping(id=2)))
    order = [type(conn.recv_reply()).__name__ for _ in range(3)]
    assert order == ["PutReady", "PutDone", "Pong"]


# ---------------------------------------------------------------- request errors


def test_unknown_command_is_rejected_and_the_connection_goes_on(conn):
    conn.send_raw(encode_control(b'{"cmd":"format_disk","id":7}'))
    reply = conn.recv_reply()
    assert reply.code == "UNKNOWN_COMMAND" and reply.id == 7
    assert isinstance(conn.call(m.Ping(id=8)), m.Pong)


def test_wrong_field_type_is_bad_request_and_the_connection_goes_on(conn):
    conn.send_raw(encode_control(b'{"cmd":"mkdir","id":7,"path":42}'))
    reply = conn.recv_reply()
    assert reply.code == "BAD_REQUEST" and reply.id == 7
    assert isinstance(conn.call(m.Ping(id=8)), m.Pong)


def test_non_json_control_frame_is_bad_message_and_closes(conn):
    conn.send_raw(encode_control(b"\xff\xfenot json"))
    assert conn.recv_reply().code == "BAD_MESSAGE"
    assert conn.closed_by_peer()


def test_oversized_frame_is_refused_after_its_header(conn):
    conn.send_raw((70_000).to_bytes(4, "big") + b"\x01")       # header only, no body
    reply = conn.recv_reply()
    assert reply.code == "FRAME_TOO_LARGE"
    assert conn.closed_by_peer()


def test_data_frame_outside_an_upload_is_bad_state_and_closes(conn):
    conn.send_raw(encode_data(b"stray"))
    assert conn.recv_reply().code == "BAD_STATE"
    assert conn.closed_by_peer()


# ---------------------------------------------------------------- folders and files


def test_pwd_and_cd_move_within_the_home(conn):
    conn.call(m.Mkdir(id=1, path="docs"))
    assert conn.call(m.Cd(id=2, path="docs")).path == "/docs"
    assert conn.call(m.Pwd(id=3)).path == "/docs"
    assert conn.call(m.Cd(id=4, path="..")).path == "/"


def test_cd_to_a_missing_folder_is_not_found(conn):
    assert conn.call(m.Cd(id=1, path="nowhere")).code == "NOT_FOUND"


def test_cd_to_a_file_is_not_a_directory(conn):
    conn.put("f", b"1")
    assert conn.call(m.Cd(id=1, path="f")).code == "NOT_A_DIRECTORY"


def test_cd_above_the_home_is_bad_path(conn):
    assert conn.call(m.Cd(id=1, path="../..")).code == "BAD_PATH"


def test_ls_lists_names_types_and_sizes(conn):
    conn.call(m.Mkdir(id=1, path="sub"))
    conn.put("a.txt", b"hello")
    reply = conn.call(m.Ls(id=2))
    assert isinstance(reply, m.LsOk) and not reply.more
    got = {(e.name, e.type, e.size) for e in reply.entries}
    assert ("a.txt", "file", 5) in got and ("sub", "dir") in {(n, t) for n, t, _ in got}


def test_ls_of_a_large_folder_comes_in_pages(conn, daemon):
    home = daemon.root / "homes" / USER
    (home / "many").mkdir()
    for i in range(2000):
        (home / "many" / f"file-with-a-longish-name-{i:05d}").touch()
    conn.send(m.Ls(id=3, path="many"))
    pages = [conn.recv_reply()]
    while pages[-1].more:
        pages.append(conn.recv_reply())
    assert len(pages) > 1 and all(p.id == 3 for p in pages)
    assert sum(len(p.entries) for p in pages) == 2000


def test_ls_of_a_missing_folder_is_not_found(conn):
    assert conn.call(m.Ls(id=1, path="missing")).code == "NOT_FOUND"


def test_stat_reports_a_file(conn):
    conn.put("s.bin", b"12345")
    reply = conn.call(m.Stat(id=1, path="s.bin"))
    assert reply.entry.type == "file" and reply.entry.size == 5 and reply.path == "/s.bin"


def test_stat_of_a_missing_file_is_not_found(conn):
    assert conn.call(m.Stat(id=1, path="nope")).code == "NOT_FOUND"


def test_mkdir_with_and_without_parents(conn):
    assert conn.call(m.Mkdir(id=1, path="a/b/c")).code == "NOT_FOUND"
    assert conn.call(m.Mkdir(id=2, path="a/b/c", parents=True)).path == "/a/b/c"
    assert conn.call(m.Mkdir(id=3, path="a")).code == "EXISTS"


def test_rmdir_removes_only_empty_folders(conn):
    conn.call(m.Mkdir(id=1, path="d/e", parents=True))
    assert conn.call(m.Rmdir(id=2, path="d")).code == "NOT_EMPTY"
    assert isinstance(conn.call(m.Rmdir(id=3, path="d/e")), m.RmdirOk)


def test_rm_removes_files_not_folders(conn):
    conn.call(m.Mkdir(id=1, path="dir"))
    conn.put("f", b"x")
    assert conn.call(m.Rm(id=2, path="dir")).code == "IS_A_DIRECTORY"
    assert isinstance(conn.call(m.Rm(id=3, path="f")), m.RmOk)
    assert conn.call(m.Rm(id=4, path="f")).code == "NOT_FOUND"


def test_rm_gives_quota_back(conn):
    conn.put("big", blob(100_000))
    used = conn.call(m.Quota(id=1)).used
    conn.call(m.Rm(id=2, path="big"))
    assert conn.call(m.Quota(id=3)).used == used - 100_000


def test_mv_renames_and_refuses_to_overwrite_unless_asked(conn):
    conn.put("one", b"1")
    conn.put("two", b"2")
    assert conn.call(m.Mv(id=1, src="one", dst="two")).code == "EXISTS"
    reply = conn.call(m.Mv(id=2, src="one", dst="two", overwrite=True))
    assert (reply.src, reply.dst) == ("/one", "/two")
    _, data, _ = conn.get("two")
    assert data == b"1"


def test_hash_returns_the_sha256(conn):
    data = blob(3000)
    conn.put("h", data, sha=False)
    reply = conn.call(m.Hash(id=1, path="h"))
    assert reply.sha256 == hashlib.sha256(data).hexdigest() and reply.size == 3000


def test_quota_reports_used_reserved_limit_and_free(conn):
    conn.put("q", blob(1000))
    q = conn.call(m.Quota(id=1))
    assert (q.used, q.reserved, q.limit) == (1000, 0, 50 << 20)
    assert q.free == q.limit - 1000


# ---------------------------------------------------------------- uploads


def test_put_then_get_round_trips_with_sha256(conn):
    data = os.urandom(3 * (1 << 20) + 17)
    done = conn.put("r.bin", data)
    assert isinstance(done, m.PutDone) and done.sha256 == hashlib.sha256(data).hexdigest()
    ready, got, end = conn.get("r.bin")
    assert ready.sha256 == done.sha256 and got == data and isinstance(end, m.GetDone)


def test_put_of_an_empty_file_commits_without_data(conn):
    assert isinstance(conn.put("empty", b""), m.PutDone)
    assert conn.call(m.Stat(id=1, path="empty")).entry.size == 0


def test_put_with_a_wrong_sha256_is_integrity_and_leaves_nothing(conn):
    rid = conn.next_id()
    ready = conn.call(m.Put(id=rid, path="bad", size=4, sha256="0" * 64))
    assert isinstance(ready, m.PutReady)
    conn.send_data(b"abcd")
    assert conn.recv_reply().code == "INTEGRITY"
    assert conn.call(m.Stat(id=9, path="bad")).code == "NOT_FOUND"
    assert conn.call(m.Uploads(id=10)).uploads == ()


def test_put_over_an_existing_file_needs_overwrite(conn):
    conn.put("f", b"old")
    assert conn.put("f", b"new").code == "EXISTS"
    assert isinstance(conn.put("f", b"new", overwrite=True), m.PutDone)


def test_put_into_a_missing_folder_is_not_found(conn):
    assert conn.put("no/such/dir/f", b"x").code == "NOT_FOUND"


def test_put_resumes_from_the_daemons_offset_after_a_disconnect(daemon):
    data = os.urandom(2_500_000)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        wire.put("resume.bin", data, stop_at=1_000_000)
        wire.call(m.Ping(id=99))  # BAD_STATE during upload, but proves the bytes arrived
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        ready = wire.call(m.Put(id=1, path="resume.bin", size=len(data),
                                sha256=hashlib.sha256(data).hexdigest()))
        assert ready.offset == 1_000_000 and not ready.restarted
        wire.send_data(data[ready.offset:])
        assert isinstance(wire.recv_reply(), m.PutDone)
        assert wire.get("resume.bin")[1] == data


def test_put_with_a_different_declaration_restarts_from_zero(daemon):
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        wire.put("v.bin", blob(100_000, 1), stop_at=50_000)
        wire.call(m.Ping(id=99))
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        new = blob(100_000, 2)
        ready = wire.call(m.Put(id=1, path="v.bin", size=len(new),
                                sha256=hashlib.sha256(new).hexdigest()))
        assert ready.offset == 0 and ready.restarted


def test_put_over_quota_fails_before_any_data_with_the_free_space(conn):
    reply = conn.call(m.Put(id=1, path="huge", size=60 << 20))
    assert reply.code == "QUOTA_EXCEEDED" and reply.details["free"] == 50 << 20


def test_uploads_lists_partials_and_abort_discards_them(daemon):
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        wire.put("part.bin", blob(300_000), stop_at=100_000)
        wire.call(m.Ping(id=99))
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        [info] = wire.call(m.Uploads(id=1)).uploads
        assert (info.path, info.size, info.offset) == ("/part.bin", 300_000, 100_000)
        assert isinstance(wire.call(m.Abort(id=2, path="part.bin")), m.AbortOk)
        assert wire.call(m.Uploads(id=3)).uploads == ()
        assert wire.call(m.Quota(id=4)).reserved == 0
        assert wire.call(m.Abort(id=5, path="part.bin")).code == "NOT_FOUND"


def test_cancel_mid_upload_keeps_the_partial_resumable(conn):
    data = blob(400_000)
    ready = conn.put("c.bin", data, stop_at=150_000)
    assert ready.offset == 0
    conn.send(m.Cancel(id=50))
    first, second = conn.recv_reply(), conn.recv_reply()
    assert first.code == "CANCELLED" and first.id == ready.id
    assert isinstance(second, m.CancelOk) and second.id == 50
    assert conn.put("c.bin", data).size == len(data)


def test_a_second_writer_of_the_same_upload_is_busy(daemon, conn):
    conn.put("same", blob(200_000), stop_at=10)
    with Wire(daemon.host, daemon.port) as other:
        other.logged_in(USER, PASSWORD)
        assert other.call(m.Put(id=1, path="same", size=200_000)).code == "UPLOAD_BUSY"


def test_too_many_uploads_of_one_user_are_refused(server_factory):
    daemon = server_factory(max_uploads_per_user=1)
    daemon.add_user(USER, PASSWORD)
    with Wire(daemon.host, daemon.port) as a, Wire(daemon.host, daemon.port) as b:
        a.logged_in(USER, PASSWORD)
        b.logged_in(USER, PASSWORD)
        a.put("one", blob(100_000), stop_at=10)
        assert b.call(m.Put(id=1, path="two", size=10)).code == "TOO_MANY_UPLOADS"


def test_more_data_than_declared_closes_the_connection(conn):
    ready = conn.call(m.Put(id=1, path="over", size=3))
    assert isinstance(ready, m.PutReady)
    conn.send_data(b"abcdef")
    assert conn.recv_reply().code == "BAD_STATE"
    assert conn.closed_by_peer()


def test_other_commands_during_an_upload_are_bad_state_and_the_upload_goes_on(conn):
    data = blob(1000)
    ready = conn.put("during", data, stop_at=500)
    assert conn.call(m.Ls(id=77)).code == "BAD_STATE"
    conn.send_data(data[500:])
    done = conn.recv_reply()
    assert isinstance(done, m.PutDone) and done.id == ready.id


# ---------------------------------------------------------------- downloads


def test_get_from_an_offset_sends_the_rest(conn):
    data = blob(2_000_000)
    conn.put("g", data)
    ready, got, done = conn.get("g", offset=1_234_567)
    assert ready.offset == 1_234_567 and got == data[1_234_567:] and done.size == len(data)


def test_get_past_the_end_is_offset_mismatch(conn):
    conn.put("g", b"abc")
    ready, _, _ = conn.get("g", offset=4)
    assert ready.code == "OFFSET_MISMATCH"


def test_get_of_a_missing_file_is_not_found(conn):
    ready, _, _ = conn.get("missing")
    assert ready.code == "NOT_FOUND"


def test_get_of_a_folder_is_a_directory_error(conn):
    conn.call(m.Mkdir(id=1, path="d"))
    assert conn.get("d")[0].code == "IS_A_DIRECTORY"


def test_get_without_verify_sends_no_hash(conn):
    conn.put("nv", b"abc", sha=False)
    ready, data, _ = conn.get("nv", verify=False)
    assert ready.sha256 is None and data == b"abc"


def test_cancel_mid_download_stops_at_a_frame_boundary(daemon):
    with Wire(daemon.host, daemon.port, max_data=64 * 1024) as wire:
        wire.logged_in(USER, PASSWORD)
        wire.put("big", blob(20 << 20))
        ready = wire.call(m.Get(id=40, path="big"))
        assert isinstance(ready, m.GetReady)
        wire.send(m.Cancel(id=41))
        received = 0
        while True:
            event = wire.recv()
            if isinstance(event, bytes):
                received += len(event)
                continue
            break
        assert event.code == "CANCELLED" and event.id == 40
        assert received % (64 * 1024) == 0 and received < 20 << 20
        assert isinstance(wire.recv_reply(), m.CancelOk)
        assert isinstance(wire.call(m.Ping(id=42)), m.Pong)


def test_ping_during_a_download_is_answered_between_frames(conn):
    conn.put("p", blob(5 << 20))
    conn.send(m.Get(id=60, path="p"))
    conn.send(m.Ping(id=61))
    events = []
    while True:
        event = conn.recv()
        events.append(event)
        if isinstance(event, m.GetDone):
            break
    replies = [e for e in events if not isinstance(e, bytes)]
    assert any(isinstance(r, m.Pong) and r.id == 61 for r in replies)
    assert sum(len(e) for e in events if isinstance(e, bytes)) == 5 << 20


# ---------------------------------------------------------------- limits and timeouts


def test_connections_over_the_per_address_limit_are_refused(server_factory):
    daemon = server_factory(max_connections_per_ip=2)
    with Wire(daemon.host, daemon.port), Wire(daemon.host, daemon.port), \
            Wire(daemon.host, daemon.port, hello=False) as third:
        assert third.greeting.code == "TOO_MANY_CONNECTIONS"
        assert third.closed_by_peer()
    deadline = time.monotonic() + 5           # the daemon frees the slots as it sees the EOFs
    while True:
        with Wire(daemon.host, daemon.port, hello=False) as again:
            if isinstance(again.greeting, m.Greeting) or time.monotonic() > deadline:
                assert isinstance(again.greeting, m.Greeting)
                break
        time.sleep(0.05)


def test_repeated_failures_lock_the_account_even_for_the_right_password(server_factory):
    daemon = server_factory(lockout_threshold=3, lockout_seconds=60)
    daemon.add_user(USER, PASSWORD)
    with Wire(daemon.host, daemon.port) as wire:
        codes = [wire.login(USER, "bad").code for _ in range(3)]
        assert codes == ["AUTH_FAILED"] * 3
        reply = wire.login(USER, PASSWORD)
        assert reply.code == "LOCKED_OUT" and reply.details["retry_after"] > 0


def test_login_timeout_closes_a_silent_connection(server_factory):
    daemon = server_factory(login_timeout=0.5)
    with Wire(daemon.host, daemon.port) as wire:
        reply = wire.recv_reply()
        assert reply.code == "TIMEOUT"
        assert wire.closed_by_peer()


def test_idle_timeout_closes_a_logged_in_connection(server_factory):
    daemon = server_factory(idle_timeout=0.5)
    daemon.add_user(USER, PASSWORD)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        assert wire.recv_reply().code == "TIMEOUT"
        assert wire.closed_by_peer()


def test_graceful_shutdown_exits_zero_and_leaves_partials_resumable(server_factory):
    daemon = server_factory(shutdown_grace=0.5)
    daemon.add_user(USER, PASSWORD)
    data = blob(500_000)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        wire.put("s.bin", data, stop_at=200_000)
        wire.call(m.Ping(id=9))
        assert daemon.stop() == 0
        with pytest.raises((Closed, ConnectionError)):
            while True:
                wire.recv()
    daemon.start(port=daemon.port)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        ready = wire.call(m.Put(id=1, path="s.bin", size=len(data),
                                sha256=hashlib.sha256(data).hexdigest()))
        assert ready.offset == 200_000
        wire.send_data(data[200_000:])
        assert isinstance(wire.recv_reply(), m.PutDone)


def test_the_login_timeout_restarts_after_logout(server_factory):
    daemon = server_factory(login_timeout=1.0)
    daemon.add_user(USER, PASSWORD)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        time.sleep(1.2)                          # longer than the login timeout, logged in
        assert isinstance(wire.call(m.Logout(id=50)), m.LogoutOk)
        assert isinstance(wire.call(m.Ping(id=51)), m.Pong)     # not timed out at once
        assert wire.recv_reply().code == "TIMEOUT"              # but a second later


def test_graceful_shutdown_sends_idle_sessions_away_and_lets_a_download_finish(server_factory):
    daemon = server_factory(shutdown_grace=20)
    daemon.add_user(USER, PASSWORD)
    data = blob(8 << 20)
    with Wire(daemon.host, daemon.port) as idle, \
            Wire(daemon.host, daemon.port, rcvbuf=64 * 1024) as busy:
        idle.logged_in(USER, PASSWORD)
        busy.logged_in(USER, PASSWORD)
        busy.put("d.bin", data)
        ready = busy.call(m.Get(id=70, path="d.bin"))
        assert isinstance(ready, m.GetReady)
        daemon.proc.send_signal(15)                       # SIGTERM mid-download
        assert idle.recv_reply().code == "SHUTTING_DOWN"
        assert idle.closed_by_peer()
        parts = []
        while True:
            event = busy.recv()
            if not isinstance(event, bytes):
                break
            parts.append(event)
        assert isinstance(event, m.GetDone) and b"".join(parts) == data
        assert busy.recv_reply().code == "SHUTTING_DOWN"  # then it is sent away too
    assert daemon.proc.wait(20) == 0


# ---------------------------------------------------------------- deferred SHA-256


def test_a_deferred_upload_waits_for_commit_and_verifies_against_it(conn):
    data = blob(2_000_000)
    ready = conn.call(m.Put(id=1, path="d.bin", size=len(data), defer_sha256=True))
    assert isinstance(ready, m.PutReady) and ready.offset == 0
    conn.send_data(data)
    assert conn.call(m.Stat(id=2, path="d.bin")).code == "BAD_STATE"   # still uploading
    done = conn.call(m.Commit(id=3, sha256=hashlib.sha256(data).hexdigest()))
    assert isinstance(done, m.PutDone) and done.id == 3
    assert done.sha256 == hashlib.sha256(data).hexdigest() and conn.get("d.bin")[1] == data


def test_a_deferred_upload_with_the_wrong_hash_is_integrity_and_discarded(conn):
    conn.call(m.Put(id=1, path="w.bin", size=5, defer_sha256=True))
    conn.send_data(b"hello")
    reply = conn.call(m.Commit(id=2, sha256="0" * 64))
    assert reply.code == "INTEGRITY" and reply.id == 2
    assert conn.call(m.Stat(id=3, path="w.bin")).code == "NOT_FOUND"
    assert conn.call(m.Uploads(id=4)).uploads == ()


def test_commit_before_the_last_byte_is_offset_mismatch_and_the_upload_goes_on(conn):
    data = b"0123456789"
    conn.call(m.Put(id=1, path="e.bin", size=10, defer_sha256=True))
    conn.send_data(data[:4])
    early = conn.call(m.Commit(id=2, sha256=hashlib.sha256(data).hexdigest()))
    assert early.code == "OFFSET_MISMATCH" and early.details == {"expected": 10, "got": 4}
    conn.send_data(data[4:])
    assert isinstance(conn.call(m.Commit(id=3, sha256=hashlib.sha256(data).hexdigest())),
                      m.PutDone)


def test_commit_for_an_upload_that_declared_its_hash_is_bad_state(conn):
    ready = conn.put("u.bin", blob(1000), stop_at=10)
    assert conn.call(m.Commit(id=90, sha256="0" * 64)).code == "BAD_STATE"
    assert ready.offset == 0


def test_commit_outside_an_upload_is_bad_state(conn):
    assert conn.call(m.Commit(id=5, sha256="0" * 64)).code == "BAD_STATE"


def test_a_deferred_upload_resumes_and_hashes_the_whole_file(daemon):
    data = blob(3_000_000, 7)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        wire.call(m.Put(id=1, path="r.bin", size=len(data), defer_sha256=True))
        wire.send_data(data[:1_200_000])
        wire.call(m.Ping(id=2))
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        ready = wire.call(m.Put(id=1, path="r.bin", size=len(data), defer_sha256=True))
        assert ready.offset == 1_200_000
        wire.send_data(data[ready.offset:])
        done = wire.call(m.Commit(id=2, sha256=hashlib.sha256(data).hexdigest()))
        assert isinstance(done, m.PutDone) and wire.get("r.bin")[1] == data
