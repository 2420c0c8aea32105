"""``ftpc`` streams and metadata end to end (issue 15): ``put -`` without
spooling, ``get FILE -`` into a pipe, mtime and ``-p`` both ways, and tree
copies that recognise finished files by size and mtime."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys

import pytest

from client import Client
from client.connection import Connection
from client.errors import QuotaError
from client.stream_put import put_stream
from client.tree import sync_put
from tests import test_client_e2e as e2e
from tests.test_client_e2e import REPO, MiB, ftpc, new_user, sha

daemon = e2e.daemon
user = e2e.user
OLD = 1_500_000_000.25


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "NETRC", "FTPC_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def shell(user, cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, env=user.env(), cwd=REPO, capture_output=True,
                          timeout=60, **kw)


def test_printf_into_put_dash_is_streamed_and_verified(user, daemon):
    run = shell(user, f"printf 'hello stream\\n' | {sys.executable} -m client.cli --json "
                      "put - s.txt")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["sha256"] == sha(b"hello stream\n")
    with user.client() as c:
        assert c.hash("s.txt").sha256 == sha(b"hello stream\n")
    assert f"user={user.name} path=/s.txt size=stream" in daemon.log()


def test_get_dash_into_sha256sum_equals_the_source(user, tmp_path):
    data = os.urandom(3 * MiB + 11)
    (tmp_path / "src").write_bytes(data)
    assert ftpc(user, "put", str(tmp_path / "src"), "g.bin").returncode == 0
    run = shell(user, f"{sys.executable} -m client.cli get g.bin - | sha256sum", text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == sha(data)


def test_a_stream_over_the_quota_is_refused_and_leaves_nothing(daemon):
    small = new_user(daemon, quota=1 * MiB)
    run = shell(small, f"head -c {3 * MiB} /dev/zero | {sys.executable} -m client.cli "
                       "put - big.bin", text=True)
    assert run.returncode != 0 and "QUOTA_EXCEEDED" in run.stderr
    with small.client() as c:
        assert "big.bin" not in [e.name for e in c.ls().entries]
        assert not c.uploads() and c.quota().reserved == 0 and c.quota().used == 0


def test_a_stream_put_raises_quota_error_in_the_library(daemon):
    small = new_user(daemon, quota=1 * MiB)
    with small.client() as c, pytest.raises(QuotaError):
        put_stream(c, io.BytesIO(b"z" * (2 * MiB)), "q.bin")


def test_put_dash_spools_when_the_server_cannot_stream(user, monkeypatch):
    monkeypatch.setattr(Connection, "supports", lambda self, feature: False)
    with user.client() as c:
        result = put_stream(c, io.BytesIO(b"spooled"), "old.txt")
        assert result.sha256 == sha(b"spooled") and c.hash("old.txt").sha256 == sha(b"spooled")


def test_put_and_get_keep_the_modification_time(user, tmp_path):
    src = tmp_path / "m.txt"
    src.write_bytes(b"times")
    os.utime(src, (OLD, OLD))
    assert ftpc(user, "put", str(src)).returncode == 0
    with user.client() as c:
        assert c.stat("m.txt").entry.mtime == pytest.approx(OLD, abs=1e-3)
    assert ftpc(user, "get", "m.txt", str(tmp_path / "back.txt")).returncode == 0
    assert os.stat(tmp_path / "back.txt").st_mtime == pytest.approx(OLD, abs=1e-3)


def test_ls_l_shows_the_remote_mtime(user, tmp_path):
    src = tmp_path / "l.txt"
    src.write_bytes(b"x")
    os.utime(src, (OLD, OLD))
    assert ftpc(user, "put", str(src)).returncode == 0
    run = ftpc(user, "ls", "-l")
    assert "2017-07-14" in run.stdout, run.stdout


def test_p_keeps_permission_bits_both_ways(user, tmp_path):
    src = tmp_path / "x.sh"
    src.write_bytes(b"#!/bin/sh\n")
    src.chmod(0o750)
    assert ftpc(user, "put", "-p", str(src)).returncode == 0
    assert ftpc(user, "get", "-p", "x.sh", str(tmp_path / "y.sh")).returncode == 0
    assert stat.S_IMODE(os.stat(tmp_path / "y.sh").st_mode) == 0o750


def test_a_second_identical_put_r_sends_nothing_and_hashes_nothing(user, tmp_path, monkeypatch):
    src = tmp_path / "t"
    (src / "d").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(200_000))
    (src / "d" / "b.txt").write_bytes(b"beta")
    assert ftpc(user, "put", "-r", str(src), "tree").returncode == 0
    run = ftpc(user, "--json", "put", "-r", str(src), "tree")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["bytes_sent"] == 0

    def no_hash(self, path):
        raise AssertionError(f"hashed {path}")
    monkeypatch.setattr(Client, "hash", no_hash)
    with user.client() as c:
        report = sync_put(c, str(src), "tree")
    assert report.bytes_sent == 0 and report.count("skip") == 2


def test_put_r_with_checksum_compares_sha256(user, tmp_path):
    src = tmp_path / "t"
    src.mkdir()
    (src / "a.txt").write_bytes(b"same size")
    assert ftpc(user, "put", "-r", str(src), "tree").returncode == 0
    (src / "a.txt").write_bytes(b"SAME SIZE")               # same size, new content...
    os.utime(src / "a.txt", (os.stat(src / "a.txt").st_atime,
                             os.stat(src / "a.txt").st_mtime))
    with user.client() as c:
        mtime = c.stat("tree/a.txt").entry.mtime
    os.utime(src / "a.txt", (mtime, mtime))                  # ...and the same mtime
    run = ftpc(user, "--json", "put", "-r", "--checksum", "--overwrite", str(src), "tree")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["bytes_sent"] == 9


def test_mput_keeps_the_modification_time_of_small_files(user, tmp_path):
    src = tmp_path / "small.txt"
    src.write_bytes(b"inline")
    os.utime(src, (OLD, OLD))
    assert ftpc(user, "mput", str(src)).returncode == 0
    with user.client() as c:
        assert c.stat("small.txt").entry.mtime == pytest.approx(OLD, abs=1e-3)
