"""The client library and ``ftpc`` against the real daemon.

Most tests share one daemon per module (``daemon``) and get a fresh user
each (``user``), which keeps start-up cost out of the runtime; tests that
restart the daemon, enable registration or fail logins on purpose (the
lock-out counts failures per address) use the function-scoped ``server``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from blake3 import blake3

from client import Cancelled, Client, IntegrityError
from client.cli import main
from client.client import RESTARTED_NOTICE
from tests.daemon import REPO, DaemonProcess, answers_ping

MiB = 1024 * 1024
_names = itertools.count()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b3(data: bytes) -> str:
    return blake3(data).hexdigest()


#: The library tests check SHA-256 digests: their client offers only SHA-256 at hello
#: (the default; ``FAST_DIGESTS`` would negotiate BLAKE3 with this daemon, issue 17).
SHA256_ONLY = ("sha256",)


@dataclass
class User:
    daemon: Any
    name: str
    password: str

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "FTPC_HOST": self.daemon.host, "FTPC_PORT": str(self.daemon.port),
                "FTPC_USER": self.name, "FTPC_PASSWORD": self.password, **extra}

    def client(self) -> Client:
        c = Client(self.daemon.host, self.daemon.port, timeout=10, digests=SHA256_ONLY)
        c.connect()
        c.login(self.name, self.password, want_token=True)
        return c


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path_factory.mktemp("client-e2e") / "root").start()
    try:
        yield d
    finally:
        try:
            d.stop()
        finally:
            d.kill()
    assert "Traceback" not in d.log(), d.log()[-4000:]


def new_user(d: Any, quota: int | None = None) -> User:
    user = User(d, f"user{os.getpid()}x{next(_names)}", "correct horse")
    d.add_user(user.name, user.password, quota)
    return user


@pytest.fixture
def user(daemon: DaemonProcess) -> User:
    return new_user(daemon)


def ftpc(user: User, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client.cli", *args], env=user.env(**env),
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def spawn(user: User, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "client.cli", *args], env=user.env(),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], user: User,
             *args: str) -> tuple[int, str, str]:
    """``ftpc`` in-process (fast): exit status, stdout, stderr."""
    for key, value in user.env().items():
        if key.startswith("FTPC_"):
            monkeypatch.setenv(key, value)
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


# ------------------------------------------------------------ library


@pytest.mark.parametrize("size", [0, 1, MiB - 1, MiB, MiB + 1, 3 * MiB + 17, 4 * MiB,
                                  9 * MiB + 1])
def test_library_round_trip(user, tmp_path, size):
    data = os.urandom(size)
    src = tmp_path / "src"
    src.write_bytes(data)
    with user.client() as c:
        put = c.put(src, f"f{size}")
        assert (put.path, put.size, put.sha256) == (f"/f{size}", size, sha(data))
        assert c.hash(put.path).sha256 == sha(data)
        got = c.get(put.path, tmp_path / "dst")
        assert got.sha256 == sha(data) and got.resumed_from == 0
        streamed = bytearray()
        c.get_stream(put.path, streamed.extend, verify=True)
    assert (tmp_path / "dst").read_bytes() == data == bytes(streamed)


@pytest.mark.slow
def test_library_round_trip_100_mib(user, tmp_path):
    src = tmp_path / "big"
    digest = hashlib.sha256()
    with open(src, "wb") as f:
        for _ in range(100):
            block = os.urandom(MiB)
            digest.update(block)
            f.write(block)
    with user.client() as c:
        assert c.put(src).sha256 == digest.hexdigest()
        assert c.get("big", tmp_path / "back").sha256 == digest.hexdigest()
    with open(tmp_path / "back", "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == digest.hexdigest()


@pytest.mark.parametrize("size", [0, 1, MiB + 1])
def test_library_round_trip_with_the_hash_declared_up_front(user, tmp_path, size):
    data = os.urandom(size)
    src = tmp_path / "src"
    src.write_bytes(data)
    with user.client() as c:
        put = c.put(src, f"u{size}", defer_hash=False)
        assert (put.path, put.size, put.sha256) == (f"/u{size}", size, sha(data))
        assert c.hash(put.path).sha256 == sha(data)


@pytest.mark.parametrize("defer_hash", [True, False], ids=["deferred", "upfront"])
def test_library_put_file_changing_during_upload(user, tmp_path, defer_hash):
    src = tmp_path / "f"
    src.write_bytes(os.urandom(4 * MiB))

    def meddle(done: int, total: int, start: int) -> None:
        if done >= MiB:
            with open(src, "r+b") as f:
                f.write(b"changed!")

    with user.client() as c:
        with pytest.raises(IntegrityError, match="changed during the upload"):
            c.put(src, progress=meddle, defer_hash=defer_hash)
        assert answers_ping(c)                       # the session survives
        assert c.uploads() == ()                   # the suspect partial was aborted
        assert "f" not in [e.name for e in c.ls().entries]


def test_library_deferred_put_of_a_changed_file_restarts_its_resumed_partial(user, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(os.urandom(6 * MiB))

    def stop(done: int, total: int, start: int) -> None:
        if done >= 2 * MiB:
            raise Cancelled()

    with user.client() as c:
        with pytest.raises(Cancelled):
            c.put(src, progress=stop)
        c.reconnect()
        # The daemon holds what reached it before the drop: maybe less than the
        # 2 MiB the client handed to its kernel (bytes in flight can be lost), not none.
        (partial,) = wait_for(lambda: [u for u in c.uploads() if u.offset > 0])
        assert partial.sha256 is None                                   # deferred: no hash
        src.write_bytes(os.urandom(6 * MiB))       # a new version, same size
        notices: list[str] = []
        result = c.put(src, notice=notices.append)
        assert notices == [RESTARTED_NOTICE]
        assert (result.restarted, result.resumed_from, result.attempts) == (True, 0, 2)
        assert result.sha256 == c.hash("f").sha256 == sha(src.read_bytes())
        assert c.uploads() == ()


def test_library_deferred_put_whose_bytes_changed_unnoticed_fails_its_commit(user, tmp_path):
    """Same size, mtime put back: the identity check cannot see it, the commit does.

    (Small enough to be hashed after the send, so the digest is surely the new
    bytes' while the old ones were sent.)
    """
    data = os.urandom(600 * 1024)
    src = tmp_path / "f"
    src.write_bytes(data)
    stamp = os.stat(src)
    rewritten: list[int] = []

    def rewrite_quietly(done: int, total: int, start: int) -> None:
        if done == total and not rewritten:
            rewritten.append(done)
            # sendfile hands the kernel page-cache pages, not copies: wait until the
            # daemon holds every byte, or some could go out rewritten too.
            wait_for(lambda: [u.offset for u in other.uploads()] == [total])
            with open(src, "r+b") as f:
                f.write(os.urandom(len(data)))
            os.utime(src, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))

    with user.client() as c, user.client() as other:
        with pytest.raises(IntegrityError) as info:
            c.put(src, progress=rewrite_quietly)
        assert info.value.code == "INTEGRITY" and rewritten
        assert answers_ping(c) and c.uploads() == ()     # the partial was discarded
        assert "f" not in [e.name for e in c.ls().entries]


def test_library_deferred_commit_outlasting_the_stall_timeout_parks(server_factory, tmp_path,
                                                                   monkeypatch):
    """A resumed upload whose prefix takes longer to hash than the daemon waits
    for a commit (stall timeout 1 s here) parks in READY instead of timing out."""
    from client import transfer
    from tests.test_client_lib import slow_hash

    daemon = server_factory(stall_timeout=1.0)
    user = new_user(daemon)
    data = os.urandom(3 * MiB)
    src = tmp_path / "f"
    src.write_bytes(data)
    with user.client() as c:
        with pytest.raises(Cancelled):
            c.put(src, progress=lambda done, total, start: _cancel_after(done, MiB))
        c.reconnect()
        slow_hash(monkeypatch, 2.5)                   # > the stall timeout
        monkeypatch.setattr(transfer, "COMMIT_WAIT", 0.3)
        monkeypatch.setattr(transfer, "PARK_PING", 0.3)
        offsets: list[int] = []
        result = c.put(src, progress=lambda done, total, start: offsets.append(start))
        assert result.sha256 == sha(data) == c.hash("f").sha256
        assert result.resumed_from >= MiB and offsets[-1] == len(data)   # re-put at the end
        assert c.uploads() == ()


def _cancel_after(done: int, limit: int) -> None:
    if done >= limit:
        raise Cancelled()


def test_library_resumes_after_daemon_crash(server, tmp_path):
    server.add_user("crash", "correct horse")
    data = os.urandom(16 * MiB)
    src = tmp_path / "f"
    src.write_bytes(data)
    starts: list[int] = []

    def crash_once(done: int, total: int, start: int) -> None:
        if not starts or starts[-1] != start:
            starts.append(start)
        if len(starts) == 1 and done >= 4 * MiB:
            server.restart()                        # SIGKILL, then start on the same port

    c = Client(server.host, server.port, timeout=10, digests=SHA256_ONLY)
    c.retry_backoff = 0.05
    c.connect()
    c.login("crash", "correct horse", want_token=True)
    result = c.put(src, progress=crash_once, retries=3)
    assert result.attempts >= 2 and result.sha256 == sha(data)
    assert starts[0] == 0 and starts[-1] > 0       # the retry resumed the partial
    assert c.hash("f").sha256 == sha(data)
    c.close()


# ------------------------------------------------------------ ftpc: transfers


def test_cli_round_trip(user, tmp_path):
    for size in (0, 1, MiB + 1):
        data = os.urandom(size)
        src = tmp_path / f"s{size}"
        src.write_bytes(data)
        up = ftpc(user, "--json", "put", str(src))
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["sha256"] == sha(data)
        dst = tmp_path / f"d{size}"
        down = ftpc(user, "get", src.name, str(dst))
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == f"/{src.name} -> {dst} ({size} bytes, verified)"
        assert dst.read_bytes() == data


def test_cli_recursive(monkeypatch, capsys, user, tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "top.txt").write_bytes(b"top")
    (tree / "sub" / "deeper" / "x.bin").write_bytes(os.urandom(MiB + 3))
    status, out, err = run_main(monkeypatch, capsys, user, "--json", "put", "-r", str(tree))
    assert status == 0, err
    assert sorted(f["path"] for f in json.loads(out)["files"]) == [
        "/tree/sub/deeper/x.bin", "/tree/top.txt"]
    status, out, err = run_main(monkeypatch, capsys, user, "get", "-r", "tree",
                                str(tmp_path / "back"))
    assert status == 0, err
    for rel in ("top.txt", "sub/deeper/x.bin"):
        assert (tmp_path / "back" / rel).read_bytes() == (tree / rel).read_bytes()
    status, _, err = run_main(monkeypatch, capsys, user, "put", str(tree))
    assert status == 8 and "use put -r" in err


def test_cli_put_killed_then_resumed(user, tmp_path):
    data = os.urandom(8 * MiB)
    src = tmp_path / "big"
    src.write_bytes(data)
    proc = spawn(user, "put", str(src), "--limit-rate", "2M")
    with user.client() as c:
        offset = wait_for(lambda: next((u.offset for u in c.uploads() if u.offset > 0), 0))
        proc.kill()
        proc.wait()
        again = ftpc(user, "--json", "put", str(src))
        assert again.returncode == 0, again.stderr
        result = json.loads(again.stdout)
        assert result["resumed_from"] >= offset > 0 and not result["restarted"]
        assert c.hash("big").sha256 == sha(data)
        assert c.uploads() == ()


def test_cli_get_killed_then_resumed(user, tmp_path):
    data = os.urandom(8 * MiB)
    src = tmp_path / "src"
    src.write_bytes(data)
    with user.client() as c:
        c.put(src, "remote")
    dst = tmp_path / "dst"
    part = tmp_path / "dst.part"
    proc = spawn(user, "get", "remote", str(dst), "--limit-rate", "2M")
    wait_for(lambda: part.exists() and part.stat().st_size > 0)
    proc.kill()
    proc.wait()
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    again = ftpc(user, "--json", "get", "remote", str(dst))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["resumed_from"] == kept
    assert dst.read_bytes() == data and not part.exists()


def test_cli_local_file_changed_since_partial(user, tmp_path):
    src = tmp_path / "f"
    # 12 s of transfer at 2 MB/s: the put is still running when the signal comes, even
    # on a loaded machine where seeing its first offset takes seconds (it ends at SIGINT).
    src.write_bytes(os.urandom(24 * MiB))
    proc = spawn(user, "put", str(src), "--limit-rate", "2M")
    with user.client() as c:
        wait_for(lambda: any(u.offset > 0 for u in c.uploads()))
        proc.kill()
        proc.wait()
        src.write_bytes(os.urandom(6 * MiB))       # a new version, same size
        again = ftpc(user, "--json", "put", str(src))
        assert again.returncode == 0, again.stderr
        assert "remote partial did not match the local file; starting over" in again.stderr
        result = json.loads(again.stdout)
        assert result["restarted"] and result["resumed_from"] == 0
        assert c.hash("f").sha256 == sha(src.read_bytes())


def test_cli_local_file_changed_during_upload(user, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(os.urandom(4 * MiB))
    proc = spawn(user, "put", str(src), "--limit-rate", "2M")
    with user.client() as c:
        wait_for(lambda: any(u.offset > 0 for u in c.uploads()))
        with open(src, "ab") as f:
            f.write(b"appended while uploading")
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 7
        assert err.strip().splitlines()[-1].startswith("ftpc: error: INTEGRITY: ")
        assert "changed during the upload" in err
        assert "f" not in [e.name for e in c.ls().entries]


# ------------------------------------------------------------ ftpc: errors and output


def test_cli_error_exit_codes(server, monkeypatch, capsys, tmp_path):
    alice = new_user(server)
    small = new_user(server, quota=1000)
    src = tmp_path / "f"
    src.write_bytes(b"x" * 2000)
    cases = [
        (User(server, alice.name, "wrong password"), ["ls"], 4, "AUTH_FAILED"),
        (User(server, "nobody", "whatever1"), ["ls"], 4, "AUTH_FAILED"),
        (small, ["put", str(src)], 6, "QUOTA_EXCEEDED"),
        (alice, ["get", "missing", str(tmp_path / "m")], 5, "NOT_FOUND"),
        (alice, ["put", str(tmp_path / "no-such-local")], 5, "NOT_FOUND"),
        (alice, ["rmdir", "/"], None, None),
        (alice, ["put", "--bogus"], 2, "USAGE"),
        (User(server, alice.name, ""), ["--port", "1", "ls"], 3, "CONNECTION_FAILED"),
    ]
    for who, args, status, code in cases:
        got, out, err = run_main(monkeypatch, capsys, who, *args)
        if status is None:
            assert got != 0 and err.startswith("ftpc: error: ")
            continue
        assert (got, out) == (status, ""), (args, err)
        assert err.startswith(f"ftpc: error: {code}: ") and err.count("\n") == 1, err
    assert "missing" in run_main(monkeypatch, capsys, alice, "rm", "missing")[2]
    assert run_main(monkeypatch, capsys, alice, "put", str(src))[0] == 0
    assert run_main(monkeypatch, capsys, alice, "put", str(src))[0] == 8      # EXISTS
    assert run_main(monkeypatch, capsys, alice, "put", "--overwrite", str(src))[0] == 0


def test_cli_json_and_clean_stdout(monkeypatch, capsys, user, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"hello")
    # stdout is a pipe here: progress and notices must stay on stderr
    put = ftpc(user, "put", str(src), "dir-f")
    assert put.returncode == 0 and put.stdout.count("\n") == 1 and "%" not in put.stderr
    run = ftpc(user, "ls", "--json")                # global options after the command too
    assert json.loads(run.stdout)["path"] == "/" and run.stderr == ""
    for args in (["ls", "-l"], ["stat", "dir-f"], ["quota"], ["hash", "dir-f"], ["uploads"],
                 ["pwd"], ["whoami"], ["ping"], ["mkdir", "-p", "a/b"], ["get", "dir-f",
                 str(tmp_path / "back")], ["mv", "dir-f", "a/b"], ["rm", "a/b/dir-f"],
                 ["put", "-r", str(tmp_path), "up"]):
        status, out, err = run_main(monkeypatch, capsys, user, "--json", *args)
        assert (status, err) == (0, ""), args
        json.loads(out)                             # exactly one document
    status, out, err = run_main(monkeypatch, capsys, user, "--json", "stat", "nope")
    assert status == 5 and json.loads(out)["error"]["code"] == "NOT_FOUND"
    assert err.startswith("ftpc: error: NOT_FOUND: nope")


def test_cli_interrupt_exits_130(user, tmp_path):
    src = tmp_path / "f"
    # 12 s of transfer at 2 MB/s: the put is still running when the signal comes, even
    # on a loaded machine where seeing its first offset takes seconds (it ends at SIGINT).
    src.write_bytes(os.urandom(24 * MiB))
    proc = spawn(user, "put", str(src), "--limit-rate", "2M")
    with user.client() as c:
        wait_for(lambda: any(u.offset > 0 for u in c.uploads()))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("ftpc: error: INTERRUPTED: ")


def test_cli_register(server_factory, monkeypatch, capsys):
    d = server_factory(allow_register=True)
    newbie = User(d, "newbie", "a fine password")
    status, out, err = run_main(monkeypatch, capsys, newbie, "register")
    assert (status, out.strip()) == (0, "registered newbie"), err
    status, out, err = run_main(monkeypatch, capsys, newbie, "register")
    assert status == 1 and "USER_EXISTS" in err
    assert run_main(monkeypatch, capsys, newbie, "whoami")[1].strip() == "newbie"


def test_cli_help_lists_exit_codes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for line in ("0   success", "4   authentication", "7   integrity", "130 interrupted"):
        assert line in out


def test_cli_shell_session(user, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    (tmp_path / "hello.txt").write_bytes(b"hello shell")
    child = pexpect.spawn(sys.executable, ["-m", "client.cli", "shell"], cwd=str(tmp_path),
                          env={**user.env(TERM="dumb"), "PYTHONPATH": str(REPO)},
                          encoding="utf-8", timeout=20)
    try:
        child.expect_exact("ftp:/> ")
        child.sendline("put hello.txt")
        child.expect(r"hello\.txt -> /hello\.txt \(11 bytes, verified\)")
        child.expect_exact("ftp:/> ")
        child.sendline("mkdir sub")
        child.expect_exact("ftp:/> ")
        child.sendline("cd sub")
        child.expect_exact("ftp:/sub> ")
        child.sendline("cd ..")
        child.expect_exact("ftp:/> ")
        child.sendline("ls")
        child.expect(r"hello\.txt\s+sub/")
        child.expect_exact("ftp:/> ")
        child.send("get hel\t")                     # tab completes the remote name
        child.expect_exact("hello.txt")
        child.sendline(" copy.txt")
        child.expect(r"/hello\.txt -> copy\.txt \(11 bytes, verified\)")
        child.expect_exact("ftp:/> ")
        child.sendline("rm nothing-here")
        child.expect_exact("ftpc: error: NOT_FOUND: nothing-here")
        child.expect_exact("ftp:/> ")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert (tmp_path / "copy.txt").read_bytes() == b"hello shell"


def test_put_waits_out_a_brief_upload_busy(server, tmp_path):
    """The daemon may still hold the upload of a connection that just dropped:
    the next put waits briefly for it instead of failing with UPLOAD_BUSY."""
    import threading

    import protocol.messages as m
    from tests.wire import Wire

    server.add_user("busy", "correct horse")
    data = os.urandom(MiB)
    src = tmp_path / "f"
    src.write_bytes(data)
    holder = Wire(server.host, server.port)
    holder.logged_in("busy", "correct horse")
    assert isinstance(holder.call(m.Put(id=1, path="f", size=len(data), defer_sha256=True)),
                      m.PutReady)
    threading.Timer(0.3, holder.close).start()       # the old connection goes away soon
    with Client(server.host, server.port, digests=SHA256_ONLY) as c:
        c.login("busy", "correct horse")
        assert c.put(src).sha256 == sha(data)
