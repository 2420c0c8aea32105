"""What an idle TLS connection costs the real daemon, and that one daemon holds
10,000 of them.  Figures go to docs/BENCHMARKS.md ("TLS"); these tests keep the
budget honest.

An "idle TLS connection" is one that finished its handshake and read the
greeting, then sends nothing.  Memory is the daemon's RSS (``/proc``) before and
after opening them, divided by their number: it includes the socket's kernel-
side accounting only as far as RSS shows it (not at all), and Python's and
OpenSSL's heaps fully.
"""

from __future__ import annotations

import os
import resource
import socket
import ssl
import time
from typing import Any

import pytest

from tests.daemon import DaemonProcess

#: issue 12's budget per idle TLS connection (a plain Python TLS server: ~15 KiB)
BUDGET = 20 * 1024


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def open_idle(daemon: DaemonProcess, count: int, deadline: float) -> list[ssl.SSLSocket]:
    """``count`` handshaken TLS connections that each read the greeting's first byte."""
    ctx = _client_context()
    socks = []
    for _ in range(count):
        assert time.monotonic() < deadline, f"only {len(socks)} connections in time"
        raw = socket.create_connection((daemon.host, daemon.port), timeout=30)
        s = ctx.wrap_socket(raw)
        assert s.recv(1)                       # the greeting arrived: the daemon did its part
        socks.append(s)
    return socks


def settled_rss(daemon: DaemonProcess) -> int:
    """The daemon's RSS once it stopped changing (reading it twice, bounded)."""
    last = daemon.rss()
    for _ in range(50):
        time.sleep(0.05)
        now = daemon.rss()
        if abs(now - last) < 16 * 1024:
            return now
        last = now
    return last


def _start(server_factory: Any, count: int) -> DaemonProcess:
    return server_factory(max_connections=count + 100, max_connections_per_ip=count + 100,
                          login_timeout=600.0)


def _warm(daemon: DaemonProcess) -> None:
    """Open and close a batch first, so one-time costs (the selector's tables, the
    first OpenSSL allocations) are not counted as per-connection."""
    for s in open_idle(daemon, 200, time.monotonic() + 120):
        s.close()


@pytest.mark.slow
def test_an_idle_tls_connection_costs_at_most_20_kib_of_daemon_memory(server_factory):
    daemon = _start(server_factory, 1000)
    _warm(daemon)
    before = settled_rss(daemon)
    socks = open_idle(daemon, 1000, time.monotonic() + 300)
    try:
        per_connection = (settled_rss(daemon) - before) / len(socks)
    finally:
        for s in socks:
            s.close()
    print(f"idle TLS connection: {per_connection / 1024:.1f} KiB of daemon RSS")
    assert per_connection <= BUDGET


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(os.environ.get("FTPD_TEST_10K") != "1",
                    reason="10,000 TLS handshakes take minutes on a small shared machine: "
                           "run with FTPD_TEST_10K=1 (figures in docs/BENCHMARKS.md)")
def test_one_daemon_holds_10000_idle_tls_connections(server_factory):
    started = time.monotonic()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 10_500 and hard != resource.RLIM_INFINITY:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 10,500 (this process holds the "
                    "client ends)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 12_000)), hard))
    daemon = _start(server_factory, 10_000)
    try:
        socks = open_idle(daemon, 10_000, time.monotonic() + 900)
        try:
            assert daemon.fd_count() >= 10_000
            print(f"10,000 idle TLS connections in {time.monotonic() - started:.0f} s: "
                  f"daemon RSS {daemon.rss() / 2**20:.0f} MiB, {daemon.fd_count()} fds")
            # the daemon still answers a new connection (and the oldest one is alive)
            extra = open_idle(daemon, 1, time.monotonic() + 30)
            extra[0].close()
        finally:
            for s in socks:
                s.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
