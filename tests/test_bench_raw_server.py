"""The raw baseline server (bench.raw_server): its stat, list and put answer like
the requests they stand for, and a name never leaves its root."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from bench import clients
from bench.raw_server import _serve_connection, confined


@pytest.fixture
def raw(tmp_path: Path):
    """One raw connection served by a thread (durable puts), and its root."""
    root = tmp_path / "root"
    (root / "alice" / "folder").mkdir(parents=True)
    ours, theirs = socket.socketpair()
    server = threading.Thread(target=_serve_connection, args=(theirs, str(root), True),
                              daemon=True)
    server.start()
    yield ours, root
    ours.close()
    server.join(timeout=10)


def test_raw_stat_answers_the_size_and_refuses_a_missing_file(raw) -> None:
    sock, root = raw
    (root / "alice" / "folder" / "a.bin").write_bytes(b"x" * 1234)
    assert clients.raw_stat(sock, "alice/folder/a.bin") == 1234
    with pytest.raises(FileNotFoundError):
        clients.raw_stat(sock, "alice/folder/none.bin")


def test_raw_list_names_every_entry_with_its_size(raw) -> None:
    sock, root = raw
    for i in range(3):
        (root / "alice" / "folder" / f"f{i}.bin").write_bytes(b"y" * (i + 1))
    lines = clients.raw_list(sock, "alice/folder")
    assert sorted(line.split("\t")[:2] for line in lines) == [
        ["f0.bin", "1"], ["f1.bin", "2"], ["f2.bin", "3"]]


def test_raw_durable_put_lands_in_the_named_folder(raw, tmp_path: Path) -> None:
    sock, root = raw
    local = tmp_path / "small.bin"
    local.write_bytes(b"z" * 4096)
    clients.raw_put(sock, local, "alice/probe.bin")
    assert (root / "alice" / "probe.bin").read_bytes() == b"z" * 4096


@pytest.mark.parametrize("name", ["../escape", "alice/../../escape", "", "/", "a\0b"])
def test_raw_server_refuses_a_name_outside_its_root(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConnectionError):
        confined(str(tmp_path), name)


def test_raw_server_keeps_a_leading_slash_inside_its_root(tmp_path: Path) -> None:
    assert confined(str(tmp_path), "/alice/x.bin") == str(tmp_path / "alice" / "x.bin")
