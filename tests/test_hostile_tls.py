"""Hostile TLS peers against the REAL daemon (``ftpd serve`` in a subprocess).

Each test ends with the daemon still serving (a fresh TLS client can log in)
and, through the fixture's teardown, with no traceback in its log.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from typing import Any

import pytest

from client import Client
from client.errors import ConnectionLost
from ftpd.tls import NOT_TLS_REPLY, TLSLayer
from tests.daemon import REPO
from tests.test_tls_interop import Tee

PASSWORD = "correct horse battery"
MiB = 1 << 20


def wait_until(check: Any, timeout: float = 20.0) -> Any:
    """Poll an observable condition with a bounded deadline (no sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def serves(daemon: Any) -> bool:
    """A fresh TLS client logs in (the daemon was not hurt)."""
    with Client(daemon.host, daemon.port, timeout=10, trust=daemon.fingerprint) as c:
        c.login("alice", PASSWORD)
        return c.ping() >= 0


def closed_by_daemon(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the daemon sends until it closes; fails if it keeps the socket open."""
    sock.settimeout(timeout)
    got = bytearray()
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return bytes(got)


def raw_tls(daemon: Any) -> tuple[socket.socket, TLSLayer]:
    """A handshaken TLS connection whose every ciphertext byte the test controls."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    layer = TLSLayer(ctx, server_side=False)
    sock = socket.create_connection((daemon.host, daemon.port), timeout=10)
    while not layer.do_handshake():
        out = layer.data_to_send()
        if out:
            sock.sendall(out)
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("closed during the handshake")
        layer.feed(chunk)
    out = layer.data_to_send()
    if out:
        sock.sendall(out)
    return sock, layer


@pytest.fixture
def daemon(server_factory: Any) -> Any:
    d = server_factory()
    d.add_user("alice", PASSWORD)
    return d


def test_plain_text_bytes_to_the_tls_port_get_one_frame_and_one_log_line(daemon):
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as s:
        s.sendall(b"\x00\x00\x00\x20" + b'{"type":"hello","protocol":1}' + b"   ")
        assert closed_by_daemon(s) == NOT_TLS_REPLY
    log = wait_until(lambda: (text := daemon.log()).count("not TLS") and text)
    assert log.count("not TLS") == 1
    assert serves(daemon)


def test_handshakes_stalled_byte_by_byte_are_reaped_by_the_login_timeout(server_factory):
    daemon = server_factory(login_timeout=1.0, max_connections_per_ip=1000,
                            max_connections=1000)
    daemon.add_user("alice", PASSWORD)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    layer = TLSLayer(ctx, server_side=False, server_hostname="localhost")
    layer.do_handshake()
    hello = layer.data_to_send()
    socks = []
    try:
        for _ in range(500):
            s = socket.create_connection((daemon.host, daemon.port), timeout=20)
            s.sendall(hello[:1])                # one byte, then nothing more
            socks.append(s)
        for s in socks[:50]:                    # some drip a few more bytes
            s.sendall(hello[1:3])
        assert wait_until(lambda: daemon.fd_count() < 100, timeout=60)
        for s in socks:
            assert closed_by_daemon(s, timeout=20) == b""
    finally:
        for s in socks:
            s.close()
    assert serves(daemon)


def test_a_tls_client_that_never_sends_close_notify_is_an_ordinary_end(daemon):
    sock, layer = raw_tls(daemon)
    sock.close()                                # TCP FIN, no close_notify
    c = Client(daemon.host, daemon.port, timeout=10, trust=daemon.fingerprint)
    c.connect()
    c.login("alice", PASSWORD)
    c._conn.sock.close()                        # Python's close() sends no close_notify
    assert serves(daemon)
    # the daemon ended all three sessions (raw, library, serves) as ordinary closes
    wait_until(lambda: daemon.log().count("close 127.0.0.1") >= 3)


def test_a_truncated_record_closes_the_connection(daemon):
    sock, _ = raw_tls(daemon)
    with sock:
        # an application-data record announcing 4000 bytes, then only 10, then EOF
        sock.sendall(b"\x17\x03\x03" + struct.pack(">H", 4000) + os.urandom(10))
        sock.shutdown(socket.SHUT_WR)
        closed_by_daemon(sock)
    assert serves(daemon)


def test_a_huge_record_is_refused_with_an_alert_and_closed(daemon):
    sock, _ = raw_tls(daemon)
    with sock:
        size = (1 << 14) + 2048 + 1             # above TLS 1.3's limit for ciphertext
        try:
            sock.sendall(b"\x17\x03\x03" + struct.pack(">H", size) + os.urandom(size))
        except OSError:
            pass
        reply = closed_by_daemon(sock)
        assert reply[:1] in (b"", b"\x15", b"\x17")   # an alert (maybe encrypted), then EOF
    assert serves(daemon)


def test_a_client_that_renegotiates_is_closed(daemon):
    sock, _ = raw_tls(daemon)
    with sock:
        other = TLSLayer(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), server_side=False,
                         server_hostname="localhost")
        other.do_handshake()
        sock.sendall(other.data_to_send())      # a new ClientHello on a live connection
        closed_by_daemon(sock)
    assert serves(daemon)


def test_kill_9_of_ftpc_mid_upload_then_resume_over_tls(daemon, tmp_path):
    data = os.urandom(8 * MiB)
    src = tmp_path / "big"
    src.write_bytes(data)
    env = {**os.environ, "FTPC_HOST": daemon.host, "FTPC_PORT": str(daemon.port),
           "FTPC_USER": "alice", "FTPC_PASSWORD": PASSWORD}
    proc = subprocess.Popen([sys.executable, "-m", "client.cli", "put", str(src),
                             "--limit-rate", "2M"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Client(daemon.host, daemon.port, timeout=10) as c:   # pinned by the fixture
            c.login("alice", PASSWORD)
            offset = wait_until(lambda: next((u.offset for u in c.uploads() if u.offset), 0))
            proc.kill()
            proc.wait(10)
            again = subprocess.run([sys.executable, "-m", "client.cli", "put", str(src)],
                                   env=env, cwd=REPO, capture_output=True, text=True,
                                   timeout=120)
            assert again.returncode == 0, again.stderr
            assert offset > 0
            assert c.hash("big").sha256 == hashlib.sha256(data).hexdigest()
            assert c.uploads() == ()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")


def s_client(port: int, *flags: str) -> tuple[int, str]:
    proc = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *flags],
                          input=b"", capture_output=True, timeout=30)
    return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")


@needs_openssl
def test_openssl_s_client_gets_tls13_from_the_daemon(daemon):
    status, out = s_client(daemon.port)
    assert status == 0 and "TLSv1.3" in out


@needs_openssl
@pytest.mark.parametrize("flag", ["-tls1_1", "-tls1"])
def test_openssl_s_client_with_old_versions_is_refused_by_the_daemon(daemon, flag):
    status, out = s_client(daemon.port, flag, "-cipher", "DEFAULT@SECLEVEL=0")
    assert status != 0 and "New, (NONE)" in out


def test_a_tee_of_login_and_upload_shows_neither_password_nor_file(daemon, tmp_path):
    tee = Tee(daemon.port)
    body = b"the-secret-file-body-" * 5000
    try:
        with Client("127.0.0.1", tee.port, timeout=10, trust=daemon.fingerprint) as c:
            c.login("alice", PASSWORD)
            src = tmp_path / "secret.txt"
            src.write_bytes(body)
            c.put(str(src), "secret.txt")
            assert c.hash("secret.txt").sha256 == hashlib.sha256(body).hexdigest()
    finally:
        tee.close()
    with tee.lock:
        captured = bytes(tee.captured)
    assert len(captured) > len(body)
    assert PASSWORD.encode() not in captured
    assert b"the-secret-file-body-" not in captured


@pytest.mark.plaintext
def test_a_tls_client_to_a_plaintext_daemon_is_told_the_flag(daemon):
    with pytest.raises(ConnectionLost) as info:
        Client(daemon.host, daemon.port, timeout=10, tls=True,
               trust="SHA256:" + "A" * 43).connect()
    assert "--plaintext" in str(info.value) and "\n" not in str(info.value)


def test_a_plaintext_client_to_a_tls_daemon_is_told_the_flag(daemon):
    proc = subprocess.run([sys.executable, "-m", "client.cli", "--plaintext", "ls"],
                          env={**os.environ, "FTPC_HOST": daemon.host,
                               "FTPC_PORT": str(daemon.port), "FTPC_USER": "alice",
                               "FTPC_PASSWORD": PASSWORD},
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--plaintext" in lines[0], proc.stderr


def test_sighup_new_connections_see_the_new_certificate_old_ones_keep_working(daemon):
    from ftpd import certs

    old_fp = daemon.fingerprint
    old = Client(daemon.host, daemon.port, timeout=10, trust=old_fp)
    old.connect()
    old.login("alice", PASSWORD)
    certs.rotate(daemon.root)
    new_fp = daemon.fingerprint
    assert new_fp != old_fp
    os.kill(daemon.pid, signal.SIGHUP)
    wait_until(lambda: f"tls reloaded, fingerprint {new_fp}" in daemon.log())
    with Client(daemon.host, daemon.port, timeout=10, tls=True, trust=new_fp,
                known_hosts=str(daemon.root.parent / "kh-new")) as fresh:
        fresh.login("alice", PASSWORD)
        assert fresh.ping() >= 0
    assert old.ping() >= 0                      # the old connection kept its context
    old.close()
