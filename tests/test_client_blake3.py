"""The client with BLAKE3 negotiated (issue 17): asked for with ``FAST_DIGESTS``.

Round trips verified with BLAKE3 (through the pipelined download hash, too),
a download whose bytes do not match the announced BLAKE3 refused, and
``ftpc hash --blake3`` printing what ``b3sum`` prints while plain ``ftpc hash``
keeps printing the SHA-256 of ``sha256sum``."""

from __future__ import annotations

import os
import sqlite3

import pytest

from client import FAST_DIGESTS, IntegrityError
from client import transfer as transfer_module
from client.client import Client
from tests import test_client_e2e as e2e
from tests.test_client_e2e import MiB, b3, run_main, sha

# ftpc keeps its session token under HOME: a fresh one per test (autouse fixture).
from tests.test_client_everyday import private_home  # noqa: F401

daemon = e2e.daemon         # the fixtures: a daemon for this module, a user on it
user = e2e.user


def default_client(user) -> Client:
    """A client that offers BLAKE3 and SHA-256 (as ``ftpc --digest blake3`` makes it)."""
    c = Client(user.daemon.host, user.daemon.port, timeout=10, digests=FAST_DIGESTS)
    c.connect()
    c.login(user.name, user.password)
    return c


@pytest.mark.parametrize("size", [0, MiB + 1, transfer_module.PIPELINE_MIN + 3 * MiB + 7])
@pytest.mark.parametrize("defer_hash", [True, False], ids=["deferred", "upfront"])
def test_a_round_trip_negotiates_blake3_and_verifies_with_it(user, tmp_path, size,
                                                             defer_hash):
    data = os.urandom(size)
    src = tmp_path / "src"
    src.write_bytes(data)
    with default_client(user) as c:
        assert c._require().digest() == "blake3"
        put = c.put(src, f"b{size}", defer_hash=defer_hash)
        assert (put.blake3, put.sha256) == (b3(data), None)
        got = c.get(put.path, tmp_path / "dst")
        assert (got.blake3, got.sha256) == (b3(data), None)
        streamed = bytearray()
        s = c.get_stream(put.path, streamed.extend, verify=True)
        assert s.blake3 == b3(data) and bytes(streamed) == data
        assert c.hash(put.path).sha256 == sha(data)          # hash stays SHA-256
    assert (tmp_path / "dst").read_bytes() == data


def test_a_blake3_download_resumes_its_part_and_hashes_the_whole_file(user, tmp_path):
    data = os.urandom(transfer_module.PIPELINE_MIN + 2 * MiB + 3)
    (tmp_path / "src").write_bytes(data)
    (tmp_path / "dst.part").write_bytes(data[:MiB + 11])
    with default_client(user) as c:
        c.put(tmp_path / "src", "resume.bin")
        got = c.get("resume.bin", tmp_path / "dst")
    assert got.resumed_from == MiB + 11 and got.blake3 == b3(data)
    assert (tmp_path / "dst").read_bytes() == data


def test_a_download_that_does_not_match_the_announced_blake3_is_refused(user, tmp_path):
    data = os.urandom(2 * MiB + 1)
    (tmp_path / "src").write_bytes(data)
    with default_client(user) as c:
        c.put(tmp_path / "src", "tampered.bin")             # its BLAKE3 is cached at commit
        # The server now announces another digest than its bytes have (a bad disk, a
        # tampered cache): the client must notice, as it does under SHA-256.
        with sqlite3.connect(user.daemon.root / "users.db") as db:
            assert db.execute("UPDATE hashes SET blake3 = ? WHERE blake3 = ?",
                              ("0" * 64, b3(data))).rowcount == 1
        with pytest.raises(IntegrityError):
            c.get("tampered.bin", tmp_path / "dst")
    assert not (tmp_path / "dst").exists() and not (tmp_path / "dst.part").exists()


def test_ftpc_hash_blake3_prints_what_b3sum_prints(monkeypatch, capsys, user, tmp_path):
    data = os.urandom(70_000)
    (tmp_path / "h.bin").write_bytes(data)
    status, _, err = run_main(monkeypatch, capsys, user, "put", str(tmp_path / "h.bin"))
    assert status == 0, err
    status, out, err = run_main(monkeypatch, capsys, user, "hash", "--blake3", "h.bin")
    assert status == 0, err
    assert out == f"{b3(data)}  /h.bin\n"
    status, out, _ = run_main(monkeypatch, capsys, user, "hash", "h.bin")
    assert out == f"{sha(data)}  /h.bin\n"                 # as sha256sum, by default


def test_a_default_client_verifies_with_sha256_and_reports_it(user, tmp_path):
    data = os.urandom(5000)
    (tmp_path / "src").write_bytes(data)
    with Client(user.daemon.host, user.daemon.port, timeout=10) as c:
        c.login(user.name, user.password)
        assert c._require().digest() == "sha256"
        put = c.put(tmp_path / "src", "plain.bin")
        assert (put.sha256, put.blake3) == (sha(data), None)
        got = c.get("plain.bin", tmp_path / "dst")
        assert (got.sha256, got.blake3) == (sha(data), None)


def test_ftpc_digest_blake3_verifies_with_blake3_and_reports_it(monkeypatch, capsys, user,
                                                                tmp_path):
    import json

    data = os.urandom(70_000)
    (tmp_path / "d.bin").write_bytes(data)
    status, out, err = run_main(monkeypatch, capsys, user, "--json", "--digest", "blake3",
                                "put", str(tmp_path / "d.bin"))
    assert status == 0, err
    assert json.loads(out)["blake3"] == b3(data)
    monkeypatch.setenv("FTPC_DIGEST", "blake3")
    status, out, err = run_main(monkeypatch, capsys, user, "--json", "get", "d.bin",
                                str(tmp_path / "back.bin"))
    assert status == 0, err
    assert json.loads(out)["blake3"] == b3(data)


def test_ftpc_refuses_an_unknown_digest_in_the_environment(monkeypatch, capsys, user):
    monkeypatch.setenv("FTPC_DIGEST", "md5")
    status, _, err = run_main(monkeypatch, capsys, user, "ls")
    assert status == 2 and "FTPC_DIGEST" in err
