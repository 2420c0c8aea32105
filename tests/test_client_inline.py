"""Client.put_many and ftpc mput: many files, pipelined as inline puts."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from client import Client
from client.errors import ConnectionLost, NotFoundError, PathError
from client.results import PutResult
from tests.daemon import answers_ping
from tests.test_client_e2e import User, run_main

USER, PASSWORD = "pmu", "pw-pmu"


def make_files(folder: Path, count: int, size: int = 5000) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        p = folder / f"f{i:03d}.bin"
        p.write_bytes(os.urandom(size + i))
        paths.append(p)
    return paths


def client_for(daemon: Any) -> Client:
    daemon.add_user(USER, PASSWORD)
    c = Client(daemon.host, daemon.port, timeout=20)
    c.connect()
    c.login(USER, PASSWORD)
    return c


def stored(daemon: Any, name: str) -> bytes:
    return (daemon.root / "homes" / USER / name).read_bytes()


def test_put_many_uploads_every_file_pipelined(server, tmp_path):
    paths = make_files(tmp_path / "src", 120)
    with client_for(server) as c:
        results = c.put_many(paths, verify=False, window=8)
    assert [r.path for r in results] == [f"/{p.name}" for p in paths]
    assert all(isinstance(r, PutResult) and r.sha256 is None for r in results)
    for p in paths:
        assert stored(server, p.name) == p.read_bytes()
    server.wait_for_log("inline result=ok")


def test_put_many_with_verify_declares_each_sha256(server, tmp_path):
    paths = make_files(tmp_path / "src", 10)
    with client_for(server) as c:
        results = c.put_many([(p, f"v-{p.name}") for p in paths], verify=True)
    assert [r.sha256 for r in results] == [hashlib.sha256(p.read_bytes()).hexdigest()
                                           for p in paths]


def test_put_many_reports_each_failure_on_its_own_file(server, tmp_path):
    good = make_files(tmp_path / "src", 3)
    with client_for(server) as c:
        c.put_many([good[0]])
        results = c.put_many([good[0], tmp_path / "missing.bin", (good[1], "no/dir/x"),
                              good[2]])
        assert answers_ping(c)                           # the session is still fine
    assert isinstance(results[0], PathError) and results[0].code == "EXISTS"
    assert isinstance(results[1], FileNotFoundError)
    assert isinstance(results[2], NotFoundError)
    assert isinstance(results[3], PutResult)


def test_put_many_sends_files_above_inline_max_as_resumable_puts(server_factory, tmp_path):
    daemon = server_factory(inline_max=4096)
    small = make_files(tmp_path / "small", 3, size=100)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20_000))
    with client_for(daemon) as c:
        results = c.put_many([small[0], big, small[1], small[2]])
    assert all(isinstance(r, PutResult) for r in results)
    assert stored(daemon, "big.bin") == big.read_bytes()
    log = daemon.wait_for_log("inline result=ok", count=3)
    log = daemon.wait_for_log(r"path=/big\.bin size=20000")
    assert log.count("inline result=ok") == 3
    assert "path=/f001.bin bytes=101 " in log          # the normalised path, as for put


def test_put_many_works_with_a_server_without_inline_puts(server_factory, tmp_path):
    daemon = server_factory(inline_max=0)
    paths = make_files(tmp_path / "src", 4)
    with client_for(daemon) as c:
        results = c.put_many(paths)
    assert all(isinstance(r, PutResult) for r in results)
    log = daemon.wait_for_log(r"close \S+ user=\S+ reason=")    # the session is over
    assert "inline" not in log


def test_put_many_fails_the_unanswered_files_when_the_connection_is_lost(server, tmp_path):
    paths = make_files(tmp_path / "src", 5)
    seen: list[str] = []
    with client_for(server) as c:
        def on_result(local: str, outcome: Any) -> None:
            seen.append(local)
            if len(seen) == 2:
                server.kill()

        results = c.put_many(paths, window=1, on_result=on_result)
    assert all(isinstance(r, PutResult) for r in results[:2])
    assert all(isinstance(r, ConnectionLost) for r in results[2:])
    server.allow_tracebacks = True


def test_ftpc_mput_uploads_every_file(monkeypatch, capsys, server, tmp_path):
    server.add_user(USER, PASSWORD)
    paths = make_files(tmp_path / "src", 5)
    user = User(server, USER, PASSWORD)
    status, out, err = run_main(monkeypatch, capsys, user, "mkdir", "dest")
    assert status == 0, err
    status, out, err = run_main(monkeypatch, capsys, user, "--json", "mput", "--to", "dest",
                                *map(str, paths))
    assert status == 0, err
    data = json.loads(out)
    assert data["failed"] == 0
    assert [f["path"] for f in data["files"]] == [f"/dest/{p.name}" for p in paths]
    assert all(f["sha256"] for f in data["files"])


def test_ftpc_mput_reports_each_failure_and_exits_with_the_first_ones_status(
        monkeypatch, capsys, server, tmp_path):
    server.add_user(USER, PASSWORD)
    paths = make_files(tmp_path / "src", 3)
    user = User(server, USER, PASSWORD)
    assert run_main(monkeypatch, capsys, user, "mput", str(paths[0]))[0] == 0
    status, out, err = run_main(monkeypatch, capsys, user, "mput", *map(str, paths))
    assert status == 8                                  # EXISTS: a path conflict
    assert f"EXISTS: {paths[0]}" in err and "SOME_FAILED: 1 of 3 files failed" in err
    assert f"/{paths[1].name}" in out and f"/{paths[2].name}" in out
