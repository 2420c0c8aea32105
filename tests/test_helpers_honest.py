"""The test helpers themselves must be able to say no.

A helper that answers "closed" for any failure, or a fixture that never reads
the daemon's log, turns a broken daemon into a green test.  These tests hold
``Wire.closed_by_peer`` and the in-process fixture's traceback check to what
their docstrings promise, against a scripted peer (a listening socket in a
thread) so the verdict does not depend on the daemon.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import _pytest.outcomes
import pytest

import protocol.messages as m
from protocol import ProtocolError, encode
from tests.daemon import InprocDaemon
from tests.wire import Wire

GREETING = encode(m.Greeting(protocol=1, server="scripted", max_control=65536,
                             max_data=1 << 20, register=False))


@contextmanager
def scripted_peer(script: Callable[[socket.socket], None]) -> Iterator[Wire]:
    """A Wire connected to a peer that sends a greeting and then runs ``script``."""
    listener = socket.create_server(("127.0.0.1", 0))
    greeted, done = threading.Event(), threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            conn.sendall(GREETING)
            greeted.wait(10)              # the script's bytes come after the greeting is read
            script(conn)
            done.wait(10)
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    wire = Wire(*listener.getsockname(), hello=False)
    greeted.set()
    try:
        yield wire
    finally:
        done.set()
        wire.close()
        thread.join(10)
        listener.close()


def test_closed_by_peer_is_true_after_pending_replies_and_an_orderly_close():
    def script(conn: socket.socket) -> None:
        conn.sendall(encode(m.Pong(id=1)) + encode(m.Pong(id=2)))
        conn.shutdown(socket.SHUT_WR)

    with scripted_peer(script) as wire:
        assert wire.closed_by_peer(timeout=10) is True


def test_closed_by_peer_is_true_after_a_reset():
    def script(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        conn.close()

    with scripted_peer(script) as wire:
        assert wire.closed_by_peer(timeout=10) is True


def test_closed_by_peer_is_false_while_the_peer_keeps_the_connection_open():
    with scripted_peer(lambda conn: None) as wire:
        assert wire.closed_by_peer(timeout=0.2) is False


def test_closed_by_peer_does_not_call_an_undecodable_reply_a_close():
    def script(conn: socket.socket) -> None:
        payload = b'{"type":"pong","id":"not a number"}'
        conn.sendall(len(payload).to_bytes(4, "big") + b"\x01" + payload)

    with scripted_peer(script) as wire, pytest.raises(ProtocolError):
        wire.closed_by_peer(timeout=10)


def test_closed_by_peer_does_not_call_an_eof_inside_a_frame_a_close():
    def script(conn: socket.socket) -> None:
        conn.sendall(encode(m.Pong(id=1))[:-3])
        conn.shutdown(socket.SHUT_WR)

    with scripted_peer(script) as wire, pytest.raises(ProtocolError):
        wire.closed_by_peer(timeout=10)


def test_the_in_process_fixture_fails_a_test_whose_daemon_logged_a_traceback(tmp_path,
                                                                            monkeypatch):
    daemon = InprocDaemon(tmp_path / "root")
    try:
        daemon.add_user("tb", "pw")

        def broken(*args, **kwargs):
            raise RuntimeError("injected bug")

        monkeypatch.setattr(daemon.store, "stat", broken)
        with Wire(daemon.host, daemon.port) as wire:
            wire.logged_in("tb", "pw")
            assert wire.call(m.Stat(id=wire.next_id(), path="x")).code == "INTERNAL"
        daemon.wait_for_log("Traceback")
    finally:
        daemon.stop()
    with pytest.raises(_pytest.outcomes.Failed, match="injected bug"):
        daemon.check_log()
    daemon.allow_tracebacks = True
    daemon.check_log()                       # a test that expects one says so
