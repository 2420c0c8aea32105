"""The client library against the in-process fake server (no daemon needed).

These cover what the real daemon will not do on demand: drops at chosen
byte counts, a lying SHA-256, oversized and surplus DATA frames, a silent
server, and the client's own checks (local file changing mid-upload).
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import threading
import time

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
    connection,
    get_tree,
    put_tree,
    transfer,
)
from client import get_policy as client_module
from protocol import messages as m
from tests.daemon import answers_ping
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
        assert answers_ping(c)
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
        assert answers_ping(c)              # a refused request keeps the connection


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


@pytest.mark.parametrize("defer_hash", [True, False], ids=["deferred", "upfront"])
@pytest.mark.parametrize("size", [0, 1, 8191, 8192, 8193, 100_000])
def test_round_trip_sizes(small, tmp_path, size, defer_hash):
    data = os.urandom(size)
    src = tmp_path / "src"
    src.write_bytes(data)
    seen = []
    with logged_in(small) as c:
        r = c.put(src, "dir-less", progress=lambda *a: seen.append(a), defer_hash=defer_hash)
        assert (r.path, r.size, r.sha256, r.resumed_from, r.restarted) == (
            "/dir-less", size, sha(data), 0, False)
        assert small.files["/dir-less"] == data
        assert seen[-1] == (size, size, 0)
        g = c.get("dir-less", tmp_path / "out")
        assert (g.size, g.sha256, g.resumed_from) == (size, sha(data), 0)
    assert (tmp_path / "out").read_bytes() == data
    assert not (tmp_path / "out.part").exists()
    frames = [r for r in small.requests if isinstance(r, m.Put)]
    assert frames[0].size == size
    if defer_hash:
        assert frames[0].sha256 is None and frames[0].defer_sha256
        assert [(s.request.sha256, s.held, s.sent) for s in small.commits] == [
            (sha(data), size, size)]
    else:
        assert frames[0].sha256 == sha(data) and not frames[0].defer_sha256
        assert small.requests_of(m.Commit) == []


def test_put_without_verify_declares_no_hash(fake, tmp_path):
    src = tmp_path / "a"
    src.write_bytes(b"hello")
    with logged_in(fake) as c:
        r = c.put(src, verify=False)
        assert r.sha256 is None and fake.files["/a"] == b"hello"
        assert fake.requests_of(m.Put)[0].sha256 is None
        assert not fake.requests_of(m.Put)[0].defer_sha256 and not fake.requests_of(m.Commit)
        g = c.get("a", tmp_path / "b", verify=False)
        assert g.sha256 is None and (tmp_path / "b").read_bytes() == b"hello"


@pytest.mark.parametrize("defer_hash", [True, False], ids=["deferred", "upfront"])
def test_put_resumes_server_partial(small, tmp_path, defer_hash):
    data = os.urandom(50_000)
    src = tmp_path / "f"
    src.write_bytes(data)
    # A deferred upload's partial is stored without a digest.
    declared = None if defer_hash else sha(data)
    small.partials["/f"] = Partial(len(data), declared, bytearray(data[:20_000]))
    with logged_in(small) as c:
        r = c.put(src, defer_hash=defer_hash)
    assert r.resumed_from == 20_000 and not r.restarted and r.sha256 == sha(data)
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


# ------------------------------------------------------------ deferred SHA-256 (commit)


def test_deferred_put_commits_after_exactly_the_missing_bytes(small, tmp_path):
    data = os.urandom(50_000)
    src = tmp_path / "f"
    src.write_bytes(data)
    small.partials["/f"] = Partial(len(data), None, bytearray(data[:12_345]))
    with logged_in(small) as c:
        r = c.put(src)
        assert answers_ping(c)                      # put.done was read: nothing left over
    (put,) = small.requests_of(m.Put)
    assert put.defer_sha256 and put.sha256 is None
    (seen,) = small.commits
    # The commit follows the last of size - offset DATA bytes, and names the whole file.
    assert (seen.sent, seen.held, seen.size) == (50_000 - 12_345, 50_000, 50_000)
    assert seen.request.sha256 == sha(data) and seen.request.id != put.id
    # put.done came with the commit's id (the fake answers it so) and was accepted.
    assert (r.path, r.size, r.sha256, r.resumed_from, r.restarted) == (
        "/f", 50_000, sha(data), 12_345, False)
    assert small.files["/f"] == data


def test_deferred_put_of_a_complete_partial_commits_at_once(small, tmp_path):
    data = os.urandom(9000)
    src = tmp_path / "f"
    src.write_bytes(data)
    small.partials["/f"] = Partial(len(data), None, bytearray(data))
    with logged_in(small) as c:
        r = c.put(src)
    assert [(s.sent, s.held) for s in small.commits] == [(0, 9000)]
    assert r.resumed_from == 9000 and small.files["/f"] == data


def test_deferred_put_of_a_resumed_and_changed_file_starts_over_with_a_notice(small, tmp_path):
    old, new = os.urandom(40_000), os.urandom(40_000)
    src = tmp_path / "f"
    src.write_bytes(new)                          # same size: the server cannot tell
    small.partials["/f"] = Partial(len(old), None, bytearray(old[:25_000]))
    notices = []
    with logged_in(small) as c:
        r = c.put(src, notice=notices.append)
        assert answers_ping(c)
    assert notices == ["remote partial did not match the local file; starting over"]
    assert small.put_offsets == [25_000, 0]
    assert [s.request.sha256 for s in small.commits] == [sha(new), sha(new)]
    assert (r.restarted, r.resumed_from, r.sha256, r.attempts) == (True, 0, sha(new), 2)
    assert small.files["/f"] == new


def test_deferred_put_restarts_only_once(small, tmp_path):
    small.corrupt_put = True                      # every commit fails with INTEGRITY
    src = tmp_path / "f"
    src.write_bytes(b"y" * 30_000)
    small.partials["/f"] = Partial(30_000, None, bytearray(b"x" * 10_000))
    notices = []
    with logged_in(small) as c:
        with pytest.raises(IntegrityError) as info:
            c.put(src, notice=notices.append)
        assert info.value.code == "INTEGRITY" and answers_ping(c)
    assert len(notices) == 1 and small.put_offsets == [10_000, 0]


def test_deferred_put_from_zero_with_a_commit_mismatch_is_an_integrity_error(small, tmp_path):
    """Bytes that changed under an unchanged identity (mtime put back): what was sent
    and what was hashed differ, the server refuses the commit, nothing is retried."""
    data = os.urandom(200_000)
    src = tmp_path / "f"
    src.write_bytes(data)
    stamp = os.stat(src)
    rewritten = []

    def rewrite_quietly(done, total, start):
        if 0 < done < total and not rewritten:
            rewritten.append(done)
            # sendfile hands the kernel page-cache pages, not copies: wait until the
            # first bytes have really arrived, or they could go out rewritten too.
            deadline = time.monotonic() + 10
            while len(small.partials["/f"].data) < done and time.monotonic() < deadline:
                time.sleep(0.001)
            with open(src, "r+b") as f:
                f.write(os.urandom(len(data)))     # same size, every byte different
            os.utime(src, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))

    # The bytes sent are old then new; whatever the hash read, they cannot match it.
    notices = []
    with logged_in(small) as c:
        with pytest.raises(IntegrityError) as info:
            c.put(src, progress=rewrite_quietly, notice=notices.append)
        assert info.value.code == "INTEGRITY" and "changed during" not in info.value.message
        assert answers_ping(c)                      # an error reply: the session goes on
    assert notices == [] and small.put_offsets == [0] and len(small.commits) == 1
    assert "/f" not in small.files and "/f" not in small.partials


def test_deferred_put_file_changed_during_send_is_cancelled_without_commit(small, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(os.urandom(100_000))

    def meddle(done, total, start):
        if done >= 16384:
            with open(src, "ab") as f:
                f.write(b"more")

    with logged_in(small) as c:
        with pytest.raises(IntegrityError, match="changed during the upload"):
            c.put(src, progress=meddle)
        assert answers_ping(c)
    assert small.requests_of(m.Cancel) and small.requests_of(m.Abort)
    assert small.requests_of(m.Commit) == []
    assert "/f" not in small.files and "/f" not in small.partials


def test_deferred_put_file_changed_after_its_last_byte_is_cancelled_not_committed(small,
                                                                                   tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"x" * 9000)

    def meddle(done, total, start):
        if done == total:
            os.utime(src, ns=(1, 1))

    with logged_in(small) as c:
        with pytest.raises(IntegrityError, match="changed during the upload"):
            c.put(src, progress=meddle)
        assert answers_ping(c)                      # the waiting upload was cancelled
    assert small.requests_of(m.Commit) == [] and small.requests_of(m.Abort)
    assert "/f" not in small.partials


def test_deferred_put_to_a_server_without_commit_checks_the_stored_hash(small, tmp_path):
    small.legacy = True          # ignores defer_sha256, commits alone, refuses commit
    data = os.urandom(20_000)
    src = tmp_path / "f"
    src.write_bytes(data)
    with logged_in(small) as c:
        r = c.put(src)
        assert r.sha256 == sha(data) and answers_ping(c)
    assert small.requests_of(m.Hash)[-1].path == "/f"
    assert small.files["/f"] == data


def test_deferred_put_to_a_server_without_commit_that_stored_a_stale_prefix(small, tmp_path):
    small.legacy = True
    src = tmp_path / "f"
    src.write_bytes(b"n" * 20_000)
    small.partials["/f"] = Partial(20_000, None, bytearray(b"o" * 5000))
    with logged_in(small) as c, pytest.raises(IntegrityError, match="not what was sent"):
        c.put(src)


def test_upfront_put_declares_the_hash_and_sends_no_commit(small, tmp_path):
    data = os.urandom(30_000)
    src = tmp_path / "f"
    src.write_bytes(data)
    with logged_in(small) as c:
        r = c.put(src, defer_hash=False)
    (put,) = small.requests_of(m.Put)
    assert put.sha256 == sha(data) and not put.defer_sha256
    assert small.requests_of(m.Commit) == [] and r.sha256 == sha(data)


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
        assert c.connected and answers_ping(c)       # cancelled cleanly
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
        assert answers_ping(c)


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
        assert answers_ping(c)
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


# ------------------------------------------------------------ overlapped download hashing

MiB = 1024 * 1024
# Around the pipeline threshold, the 1 MiB receive buffers and a full turn of the ring.
PIPE_SIZES = [transfer.PIPELINE_MIN - 1, transfer.PIPELINE_MIN, transfer.PIPELINE_MIN + 1,
              transfer.PIPELINE_MIN + transfer.RING_BUFFERS * MiB + 1, 6 * MiB - 5]


@pytest.mark.parametrize("frame", [None, 65_537], ids=["1MiB-frames", "odd-frames"])
@pytest.mark.parametrize("size", PIPE_SIZES)
def test_overlapped_download_hash_equals_the_sequential_one(fake, tmp_path, size, frame):
    data = os.urandom(size)
    fake.put_file("/f", data)
    fake.get_frame = frame
    with logged_in(fake) as c:
        g = c.get("/f", tmp_path / "f")
        assert g.sha256 == sha(data)
        streamed = bytearray()
        s = c.get_stream("/f", streamed.extend, verify=True)
        assert s.sha256 == sha(data) and bytes(streamed) == data
    assert (tmp_path / "f").read_bytes() == data


def test_overlapped_download_resumed_from_a_part_hashes_the_whole_file(fake, tmp_path):
    data = os.urandom(transfer.PIPELINE_MIN + 3 * MiB + 11)
    fake.put_file("/f", data)
    (tmp_path / "f.part").write_bytes(data[:MiB + 7])
    with logged_in(fake) as c:
        g = c.get("/f", tmp_path / "f")
    assert g.resumed_from == MiB + 7 and g.sha256 == sha(data)
    assert (tmp_path / "f").read_bytes() == data


class _SlowDigest:
    """A digest that reads each chunk late: a refilled buffer would corrupt it."""

    def __init__(self, digest):
        self.digest = digest

    def update(self, data):
        time.sleep(0.002)
        self.digest.update(data)


def test_a_slow_hasher_never_reads_a_buffer_that_is_being_refilled(fake, tmp_path,
                                                                   monkeypatch):
    fake.get_frame = 100_003
    data = os.urandom(12 * MiB + 3)
    fake.put_file("/f", data)
    waits = []

    class SlowHashThread(transfer.HashThread):
        def __init__(self, digest, slots):
            super().__init__(_SlowDigest(digest), slots)

        def before_fill(self):
            waits.append(self._free._value == 0)     # about to block on the hasher
            super().before_fill()

    monkeypatch.setattr(transfer, "HashThread", SlowHashThread)
    with logged_in(fake) as c:
        assert c.get("/f", tmp_path / "f").sha256 == sha(data)
    assert any(waits)                                # the receiver did wait for it
    assert (tmp_path / "f").read_bytes() == data


def test_a_failed_download_stops_the_hash_thread(small, tmp_path):
    data = os.urandom(transfer.PIPELINE_MIN + MiB)
    small.put_file("/f", data)
    small.drop_get_after = 2 * MiB
    with logged_in(small) as c, pytest.raises(ConnectionLost):
        c.get("/f", tmp_path / "f")
    assert _helper_threads() == []
    assert (tmp_path / "f.part").read_bytes() == data[:2 * MiB]


def _helper_threads() -> list[threading.Thread]:
    """The client's download helpers still alive (the fake server's own threads
    end on their own time, so a plain thread count would race with them)."""
    return [t for t in threading.enumerate() if t.name.startswith("ftpc-")]


def test_a_big_download_writes_its_file_on_a_helper_thread(fake, tmp_path, monkeypatch):
    data = os.urandom(transfer.PIPELINE_MIN + MiB + 5)
    fake.put_file("/f", data)
    writers = set()
    real_write_all = client_module.write_all

    def watched(fd, view):
        writers.add(threading.current_thread().name)
        real_write_all(fd, view)

    monkeypatch.setattr(client_module, "write_all", watched)
    with logged_in(fake) as c:
        assert c.get("/f", tmp_path / "f").sha256 == sha(data)
    assert writers == {"ftpc-write"}
    assert (tmp_path / "f").read_bytes() == data


def test_a_write_error_on_the_helper_thread_fails_the_download(fake, tmp_path, monkeypatch):
    data = os.urandom(transfer.PIPELINE_MIN + 4 * MiB)
    fake.put_file("/f", data)
    written = [0]
    real_write_all = client_module.write_all

    def disk_fills_up(fd, view):
        if written[0] >= 2 * MiB:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, view)
        written[0] += len(view)

    monkeypatch.setattr(client_module, "write_all", disk_fills_up)
    c = logged_in(fake)
    with pytest.raises(OSError) as failure:
        c.get("/f", tmp_path / "f")
    assert failure.value.errno == errno.ENOSPC
    assert not c.connected                     # the byte stream was cut: closed
    assert _helper_threads() == []
    assert not (tmp_path / "f").exists()
    assert (tmp_path / "f.part").read_bytes() == data[:written[0]]


def test_receive_buffers_are_small_until_a_download_needs_big_ones(fake, tmp_path):
    fake.put_file("/small", b"s" * 1000)
    fake.put_file("/big", os.urandom(transfer.PIPELINE_MIN))
    with logged_in(fake) as c:
        conn = c._require()
        assert len(conn._control) == connection.CONTROL_BUFFER and conn._data == []
        c.get("/small", tmp_path / "small")
        assert [len(b) for b in conn._data] == [connection.DATA_BUFFER]
        c.get_stream("/big", lambda _view: None)           # no helper thread: one buffer
        assert len(conn._data) == 1
        c.get("/big", tmp_path / "big2", verify=False)     # a writer thread: the ring
        assert len(conn._data) == transfer.RING_BUFFERS
        assert conn._views == [conn._control] and conn._guard is None
        assert c.ls("/").entries                          # control traffic works after


# ------------------------------------------------------------ fsync is opt-in


@pytest.fixture
def fsyncs(monkeypatch):
    calls = []
    real = os.fsync

    def counting(fd):
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_get_does_not_fsync_by_default(fake, tmp_path, fsyncs):
    fake.put_file("/f", b"payload")
    with logged_in(fake) as c:
        c.get("/f", tmp_path / "f")
    assert fsyncs == [] and (tmp_path / "f").read_bytes() == b"payload"


def test_get_with_fsync_flushes_the_file_and_the_folder(fake, tmp_path, fsyncs):
    fake.put_file("/f", b"payload")
    with logged_in(fake) as c:
        c.get("/f", tmp_path / "f", fsync=True)
    assert len(fsyncs) == 2 and (tmp_path / "f").read_bytes() == b"payload"


# ------------------------------------------------------------ parking a slow commit


def slow_hash(monkeypatch, delay: float) -> None:
    """The background hash always uses a thread and takes at least ``delay`` seconds."""
    import client.put_policy as client_module
    from client.files import BackgroundHash

    class SlowHash(BackgroundHash):
        THREAD_MIN = 0

        def _run(self):
            time.sleep(delay)
            super()._run()

    monkeypatch.setattr(client_module, "BackgroundHash", SlowHash)


def test_a_commit_whose_hash_is_late_parks_the_upload_and_pings(small, tmp_path, monkeypatch):
    slow_hash(monkeypatch, 0.4)
    monkeypatch.setattr(transfer, "COMMIT_WAIT", 0.05)
    monkeypatch.setattr(transfer, "PARK_PING", 0.05)
    data = os.urandom(30_000)
    src = tmp_path / "f"
    src.write_bytes(data)
    small.partials["/f"] = Partial(len(data), None, bytearray(data[:20_000]))
    with logged_in(small) as c:
        r = c.put(src)
        assert answers_ping(c)
    kinds = [type(q).__name__ for q in small.requests if not isinstance(q, (m.Hello, m.Login))]
    # put, (all bytes), cancel: parked; pings while hashing; put again (resumes at the end), commit
    assert kinds[:2] == ["Put", "Cancel"] and kinds[-4:] == ["Put", "Commit", "Ping", "Quit"]
    assert kinds.count("Ping") >= 3
    assert small.put_offsets == [20_000, 30_000]
    # The missing 10 000 bytes went once, before parking; the second put sent none.
    assert [(s.sent, s.held) for s in small.commits] == [(10_000, 30_000)]
    assert (r.sha256, r.resumed_from, r.restarted) == (sha(data), 20_000, False)
    assert small.files["/f"] == data


def test_a_parked_upload_to_a_server_without_commit_is_checked(small, tmp_path, monkeypatch):
    small.legacy = True
    slow_hash(monkeypatch, 0.2)
    monkeypatch.setattr(transfer, "COMMIT_WAIT", 0.02)
    monkeypatch.setattr(transfer, "PARK_PING", 0.05)
    data = os.urandom(10_000)
    src = tmp_path / "f"
    src.write_bytes(data)
    with logged_in(small) as c:
        r = c.put(src)
        assert answers_ping(c)
    assert r.sha256 == sha(data) and small.requests_of(m.Hash)
    assert len(small.requests_of(m.Put)) == 1 and small.files["/f"] == data
