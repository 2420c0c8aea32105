"""Disk full during an upload: a clear NO_SPACE, a daemon that keeps serving, and a
partial that resumes to a verified file once space is back.

The real thing runs on a small tmpfs mounted as the daemon's data folder (the
test is skipped, with its reason, where mounting is not permitted).  The second
test injects ENOSPC at the OS-call boundary (``os.write`` of partial files) in an
in-process daemon, so the same promise is checked on any machine.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import protocol.messages as m
from tests.test_hostile_support import alive, close_daemon, open_daemon
from tests.wire import Wire

USER, PASSWORD = "frank", "pw-frank"
SIZE = 6 << 20


def mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                        str(where)], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot mount a tmpfs here ({exc}; {detail.decode(errors='replace')}); "
                    "test_disk_full_injected_at_the_os_boundary covers ENOSPC instead")


def unmount(where: Path) -> None:
    result = subprocess.run(["umount", str(where)], capture_output=True, timeout=10)
    if result.returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


def upload_until_refused(wire: Wire, path: str, data: bytes) -> tuple[Any, Any]:
    """put + all the data (the daemon drops what follows its error); returns (ready, reply)."""
    ready = wire.call(m.Put(id=wire.next_id(), path=path, size=len(data),
                            sha256=hashlib.sha256(data).hexdigest()))
    assert isinstance(ready, m.PutReady), ready
    wire.send_data(data[ready.offset:], frame=256 * 1024)
    return ready, wire.recv_reply()


def test_disk_full_on_a_tmpfs_gives_no_space_and_the_upload_resumes(tmp_path):
    """An 8 MiB tmpfs is the daemon's data folder, a filler leaves ~3 MiB free, a 6 MiB
    upload runs out of space: the client gets NO_SPACE for its put, the same and a new
    connection are still served, the partial keeps what was written; after the filler is
    deleted the upload resumes from that offset and commits with a verified SHA-256."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "8m")
    daemon = None
    try:
        daemon = open_daemon(disk / "root")
        daemon.add_user(USER, PASSWORD)
        st = os.statvfs(disk)
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - (3 << 20)))
        data = os.urandom(SIZE)
        with Wire(daemon.host, daemon.port, timeout=20) as wire:
            wire.logged_in(USER, PASSWORD)
            ready, reply = upload_until_refused(wire, "big.bin", data)
            assert reply.code == "NO_SPACE" and reply.id == ready.id, reply
            assert isinstance(wire.call(m.Ping(id=wire.next_id())), m.Pong)
            assert isinstance(wire.call(m.Quota(id=wire.next_id())), m.QuotaOk)
        with Wire(daemon.host, daemon.port) as other:
            other.logged_in(USER, PASSWORD)
            held = other.call(m.Uploads(id=5)).uploads
            assert isinstance(other.call(m.Ping(id=6)), m.Pong)
        assert [u.path for u in held] == ["/big.bin"] and 0 < held[0].offset < SIZE
        assert not (disk / "root" / "homes" / USER / "big.bin").exists()

        filler.unlink()
        with Wire(daemon.host, daemon.port, timeout=20) as wire:
            wire.logged_in(USER, PASSWORD)
            ready, done = upload_until_refused(wire, "big.bin", data)
            assert ready.offset == held[0].offset and not ready.restarted
            assert isinstance(done, m.PutDone) and done.sha256 == hashlib.sha256(data).hexdigest()
            assert wire.get("big.bin")[1] == data
        assert alive(daemon)
    finally:
        if daemon is not None:
            close_daemon(daemon)
        unmount(disk)


def test_disk_full_injected_at_the_os_boundary(inproc_server, monkeypatch):
    """ENOSPC from ``os.write`` on partial files after 1 MiB (any machine): NO_SPACE for
    the put, the connection is still served, and after "space is freed" the upload resumes
    from the 1 MiB offset to a verified file."""
    daemon = inproc_server()
    daemon.add_user(USER, PASSWORD)
    budget = {"left": 1 << 20, "full": True}
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        if budget["full"] and "/staging/" in os.readlink(f"/proc/self/fd/{fd}"):
            if budget["left"] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            data = memoryview(data)[:budget["left"]]
            budget["left"] -= len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    data = os.urandom(3 << 20)
    with Wire(daemon.host, daemon.port, timeout=20) as wire:
        wire.logged_in(USER, PASSWORD)
        ready, reply = upload_until_refused(wire, "big.bin", data)
        assert reply.code == "NO_SPACE" and reply.id == ready.id, reply
        assert isinstance(wire.call(m.Ping(id=wire.next_id())), m.Pong)
        held = wire.call(m.Uploads(id=wire.next_id())).uploads
        assert [(u.path, u.offset) for u in held] == [("/big.bin", 1 << 20)]
        budget["full"] = False
        ready, done = upload_until_refused(wire, "big.bin", data)
        assert ready.offset == 1 << 20
        assert isinstance(done, m.PutDone) and done.sha256 == hashlib.sha256(data).hexdigest()
    assert (daemon.root / "homes" / USER / "big.bin").read_bytes() == data
