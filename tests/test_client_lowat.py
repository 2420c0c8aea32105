"""client/lowat.py: a plain-text download waits for many bytes per receive
(SO_RCVLOWAT), never for more than the DATA frame under way still owes, never
into a false timeout on a slow link, and control replies are read as before."""

from __future__ import annotations

import os
import socket

import pytest

from client import lowat
from tests.test_client_fakeserver import serve_fake
from tests.test_client_lib import logged_in


@pytest.fixture
def fake():
    yield from serve_fake()


@pytest.fixture
def thresholds(monkeypatch) -> list[int]:
    """Every SO_RCVLOWAT value the client sets."""
    seen: list[int] = []
    set_ = lowat.ReceiveThreshold._set

    def recording(self, sock: socket.socket, value: int) -> None:
        seen.append(value)
        set_(self, sock, value)

    monkeypatch.setattr(lowat.ReceiveThreshold, "_set", recording)
    return seen


def test_a_download_waits_for_more_than_one_byte_per_receive(fake, thresholds, tmp_path):
    data = os.urandom(4 << 20)
    fake.files["/f"] = data
    c = logged_in(fake)
    c.get("f", tmp_path / "f")
    c.close()
    assert (tmp_path / "f").read_bytes() == data
    assert max(thresholds) > 1 and max(thresholds) <= lowat.MOST


def test_a_receive_never_waits_for_more_than_the_frame_still_owes(fake, thresholds, tmp_path):
    fake.get_frame = 10_000                  # frames smaller than the threshold
    data = os.urandom(95_000)                # the last one 5,000 bytes
    fake.files["/f"] = data
    c = logged_in(fake)
    c.get("f", tmp_path / "f")
    c.close()
    assert (tmp_path / "f").read_bytes() == data
    assert max(thresholds) <= 10_000


def test_control_replies_after_a_download_are_read_byte_by_byte(fake, tmp_path):
    fake.files["/f"] = os.urandom(2 << 20)
    c = logged_in(fake)
    c.get("f", tmp_path / "f")
    sock = c._require().sock
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
    assert c.pwd() == "/"
    c.close()


def test_a_slow_link_never_turns_the_threshold_into_a_timeout(fake, tmp_path, monkeypatch):
    # 100 KiB/s against a 0.5 s timeout: a fixed 256 KiB (or whole-frame) wait would
    # time out; the adapting one must not.
    monkeypatch.setattr(lowat, "START", lowat.MOST)
    fake.trickle = (2048, 0.02)
    data = os.urandom(160 * 1024)
    fake.files["/f"] = data
    c = logged_in(fake)
    c._require().sock.settimeout(0.5)
    c.get("f", tmp_path / "f")
    c.close()
    assert (tmp_path / "f").read_bytes() == data
