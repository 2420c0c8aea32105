"""Slow clients (slowloris), idle clients and connection floods against a live daemon.

Each test states the limit it pushes (login/idle timeouts, max_connections,
max_connections_per_ip), asserts what the hostile connections got (a TIMEOUT or
TOO_MANY_CONNECTIONS error frame, or a close), and that the daemon stayed up and
kept serving well-behaved clients meanwhile.  Per-address limits are exercised
from several loopback source addresses (127.0.0.2, 127.0.0.3, ...).
"""

from __future__ import annotations

import hashlib
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

import protocol.messages as m
from protocol import DataChunk, MessageStream, ProtocolError, encode
from tests.test_hostile_support import SourceWire, alive, drain, served, wait_until
from tests.wire import Wire, maybe_tls

USER, PASSWORD = "carol", "pw-carol"


def normal_round_trip(host: str, port: int, size: int = 2 << 20) -> str:
    """Log in, upload, download, verify.  Returns "ok" or what went wrong."""
    data = os.urandom(size)
    try:
        with Wire(host, port, timeout=20) as wire:
            wire.logged_in(USER, PASSWORD)
            done = wire.put(f"normal-{time.monotonic_ns()}.bin", data, overwrite=True)
            if not isinstance(done, m.PutDone):
                return f"upload failed: {done}"
            ready, got, end = wire.get(done.path)
            if not isinstance(end, m.GetDone):
                return f"download failed: {ready} {end}"
            if hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
                return "download differs from the upload"
            return "ok"
    except Exception as exc:  # reported by the test's assertion
        return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- slowloris


@dataclass
class Dripper:
    """One connection that sends a valid request one byte at a time, too slowly."""

    sock: socket.socket
    payload: bytes
    opened: float
    stream: MessageStream = field(default_factory=lambda: MessageStream("client"))
    sent: int = 0
    replies: list[Any] = field(default_factory=list)
    ended: str = ""
    ended_at: float = 0.0

    def end(self, how: str) -> None:
        self.ended, self.ended_at = how, time.monotonic()


def _read(d: Dripper) -> None:
    try:
        chunk = d.sock.recv(65536)
    except BlockingIOError:
        return
    except OSError:
        d.end("reset")
        return
    if not chunk:
        d.end("eof")
        return
    try:
        d.replies.extend(e for e in d.stream.feed(chunk) if not isinstance(e, DataChunk))
    except ProtocolError:
        d.end("garbled")


@pytest.mark.plaintext     # raw hellos dripped in clear text (TLS: test_hostile_tls.py)
def test_500_slow_and_idle_connections_are_reaped_by_the_timeouts(server_factory):
    """400 connections drip a hello and 100 logged-in ones drip an ls, one byte per
    connection every 0.25 s: a request would take ~10 s, the login and idle timeouts are
    3 s (long enough that even on a loaded machine, where opening the 100 TLS sessions
    takes a while, every connection drips several bytes before its clock runs out).
    Every one of them must get a TIMEOUT error frame or a close, none before its
    timeout; none of their requests may be answered; a normal client completes an upload
    and a download meanwhile; the daemon's descriptors return to their baseline."""
    # (100 sessions of one user: over the default per-user limit of 64, not tested here.)
    daemon = server_factory(login_timeout=3.0, idle_timeout=3.0, workers=1,
                            auth_workers=1, max_connections_per_user=200)
    daemon.add_user(USER, PASSWORD)
    assert normal_round_trip(daemon.host, daemon.port, 64 << 10) == "ok"    # warm-up
    baseline = daemon.fd_count()
    timeout = 3.0

    drippers: list[Dripper] = []
    hello = encode(m.Hello(id=1, protocol=1, client="slowloris"))
    ls = encode(m.Ls(id=7, path="/"))
    try:
        for _ in range(400):
            s = socket.create_connection((daemon.host, daemon.port), timeout=5)
            drippers.append(Dripper(s, hello, time.monotonic()))
        for _ in range(100):
            wire = Wire(daemon.host, daemon.port, timeout=5)
            wire.logged_in(USER, PASSWORD)
            # The idle clock starts at the login request.
            drippers.append(Dripper(wire.sock, ls, time.monotonic()))
        sel = selectors.DefaultSelector()
        for d in drippers:
            d.sock.setblocking(False)
            sel.register(d.sock, selectors.EVENT_READ, d)

        outcome: list[str] = []
        normal = threading.Thread(
            target=lambda: outcome.append(normal_round_trip(daemon.host, daemon.port)))
        normal.start()

        deadline = time.monotonic() + timeout + 10
        next_drip = time.monotonic()
        while time.monotonic() < deadline and any(not d.ended for d in drippers):
            now = time.monotonic()
            if now >= next_drip:
                next_drip = now + 0.25
                for d in drippers:
                    if d.ended or d.sent >= len(d.payload):
                        continue
                    try:
                        d.sent += d.sock.send(d.payload[d.sent:d.sent + 1])
                    except BlockingIOError:
                        pass
                    except OSError:
                        d.end("reset")
            for key, _ in sel.select(max(0.0, min(0.05, next_drip - time.monotonic()))):
                d = key.data
                if not d.ended:
                    _read(d)
                    if d.ended:
                        sel.unregister(d.sock)
        normal.join(30)
        sel.close()
    finally:
        for d in drippers:
            d.sock.close()

    assert min(d.sent for d in drippers) >= 3, "the slow clients did not really drip"
    hung = [d for d in drippers if not d.ended]
    assert not hung, f"{len(hung)} slow connections were never reaped"
    early = [d for d in drippers if d.ended_at - d.opened < timeout - 0.1]
    assert not early, f"{len(early)} reaped before their timeout"
    unexpected = []
    timeouts = 0
    for d in drippers:
        codes = [getattr(r, "code", r.type) for r in d.replies if not isinstance(r, m.Greeting)]
        if codes == ["TIMEOUT"]:
            timeouts += 1
        elif codes:
            unexpected.append(codes)       # e.g. a reply to the dripped request
    assert not unexpected, unexpected[:5]
    # A TIMEOUT frame is the rule; a bare close is allowed (the brief's "or a close").
    assert timeouts >= 450, f"only {timeouts} of 500 got a TIMEOUT frame"
    assert outcome == ["ok"], outcome
    assert alive(daemon)
    assert wait_until(lambda: daemon.fd_count() <= baseline, 5), \
        f"fds {daemon.fd_count()} vs baseline {baseline}"
    daemon.wait_for_log(r"user=- \(login\)", count=350)
    daemon.wait_for_log(rf"user={USER} \(idle\)", count=90)


# ---------------------------------------------------------------- floods


def first_frame(source: str, host: str, port: int) -> tuple[Any, socket.socket]:
    """Connect from ``source`` and read the daemon's first frame."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect((host, port))
    s = maybe_tls(s, host, port)
    stream = MessageStream("client")
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError("closed before any frame")
        events = stream.feed(chunk)
        if events:
            return events[0], s


def assert_refused(source: str, host: str, port: int) -> None:
    """The connection gets TOO_MANY_CONNECTIONS (id null) and nothing else, then a close."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.connect((host, port))
    s = maybe_tls(s, host, port)
    try:
        replies, how = drain(s, timeout=5)
    finally:
        s.close()
    assert [(r.type, getattr(r, "code", None), getattr(r, "id", None)) for r in replies] == \
        [("error", "TOO_MANY_CONNECTIONS", None)], replies
    assert how in ("eof", "reset")


def test_connections_over_the_per_address_limit_are_refused(server_factory):
    """max_connections_per_ip=5: five connections from 127.0.0.1 are served, the next ten
    from that address get TOO_MANY_CONNECTIONS and are closed, while 127.0.0.2 is still
    admitted; once one of the five leaves, 127.0.0.1 is admitted again."""
    daemon = server_factory(max_connections_per_ip=5)
    daemon.add_user(USER, PASSWORD)
    held = [SourceWire(daemon.host, daemon.port, "127.0.0.1") for _ in range(5)]
    try:
        for _ in range(10):
            assert_refused("127.0.0.1", daemon.host, daemon.port)
        with SourceWire(daemon.host, daemon.port, "127.0.0.2") as other:
            assert isinstance(other.login(USER, PASSWORD), m.LoginOk)
        for wire in held:
            wire.logged_in(USER, PASSWORD)
            assert served(wire)
        held.pop().close()
        assert wait_until(lambda: _admitted("127.0.0.1", daemon), 5)
    finally:
        for wire in held:
            wire.close()
    assert alive(daemon)


def _admitted(source: str, daemon: Any) -> bool:
    frame, s = first_frame(source, daemon.host, daemon.port)
    s.close()
    return isinstance(frame, m.Greeting)


def test_connections_over_the_total_limit_are_refused(server_factory):
    """max_connections=8 (per address 1000): eight connections from eight addresses are
    served; ten more from fresh addresses are refused with TOO_MANY_CONNECTIONS; the eight
    still work; a freed slot admits a newcomer."""
    daemon = server_factory(max_connections=8)
    daemon.add_user(USER, PASSWORD)
    held = [SourceWire(daemon.host, daemon.port, f"127.0.0.{10 + i}") for i in range(8)]
    try:
        for i in range(10):
            assert_refused(f"127.0.1.{i + 1}", daemon.host, daemon.port)
        for wire in held:
            wire.logged_in(USER, PASSWORD)
            assert served(wire)
        held.pop().close()
        assert wait_until(lambda: _admitted("127.0.2.1", daemon), 5)
    finally:
        for wire in held:
            wire.close()
    assert alive(daemon)


def test_a_connection_flood_is_refused_and_the_daemon_keeps_serving(server_factory):
    """300 connections as fast as possible, 100 from 127.0.0.1 then 200 from 127.0.0.2,
    above both limits (max_connections=50, per address 40): exactly 40 + 10 are admitted,
    the other 250 get TOO_MANY_CONNECTIONS; afterwards a normal client
    uploads and downloads, and the daemon's descriptors return to their baseline."""
    daemon = server_factory(max_connections=50, max_connections_per_ip=40, workers=1,
                            auth_workers=1)
    daemon.add_user(USER, PASSWORD)
    assert normal_round_trip(daemon.host, daemon.port, 4096) == "ok"        # warm-up
    baseline = daemon.fd_count()
    admitted = {"127.0.0.1": 0, "127.0.0.2": 0}
    refused = 0
    sockets = []
    try:
        for i in range(300):
            source = "127.0.0.1" if i < 100 else "127.0.0.2"
            frame, s = first_frame(source, daemon.host, daemon.port)
            sockets.append(s)
            if isinstance(frame, m.Greeting):
                admitted[source] += 1
            else:
                assert (frame.type, frame.code, frame.id) == ("error", "TOO_MANY_CONNECTIONS",
                                                              None), frame
                refused += 1
        # 127.0.0.1 fills its 40, 127.0.0.2 gets the 10 left of the 50.
        assert admitted == {"127.0.0.1": 40, "127.0.0.2": 10} and refused == 250, \
            (admitted, refused)
        assert alive(daemon)
    finally:
        for s in sockets:
            s.close()
    assert wait_until(lambda: normal_round_trip(daemon.host, daemon.port, 1 << 20) == "ok", 5)
    assert wait_until(lambda: daemon.fd_count() <= baseline, 5), \
        f"fds {daemon.fd_count()} vs baseline {baseline}"
