"""ftpd/tls.py: the sans-IO TLS layer, two of them talking to each other in memory."""

from __future__ import annotations

import ssl

import pytest
import trustme

from ftpd import certs
from ftpd.tls import NOT_TLS_REPLY, RECORD_SIZE, NotTLS, TLSError, TLSLayer
from protocol import MessageStream
from protocol.messages import ErrorReply


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    issued = ca.issue_cert("localhost")
    issued.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    issued.private_key_pem.write_to_path(folder / "key.pem")
    return certs.server_context(certs.CertPair(folder / "cert.pem", folder / "key.pem"))


@pytest.fixture(scope="module")
def client_ctx(ca):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


def pump(a: TLSLayer, b: TLSLayer, rounds: int = 20) -> None:
    """Move ciphertext both ways until neither side has any to send."""
    for _ in range(rounds):
        a.do_handshake()
        b.do_handshake()
        moved = False
        for src, dst in ((a, b), (b, a)):
            data = src.data_to_send()
            if data:
                dst.feed(data)
                moved = True
        if not moved:
            return
    raise AssertionError("the layers kept talking")


def connected(server_ctx, client_ctx, session=None):
    client = TLSLayer(client_ctx, server_side=False, server_hostname="localhost",
                      session=session)
    server = TLSLayer(server_ctx, server_side=True)
    assert not client.do_handshake()           # ClientHello is now in data_to_send
    pump(client, server)
    return client, server


def read_all(layer: TLSLayer) -> bytes:
    buf = memoryview(bytearray(4096))
    out = bytearray()
    while n := layer.read_into(buf):
        out += buf[:n]
    return bytes(out)


def test_handshake_completes_in_memory_with_tls13(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    assert client.handshake_done and server.handshake_done
    assert server.version() == "TLSv1.3"


def test_handshake_wants_read_until_the_peer_answers(server_ctx, client_ctx):
    client = TLSLayer(client_ctx, server_side=False, server_hostname="localhost")
    assert client.do_handshake() is False
    assert client.wants_write


def test_plaintext_crosses_both_ways(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    client.write(b"hello server")
    server.feed(client.data_to_send())
    assert read_all(server) == b"hello server"
    server.write(b"hello client")
    client.feed(server.data_to_send())
    assert read_all(client) == b"hello client"


def test_read_goes_into_the_callers_buffer(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    client.write(b"x" * 100)
    server.feed(client.data_to_send())
    buf = bytearray(4096)
    n = server.read_into(memoryview(buf))
    assert buf[:n] == b"x" * n and n > 0


def test_large_writes_are_cut_into_records(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    payload = bytes(range(256)) * (RECORD_SIZE * 3 // 256 + 7)
    server.write(payload)
    client.feed(server.data_to_send())
    assert read_all(client) == payload


def test_ciphertext_does_not_contain_the_plaintext(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    client.write(b"password=hunter2")
    assert b"hunter2" not in client.data_to_send()


def test_read_without_ciphertext_returns_zero(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    assert server.read_into(bytearray(10)) == 0
    assert not server.peer_closed


def test_byte_by_byte_feeding_still_decrypts(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    client.write(b"slow bytes")
    data = client.data_to_send()
    for i in range(len(data)):
        server.feed(data[i:i + 1])
    assert read_all(server) == b"slow bytes"


def test_close_notify_is_a_clean_close(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    client.shutdown()
    server.feed(client.data_to_send())
    assert server.read_into(bytearray(10)) == 0
    assert server.peer_closed and server.clean_close


def test_eof_without_close_notify_is_a_close(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    server.feed_eof()
    assert server.read_into(bytearray(10)) == 0
    assert server.peer_closed


def test_eof_without_close_notify_sends_no_alert(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    server.data_to_send()
    server.feed_eof()
    server.read_into(bytearray(10))
    assert not server.wants_write


def test_server_refuses_a_first_byte_that_is_not_a_handshake(server_ctx):
    server = TLSLayer(server_ctx, server_side=True)
    with pytest.raises(NotTLS) as info:
        server.feed(b"\x00\x00\x00\x40\x01{...}")
    assert info.value.first_byte == 0


def test_client_refuses_a_server_that_speaks_plain_text(client_ctx):
    client = TLSLayer(client_ctx, server_side=False, server_hostname="localhost")
    client.do_handshake()
    with pytest.raises(NotTLS):
        client.feed(b"\x00\x00\x00\x50\x01{\"type\":\"greeting\"}")


def test_not_tls_is_a_tls_error(server_ctx):
    assert issubclass(NotTLS, TLSError)


def test_the_plain_text_refusal_is_one_protocol_error_frame():
    events = MessageStream("client").feed(NOT_TLS_REPLY)
    assert len(events) == 1 and isinstance(events[0], ErrorReply)
    assert "--plaintext" in events[0].message
    assert events[0].details == {"tls": "required"}


def test_garbage_after_a_handshake_byte_is_a_tls_error(server_ctx):
    server = TLSLayer(server_ctx, server_side=True)
    server.feed(b"\x16\x03\x01\x00\x05hello" + b"\xff" * 64)
    with pytest.raises(TLSError):
        server.do_handshake()


def test_eof_during_the_handshake_is_a_tls_error(server_ctx):
    server = TLSLayer(server_ctx, server_side=True)
    server.feed_eof()
    with pytest.raises(TLSError):
        server.do_handshake()


def test_a_truncated_record_is_not_delivered(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    client.write(b"complete record")
    data = client.data_to_send()
    server.feed(data[:-3])
    server.feed_eof()
    assert server.read_into(bytearray(100)) == 0
    assert server.peer_closed


def test_wrong_host_name_fails_verification(server_ctx, client_ctx):
    client = TLSLayer(client_ctx, server_side=False, server_hostname="example.org")
    server = TLSLayer(server_ctx, server_side=True)
    client.do_handshake()
    with pytest.raises(TLSError) as info:
        pump(client, server)
    assert info.value.reason == "CERTIFICATE_VERIFY_FAILED"


def test_tls12_client_is_refused_by_the_default_server(server_ctx, ca):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client = TLSLayer(ctx, server_side=False, server_hostname="localhost")
    server = TLSLayer(server_ctx, server_side=True)
    client.do_handshake()
    with pytest.raises(TLSError):
        pump(client, server)


def test_write_before_the_handshake_is_refused(server_ctx):
    with pytest.raises(TLSError):
        TLSLayer(server_ctx, server_side=True).write(b"too early")


def test_session_tickets_let_a_client_resume(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    server.write(b"greeting")                  # tickets travel with the first records
    client.feed(server.data_to_send())
    read_all(client)
    session = client.session
    assert session is not None and session.has_ticket
    again, server2 = connected(server_ctx, client_ctx, session=session)
    assert again.session_reused and server2.session_reused


def test_peer_certificate_is_available_to_the_client(server_ctx, client_ctx):
    client, _ = connected(server_ctx, client_ctx)
    assert client.peer_certificate_der()[:1] == b"\x30"      # a DER SEQUENCE


def test_a_record_larger_than_tls_allows_is_a_tls_error(server_ctx, client_ctx):
    client, server = connected(server_ctx, client_ctx)
    huge = 16384 + 2048 + 1
    server.feed(bytes([0x17, 0x03, 0x03, huge >> 8, huge & 0xFF]) + b"\x00" * huge)
    with pytest.raises(TLSError):
        server.read_into(bytearray(100))
