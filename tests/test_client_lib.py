"""The client library against the in-process fake server (no daemon needed).

These cover what the real daemon will not do on demand: drops at chosen
byte counts, a lying SHA-256, oversized and surplus DATA frames, a silent
server, and the client's own checks (local file changing mid-upload).
"""

from __future__ import annotations

import hashlib
import os
import socket

import pytest

from client import (
    AuthError,
    Cancelled,
    Client,
    ConnectionLost,
    IntegrityError,
    NotFoundError,
    PathError,
    QuotaError,
    RegistrationError,
    RequestError,
    get_tree,
    put_tree,
)
from protocol import messages as m
from tests.test_client_fakeserver import FakeServer, Partial, serve_fake


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake():
    yield from serve_fake()


@pytest.fixture
def small():
    """A fake with 8 KiB DATA frames, so small files cross many frame boundaries."""
    yield from serve_fake(max_data=8192)


def logged_in(server: FakeServer, **kw) -> Client:
    c = Client(server.host, server.port, timeout=5, **kw)
    c.retry_backoff = 0.01
    c.connect()
    c.login("alice", "secret", want_token=True)
    return c


# ------------------------------------------------------------ commands


def test_session_commands(fake):
    with Client(fake.host, fake.port, timeout=5) as c:
        assert c.greeting.server == "fake"
        assert c.whoami() is None
        s = c.login("alice", "secret", want_token=True)
        assert (s.user, s.cwd) == ("alice", "/") and s.token
        assert c.whoami() == "alice"
        assert c.mkdir("/a/b", parents=True) == "/a/b"
        assert c.cd("a") == "/a" and c.pwd() == "/a"
        assert c.ping() >= 0
        c.logout()
        assert c.whoami() is None
    assert not c.connected


def test_listing_pages_are_collected(fake):
    fake.ls_page = 2
    for i in range(5):
        fake.put_file(f"/f{i}", b"x" * i)
    with logged_in(fake) as c:
        listing = c.ls("/")
        assert [e.name for e in listing.entries] == [f"f{i}" for i in range(5)]
        assert listing.path == "/"
        st = c.stat("f3")
        assert (st.path, st.entry.size, st.entry.type) == ("/f3", 3, "file")
        assert c.hash("f4").sha256 == sha(b"xxxx")
        assert c.mv("f1", "g1").dst == "/g1"
        assert c.rm("g1") == "/g1"
        q = c.quota()
        assert q.used == 0 + 2 + 3 + 4 and q.limit == fake.quota_limit


@pytest.mark.parametrize(("code", "exc"), [
    ("stat", NotFoundError), ("mv", PathError), ("mkdir", PathError)])
def test_server_errors_map_to_families(fake, code, exc):
    fake.put_file("/x", b"1")
    fake.put_file("/y", b"2")
    with logged_in(fake) as c:
        with pytest.raises(exc) as info:
            {"stat": lambda: c.stat("nope"), "mv": lambda: c.mv("x", "y"),
             "mkdir": lambda: c.mkdir("/x")}[code]()
        assert info.value.code in ("NOT_FOUND", "EXISTS") and info.value.message
        assert c.ping() >= 0              # a refused request keeps the connection


def test_auth_errors(fake):
    with Client(fake.host, fake.port, timeout=5) as c:
        with pytest.raises(AuthError) as info:
            c.login("alice", "wrong")
        assert info.value.code == "AUTH_FAILED"
        with pytest.raises(AuthError) as info:
            c.pwd()
        assert info.value.code == "AUTH_REQUIRED"
        with pytest.raises(RegistrationError):
            c.register("bob", "pw")
        with pytest.raises(ValueError):
            c.login("alice")
        with pytest.raises(RequestError):
            c.login("", "x")               # rejected before it is sent


def test_quota_exceeded(fake, tmp_path):
    fake.quota_limit = 10
    f = tmp_path / "big"
    f.write_bytes(b"x" * 11)
    with logged_in(fake) as c:
        with pytest.raises(QuotaError) as info:
            c.put(f)
        assert info.value.code == "QUOTA_EXCEEDED"


def test_connection_failures():
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectionLost) as info:
        Client("127.0.0.1", port).connect()
    assert info.value.code == "CONNECTION_FAILED"


def test_greeting_refusal(fake):
    fake.greeting_error = "TOO_MANY_CONNECTIONS"
    with pytest.raises(ConnectionLost) as info:
        Client(fake.host, fake.port, timeout=5).connect()
    assert info.value.code == "TOO_MANY_CONNECTIONS"


def test_silent_server_times_out(fake):
    c = logged_in(fake)
    c._require().sock.settimeout(0.3)
    fake.silent = True
    with pytest.raises(ConnectionLost) as info:
        c.pwd()
    assert info.value.code == "TIMEOUT"
    assert not c.connected


def test_fatal_error_closes(fake):
    fake.fatal_on["pwd"] = "SHUTTING_DOWN"
    c = logged_in(fake)
    with pytest.raises(ConnectionLost) as info:
        c.pwd()
    assert info.value.code == "SHUTTING_DOWN" and not c.connected
    with pytest.raises(ConnectionLost):
        c.ping()


# ------------------------------------------------------------ transfers


@pytest.mark.parametrize("size", [0, 1, 8191, 8192, 8193, 100_000])
def test_round_trip_sizes(small, tmp_path, size):
    data = os.urandom(size)
    src = tmp_path / "src"
    src.write_bytes(data)
    seen = []
    with logged_in(small) as c:
        r = c.put(src, "dir-less", progress=lambda *a: seen.append(a))
        assert (r.path, r.size, r.sha256, r.resumed_from, r.restarted) == (
            "/dir-less", size, sha(data), 0, False)
        assert small.files["/dir-less"] == data
        assert seen[-1] == (size, size, 0)
        g = c.get("dir-less", tmp_path / "out")
        assert (g.size, g.sha256, g.resumed_from) == (size, sha(data), 0)
    assert (tmp_path / "out").read_bytes() == data
    assert not (tmp_path / "out.part").exists()
    frames = [r for r in small.requests if isinstance(r, m.Put)]
    assert frames[0].sha256 == sha(data) and frames[0].size == size


def test_put_without_verify_declares_no_hash(fake, tmp_path):
    src = tmp_path / "a"
    src.write_bytes(b"hello")
    with logged_in(fake) as c:
        r = c.put(src, verify=False)
        assert r.sha256 is None and fake.files["/a"] == b"hello"
        assert fake.requests_of(m.Put)[0].sha256 is None
        g = c.get("a", tmp_path / "b", verify=False)
        assert g.sha256 is None and (tmp_path / "b").read_bytes() == b"hello"


def test_put_resumes_server_partial(small, tmp_path):
    data = os.urandom(50_000)
    src = tmp_path / "f"
    src.write_bytes(data)
    small.partials["/f"] = Partial(len(data), sha(data), bytearray(data[:20_000]))
    with logged_in(small) as c:
        r = c.put(src)
    assert r.resumed_from == 20_000 and not r.restarted
    assert small.files["/f"] == data


def test_put_restarts_stale_partial(small, tmp_path):
    data = os.urandom(30_000)
    src = tmp_path / "f"
    src.write_bytes(data)
    small.partials["/f"] = Partial(len(data), sha(b"old"), bytearray(b"o" * 1000))
    notices = []
    with logged_in(small) as c:
        r = c.put(src, notice=notices.append)
    assert r.restarted and r.resumed_from == 0
    assert notices == ["remote partial did not match the local file; starting over"]
    assert small.files["/f"] == data


def test_put_file_changed_during_upload(small, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(os.urandom(100_000))

    def meddle(done, total, start):
        if done >= 16384:
            with open(src, "ab") as f:
                f.write(b"more")

    with logged_in(small) as c:
        with pytest.raises(IntegrityError) as info:
            c.put(src, progress=meddle)
        assert "changed during the upload" in info.value.message
        assert c.connected and c.ping() >= 0       # cancelled cleanly
    assert "/f" not in small.files and "/f" not in small.partials
    assert small.requests_of(m.Cancel) and small.requests_of(m.Abort)


def test_put_file_changed_after_last_frame(small, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"x" * 9000)

    def meddle(done, total, start):
        if done == total:
            os.utime(src, ns=(1, 1))

    with logged_in(small) as c, pytest.raises(IntegrityError):
        c.put(src, progress=meddle)


def test_server_side_integrity_failure(fake, tmp_path):
    fake.corrupt_put = True
    src = tmp_path / "f"
    src.write_bytes(b"abc")
    with logged_in(fake) as c:
        with pytest.raises(IntegrityError) as info:
            c.put(src)
        assert info.value.code == "INTEGRITY"
        assert c.ping() >= 0


def test_put_refuses_directory(fake, tmp_path):
    with logged_in(fake) as c, pytest.raises(IsADirectoryError):
        c.put(tmp_path)


def test_get_resumes_part_file(small, tmp_path):
    data = os.urandom(40_000)
    small.put_file("/f", data)
    out = tmp_path / "f"
    (tmp_path / "f.part").write_bytes(data[:12_345])
    with logged_in(small) as c:
        g = c.get("/f", out)
    assert g.resumed_from == 12_345 and not g.restarted
    assert small.requests_of(m.Get)[0].offset == 12_345
    assert out.read_bytes() == data and not (tmp_path / "f.part").exists()


def test_get_stale_part_starts_over(small, tmp_path):
    data = os.urandom(40_000)
    small.put_file("/f", data)
    out = tmp_path / "f"
    (tmp_path / "f.part").write_bytes(b"\0" * 10_000)
    notices = []
    with logged_in(small) as c:
        g = c.get("/f", out, notice=notices.append)
    assert g.restarted and g.resumed_from == 0 and out.read_bytes() == data
    assert [r.offset for r in small.requests_of(m.Get)] == [10_000, 0]
    assert notices and "starting over" in notices[0]


def test_get_part_longer_than_remote(small, tmp_path):
    small.put_file("/f", b"short")
    (tmp_path / "f.part").write_bytes(b"much longer than the file")
    with logged_in(small) as c:
        g = c.get("/f", tmp_path / "f")
    assert g.restarted and (tmp_path / "f").read_bytes() == b"short"


def test_lying_sha_is_caught(fake, tmp_path):
    fake.lie_sha = True
    fake.put_file("/f", b"payload")
    with logged_in(fake) as c:
        with pytest.raises(IntegrityError):
            c.get("/f", tmp_path / "f")
        assert c.ping() >= 0
    assert not (tmp_path / "f").exists() and not (tmp_path / "f.part").exists()


def test_oversized_frame_is_a_violation(fake, tmp_path):
    fake.oversize_frame = True
    fake.put_file("/f", b"payload")
    with logged_in(fake) as c:
        with pytest.raises(ConnectionLost) as info:
            c.get("/f", tmp_path / "f")
        assert info.value.code == "FRAME_TOO_LARGE" and not c.connected


def test_surplus_data_is_a_violation(fake, tmp_path):
    fake.extra_data = True
    fake.put_file("/f", b"payload")
    with logged_in(fake) as c, pytest.raises(ConnectionLost):
        c.get("/f", tmp_path / "f")
    assert not (tmp_path / "f").exists()


def test_get_missing(fake, tmp_path):
    with logged_in(fake) as c, pytest.raises(NotFoundError):
        c.get("/nope", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_get_drop_without_retries_keeps_part(small, tmp_path):
    data = os.urandom(60_000)
    small.put_file("/f", data)
    small.drop_get_after = 20_000
    with logged_in(small) as c, pytest.raises(ConnectionLost):
        c.get("/f", tmp_path / "f")
    assert (tmp_path / "f.part").read_bytes() == data[:20_000]


def test_get_reconnects_and_resumes(small, tmp_path):
    data = os.urandom(60_000)
    small.put_file("/d/f", data)
    small.drop_get_after = 20_000
    notices = []
    c = logged_in(small)
    c.cd("/d")
    g = c.get("f", tmp_path / "f", retries=2, notice=notices.append)
    assert g.attempts == 2 and (tmp_path / "f").read_bytes() == data
    assert [r.offset for r in small.requests_of(m.Get)] == [0, 20_000]
    logins = small.requests_of(m.Login)
    assert logins[-1].token is not None            # re-login used the session token
    assert c.cwd == "/d" and small.connections == 2
    assert "reconnecting" in notices[0]
    c.close()


def test_put_reconnects_and_resumes(small, tmp_path):
    data = os.urandom(80_000)
    src = tmp_path / "f"
    src.write_bytes(data)
    small.drop_put_after = 30_000
    with logged_in(small) as c:
        r = c.put(src, retries=1)
    assert r.attempts == 2 and r.resumed_from == 0
    assert small.put_offsets[0] == 0 and small.put_offsets[1] >= 8192
    assert small.files["/f"] == data and small.connections == 2


def test_relogin_falls_back_to_password(fake, tmp_path):
    fake.put_file("/f", b"x" * 5000)
    c = logged_in(fake)
    fake.tokens.clear()                                # "server restarted"
    c.reconnect()
    assert c.whoami() == "alice"
    last = fake.requests_of(m.Login)[-2:]
    assert last[0].token is not None and last[1].password == "secret"
    c.close()


def test_cancel_from_progress_closes(small, tmp_path):
    small.put_file("/f", os.urandom(50_000))

    def stop(done, total, start):
        if done > 10_000:
            raise Cancelled()

    c = logged_in(small)
    with pytest.raises(Cancelled):
        c.get("/f", tmp_path / "f", progress=stop)
    assert not c.connected and (tmp_path / "f.part").exists()


def test_get_stream(small):
    data = os.urandom(30_000)
    small.put_file("/f", data)
    got = bytearray()
    with logged_in(small) as c:
        r = c.get_stream("/f", got.extend, verify=True)
        assert bytes(got) == data and r.sha256 == sha(data) and r.local is None
        tail = bytearray()
        c.get_stream("/f", tail.extend, offset=29_000)
        assert bytes(tail) == data[29_000:]
        with pytest.raises(ValueError):
            c.get_stream("/f", tail.extend, offset=1, verify=True)


def test_trees(fake, tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "empty").mkdir(parents=True)
    (src / "a").write_bytes(b"A")
    (src / "sub" / "b").write_bytes(b"B" * 3000)
    with logged_in(fake) as c:
        puts = put_tree(c, str(src), "/up")
        assert sorted(r.path for r in puts) == ["/up/a", "/up/sub/b"]
        assert "/up/sub/empty" in fake.dirs
        put_tree(c, str(src), "/up", put_file=lambda lo, re: c.put(lo, re, overwrite=True))
        fake.extra_entries = [m.Entry(name="..", type="file", size=1, mtime=0)]
        notices = []
        gets = get_tree(c, "/up", str(tmp_path / "dst"), notice=notices.append)
    assert len(gets) == 2 and any("unsafe" in n for n in notices)
    assert (tmp_path / "dst" / "sub" / "b").read_bytes() == b"B" * 3000
    assert (tmp_path / "dst" / "sub" / "empty").is_dir()
