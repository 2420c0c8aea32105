"""Accepting connections (ftpd/server.py): as many as wait, and no ``accept`` more.

The reactor is driven by hand: the test connects, waits until the listener is
readable (an observable event, bounded), then lets the server accept once.
"""

from __future__ import annotations

import select
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ftpd.config import Config
from ftpd.server import Server
from tests.call_counting import python_calls
from tests.daemon import TEST_SCRYPT_N, wait_for

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the accept queue's length is read on Linux only")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    config = Config(root=tmp_path / "root", port=0, tls=False).updated(scrypt_n=TEST_SCRYPT_N)
    srv = Server(config)
    srv.bind()
    try:
        yield srv
    finally:
        srv._teardown()


def _counting_accept(monkeypatch: pytest.MonkeyPatch, name: str = "_accept") -> list[Any]:
    """Calls of the listener's ``_accept`` (the system call; ``socket.accept`` calls it
    too), or of the method ``name``."""
    calls: list[Any] = []
    accept = getattr(socket.socket, name)

    def counted(self: socket.socket) -> Any:
        calls.append(self)
        return accept(self)
    monkeypatch.setattr(socket.socket, name, counted)
    return calls


def _queued(server: Server, count: int) -> list[socket.socket]:
    """``count`` clients connected and waiting in the listener's queue."""
    assert server.listener is not None
    clients = [socket.create_connection(server.listener.getsockname()[:2], timeout=10)
               for _ in range(count)]
    assert select.select([server.listener], [], [], 10)[0], "no connection arrived"
    return clients


@linux_only
def test_one_waiting_connection_costs_one_accept(server, monkeypatch):
    clients = _queued(server, 1)
    calls = _counting_accept(monkeypatch)
    server._accept()
    assert len(calls) == 1 and len(server.connections) == 1
    for c in clients:
        c.close()


def test_a_connection_is_accepted_without_the_socket_modules_accept_wrapper(server,
                                                                            monkeypatch):
    """Its family and type lookups (two int-to-enum conversions) are the listener's,
    known already (issue 17)."""
    clients = _queued(server, 1)
    wrapped = _counting_accept(monkeypatch, "accept")
    server._accept()
    [session] = server.connections
    assert wrapped == [] and session.transport.sock is not None
    assert session.transport.sock.family == socket.AF_INET
    assert session.transport.sock.getblocking() is False
    for c in clients:
        c.close()


@linux_only
def test_every_waiting_connection_is_accepted_in_one_wakeup(server, monkeypatch):
    clients = _queued(server, 3)
    assert server.listener is not None
    wait_for(lambda: _queue_length(server.listener) == 3, what="three queued connections")
    server._accept()
    assert len(server.connections) == 3
    for c in clients:
        c.close()


def test_an_accepted_connection_does_not_wait_for_nagle(server):
    clients = _queued(server, 1)
    server._accept()
    [session] = server.connections
    sock = session.transport.sock
    assert sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    for c in clients:
        c.close()


def _queue_length(listener: socket.socket) -> int:
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int.from_bytes(info[24:28], sys.byteorder)


def test_admitting_and_forgetting_a_connection_and_a_loop_turn_call_no_bookkeeping_helpers(
        server):
    """The per-address count and the shutdown flag are read as they are: no
    ``Counter.__missing__`` and no ``stopping`` property per connection or per turn of
    the loop (issue 17)."""
    clients = _queued(server, 1)
    calls = python_calls(server._accept)
    [session] = server.connections
    assert server.per_ip == {"127.0.0.1": 1}
    calls += python_calls(lambda: server.run_once(max_wait=0))
    calls += python_calls(lambda: session.close("test"))         # forgets it
    assert not server.connections and not server.per_ip
    assert "__missing__" not in calls and "stopping" not in calls, calls
    assert calls.count("ip") <= 1, calls
    for c in clients:
        c.close()
