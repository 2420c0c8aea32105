"""Pieces of ``ftpc`` on their own: failure mapping, progress, rate limit, the
shell's parsing and completion, and CLI retries -- against the fake server."""

from __future__ import annotations

import io
import json
import os
import re
import time

import pytest

import client.cli as cli
from client import Client, ConnectionLost, IntegrityError, error_for
from client.commands import App
from client.errors import (
    AuthError,
    FtpError,
    NotFoundError,
    PathError,
    QuotaError,
    RequestError,
    ServerError,
)
from client.failures import EXIT_TABLE, UsageError, describe
from client.output import Output
from client.progress import Progress, RateLimit, human_size, parse_rate
from client.shell import Shell
from protocol import ERROR_CODES, FATAL_CODES
from protocol import messages as m
from tests.test_client_fakeserver import serve_fake


@pytest.fixture
def fake():
    yield from serve_fake(max_data=8192)


def env_for(monkeypatch: pytest.MonkeyPatch, server) -> None:
    monkeypatch.setenv("FTPC_HOST", server.host)
    monkeypatch.setenv("FTPC_PORT", str(server.port))
    monkeypatch.setenv("FTPC_USER", "alice")
    monkeypatch.setenv("FTPC_PASSWORD", "secret")


# ------------------------------------------------------------ failures


def test_every_error_code_has_a_family():
    for code in ERROR_CODES:
        exc = error_for(code, "msg")
        assert exc.code == code and exc.message == "msg"
        if code in FATAL_CODES:
            assert isinstance(exc, ConnectionLost)
        else:
            assert isinstance(exc, ServerError)


@pytest.mark.parametrize(("exc", "code", "status"), [
    (AuthError("LOCKED_OUT", "later"), "LOCKED_OUT", 4),
    (NotFoundError("NOT_FOUND", "x"), "NOT_FOUND", 5),
    (QuotaError("NO_SPACE", "disk"), "NO_SPACE", 6),
    (IntegrityError("INTEGRITY", "bad"), "INTEGRITY", 7),
    (PathError("NOT_EMPTY", "x"), "NOT_EMPTY", 8),
    (ConnectionLost("TIMEOUT", "slow"), "TIMEOUT", 3),
    (RequestError("BAD_REQUEST", "x"), "BAD_REQUEST", 1),
    (UsageError("bad"), "USAGE", 2),
    (KeyboardInterrupt(), "INTERRUPTED", 130),
    (FileNotFoundError(2, "No such file or directory", "a"), "NOT_FOUND", 5),
    (IsADirectoryError(21, "is a folder", "d"), "LOCAL_PATH", 8),
    (PermissionError(13, "Permission denied", "p"), "LOCAL_IO", 1),
])
def test_describe(exc, code, status):
    failure = describe(exc)
    assert (failure.code, failure.exit_status) == (code, status)
    assert failure.line().startswith(f"ftpc: error: {code}: ")
    assert "\n" not in failure.line()


def test_exit_table_is_documented_in_the_module():
    rows = re.findall(r"^\s+(\d+)\s+(\S.*)$", EXIT_TABLE, re.M)
    doc = cli.__doc__ or ""
    for status, text in rows:
        assert re.search(rf"^\s+{status}\s+{re.escape(text)}$", doc, re.M), (status, text)


# ------------------------------------------------------------ progress


def test_parse_rate():
    assert parse_rate("500k") == 500 * 1024
    assert parse_rate("2M") == 2 * 1024 * 1024
    assert parse_rate("1.5MiB") == 1536 * 1024
    assert parse_rate("100") == 100
    for bad in ("", "x", "0", "-1k", "5q"):
        with pytest.raises(ValueError):
            parse_rate(bad)
    assert human_size(512) == "512 B" and human_size(3 << 20) == "3.0 MiB"


def test_rate_limit_sleeps():
    limit = RateLimit(1024 * 1024)
    start = time.monotonic()
    limit(0)
    limit(200 * 1024)
    assert time.monotonic() - start >= 0.15


def test_progress_bar_shows_resume():
    stream = io.StringIO()
    with Progress("f", show=True, stream=stream) as bar:
        bar(5, 10, 5)
        bar(10, 10, 5)
    assert "resuming from 5" in stream.getvalue() and "100%" in stream.getvalue()
    info = io.StringIO()
    hidden = Progress("f", show=False, info=info)
    hidden(7, 10, 7)
    hidden(10, 10, 7)
    assert info.getvalue() == "ftpc: f: resuming from 7 bytes\n" and hidden.bar is None


def test_json_error_document():
    out, err = io.StringIO(), io.StringIO()
    Output(json_mode=True, stdout=out, stderr=err).error(describe(NotFoundError("NOT_FOUND",
                                                                                 "gone")))
    assert json.loads(out.getvalue()) == {"error": {"code": "NOT_FOUND", "message": "gone",
                                                    "exit_status": 5}}
    assert err.getvalue() == "ftpc: error: NOT_FOUND: gone\n"


# ------------------------------------------------------------ CLI against the fake


def test_cli_retries_a_dropped_download(fake, monkeypatch, capsys, tmp_path):
    env_for(monkeypatch, fake)
    data = os.urandom(50_000)
    fake.put_file("/f", data)
    fake.drop_get_after = 20_000
    assert cli.main(["--retries", "0", "get", "f", str(tmp_path / "f")]) == 3
    assert (tmp_path / "f.part").stat().st_size == 20_000
    capsys.readouterr()
    fake.drop_get_after = 10_000
    assert cli.main(["--json", "--retries", "2", "get", "f", str(tmp_path / "f")]) == 0
    out, err = capsys.readouterr()
    assert "reconnecting (retry 1 of 2)" in err
    result = json.loads(out)
    assert result["resumed_from"] == 20_000 and result["attempts"] == 2
    assert (tmp_path / "f").read_bytes() == data


def test_cli_lying_server_is_an_integrity_failure(fake, monkeypatch, capsys, tmp_path):
    env_for(monkeypatch, fake)
    fake.put_file("/f", b"data")
    fake.lie_sha = True
    assert cli.main(["get", "f", str(tmp_path / "f")]) == 7
    assert capsys.readouterr().err.startswith("ftpc: error: INTEGRITY: ")
    assert not (tmp_path / "f").exists()


def test_cli_get_fsyncs_only_with_the_flag(fake, monkeypatch, capsys, tmp_path):
    env_for(monkeypatch, fake)
    fake.put_file("/f", b"data")
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    assert cli.main(["get", "f", str(tmp_path / "a")]) == 0
    assert calls == []
    assert cli.main(["get", "--fsync", "f", str(tmp_path / "b")]) == 0
    assert len(calls) == 2                         # the .part, then the folder
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == b"data"
    assert cli.main(["put", "--fsync", str(tmp_path / "a")]) == 2     # a get option only


@pytest.mark.parametrize(("flags", "declared", "commits"), [
    ([], False, 1), (["--hash-first"], True, 0), (["--no-verify"], False, 0)])
def test_cli_put_hashes_while_sending_unless_asked_to_hash_first(
        fake, monkeypatch, capsys, tmp_path, flags, declared, commits):
    env_for(monkeypatch, fake)
    src = tmp_path / "f"
    src.write_bytes(os.urandom(20_000))
    assert cli.main(["--json", "put", *flags, str(src)]) == 0
    (put,) = fake.requests_of(m.Put)
    assert (put.sha256 is not None) == declared
    assert put.defer_sha256 == (not flags)
    assert len(fake.requests_of(m.Commit)) == commits
    assert fake.files["/f"] == src.read_bytes()


def test_cli_needs_a_user(fake, monkeypatch, capsys):
    env_for(monkeypatch, fake)
    monkeypatch.delenv("FTPC_USER")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["ls"]) == 2
    assert "no user" in capsys.readouterr().err
    assert cli.main(["--port", "0", "ls"]) == 2
    assert cli.main(["--retries", "-1", "ls"]) == 2


# ------------------------------------------------------------ shell


@pytest.fixture
def shell(fake, capsys):
    c = Client(fake.host, fake.port, timeout=5)
    c.connect()
    c.login("alice", "secret", want_token=True)
    out = Output()
    yield Shell(App(c, out))
    c.close()


def test_shell_completes_commands_and_names(shell, fake, tmp_path, monkeypatch):
    fake.put_file("/docs/readme.txt", b"r")
    fake.put_file("/data.bin", b"d")
    assert shell.completions("", "p") == ["ping ", "put ", "pwd "]
    assert shell.completions("get ", "d") == ["data.bin", "docs/"]
    assert shell.completions("cd ", "") == ["docs/"]
    assert shell.completions("rm ", "docs/r") == ["docs/readme.txt"]
    lists = len(fake.requests_of(m.Ls))
    shell.completions("rm ", "d")                    # cached: no new listing
    assert len(fake.requests_of(m.Ls)) == lists
    (tmp_path / "local.txt").write_bytes(b"")
    (tmp_path / "locdir").mkdir()
    monkeypatch.chdir(tmp_path)
    assert shell.completions("put ", "loc") == ["local.txt", "locdir/"]
    assert shell.completions("lcd ", "loc") == ["locdir/"]
    assert shell.completions("get data.bin ", "loc") == ["local.txt", "locdir/"]


def test_shell_lines(shell, fake, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake.put_file("/d/x", b"x")
    assert shell.execute("cd d") and shell.prompt == "ftp:/d> "
    assert shell.execute("nonsense")
    assert shell.execute("rm 'unbalanced")
    assert shell.execute("rm missing")
    assert shell.execute("ls -z")
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[2].strip() for line in err] == ["USAGE", "USAGE", "NOT_FOUND",
                                                            "USAGE"]
    assert shell.execute("help") and "lcd" in capsys.readouterr().out
    assert shell.execute("help put") and "--overwrite" in capsys.readouterr().out
    assert shell.execute("lcd " + str(tmp_path)) and shell.execute("lpwd")
    assert capsys.readouterr().out.splitlines()[-1] == str(tmp_path)
    assert not shell.execute("quit") and not shell.execute("exit")


def test_shell_reconnects_after_a_drop(shell, fake, capsys):
    fake.put_file("/d/x", b"x")
    shell.execute("cd d")
    shell.app.client._require().close()              # the connection drops
    assert shell.execute("pwd")
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1] == "/d"       # same session, same folder
    assert "reconnecting" in err
    assert fake.requests_of(m.Login)[-1].token is not None


def test_ftperror_str():
    assert str(FtpError("X", "y")) == "X: y"


def test_a_reconnecting_clients_quit_is_encoded_once_and_still_says_goodbye(fake,
                                                                            monkeypatch):
    """``quit`` carries the same id every time: its frame is built, validated and
    encoded once (issue 17), and the server still hears one quit per connection."""
    import client.client as client_module
    made: list[object] = []
    encode = client_module.encode

    def counted(message: object) -> bytes:
        made.append(message)
        return encode(message)             # type: ignore[arg-type]
    monkeypatch.setattr(client_module, "encode", counted)
    client_module._quit_frame.cache_clear()
    for _ in range(3):
        c = Client(fake.host, fake.port, timeout=10)
        c.connect_login("alice", "secret")
        c.quit()
        assert not c.connected
    assert [type(x) for x in made] == [m.Quit]
    assert len(fake.requests_of(m.Quit)) == 3


# ------------------------------------------------------------------ dialling


def test_an_ip_literal_is_dialled_without_a_name_lookup(monkeypatch):
    import socket

    from client import connection

    def no_lookup(*args, **kwargs):
        raise AssertionError("getaddrinfo called for an IP literal")

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
        with connection._connect("127.0.0.1", port, 5.0) as sock:
            peer, _ = listener.accept()
            peer.close()
            assert sock.getpeername() == ("127.0.0.1", port)
            assert sock.gettimeout() == 5.0


def test_a_host_name_is_still_looked_up(monkeypatch):
    import socket

    from client import connection

    asked: list[str] = []
    real = socket.getaddrinfo

    def recording(host, *args, **kwargs):
        asked.append(host)
        return real(host, *args, **kwargs)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        monkeypatch.setattr(socket, "getaddrinfo", recording)
        try:
            sock = connection._connect("localhost", port, 5.0)
        except OSError:
            pass                    # (localhost may resolve to ::1 first, not listened on)
        else:
            sock.close()
        assert asked == ["localhost"]


def test_a_refused_ip_literal_is_a_clear_connection_failure():
    import socket

    from client.connection import Connection
    from client.errors import ConnectionLost

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    with pytest.raises(ConnectionLost) as caught:
        Connection.open("127.0.0.1", port, 5.0)
    assert caught.value.code == "CONNECTION_FAILED"
    assert f"127.0.0.1:{port}" in str(caught.value)
