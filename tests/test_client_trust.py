"""client/trust.py and the client's TLS: chains, pinning, prompts, exit status 9.

The server is the fake daemon of test_client_fakeserver.py behind TLS, in a
thread: a trustme CA for the chain path, a self-signed ftpd certificate for the
pinning path.  It answers a plain-text client the way the daemon does (one
plain-text error frame), and records every request, so the tests can check
that no credential went out before the server was authenticated.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
from pathlib import Path

import pytest
import trustme

from client import Client, ServerAuthError, trust
from client.cli import main as ftpc
from client.connection import Connection
from client.errors import ConnectionLost
from client.tls_stream import TLSStream
from ftpd import certs
from ftpd.tls import NOT_TLS_REPLY
from protocol import messages as m
from tests.test_client_fakeserver import FakeServer


class TLSFake(FakeServer):
    """The fake daemon behind TLS (blocking ssl in its connection threads)."""

    def __init__(self, context: ssl.SSLContext, **kw) -> None:
        self.context = context
        self.resumed: list[bool] = []
        self.plain_refused = 0
        super().__init__(**kw)

    def _serve(self, sock: socket.socket) -> None:
        try:
            first = sock.recv(1, socket.MSG_PEEK)
            if first and first[0] != 0x16:
                self.plain_refused += 1
                sock.sendall(NOT_TLS_REPLY)
                sock.close()
                return
            tls = self.context.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError):
            sock.close()
            return
        self.resumed.append(tls.session_reused)
        super()._serve(tls)


def pair_from_trustme(issued, folder: Path) -> certs.CertPair:
    issued.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    issued.private_key_pem.write_to_path(folder / "key.pem")
    return certs.CertPair(folder / "cert.pem", folder / "key.pem")


@pytest.fixture(autouse=True)
def fresh_sessions(tmp_path, monkeypatch):
    monkeypatch.setenv("FTPC_KNOWN_HOSTS", str(tmp_path / "kh" / "known_hosts"))
    for name in ("FTPC_TRUST", "FTPC_CACERT", "FTPC_PASSWORD", "FTPC_USER"):
        monkeypatch.delenv(name, raising=False)
    trust.forget_sessions()
    yield
    trust.forget_sessions()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def ca_server(ca, tmp_path):
    folder = tmp_path / "ca-server"
    folder.mkdir()
    server = TLSFake(certs.server_context(pair_from_trustme(ca.issue_cert("127.0.0.1",
                                                                          "localhost"),
                                                            folder)))
    yield server
    server.close()


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(path)
    return str(path)


@pytest.fixture
def self_signed(tmp_path):
    """A daemon-like server with ftpd's own self-signed certificate."""
    pair = certs.ensure_self_signed(tmp_path / "daemon")
    server = TLSFake(certs.server_context(pair))
    server.fingerprint = pair.fingerprint()
    server.root = tmp_path / "daemon"
    yield server
    server.close()


@pytest.fixture
def plain_server():
    server = FakeServer()
    yield server
    server.close()


def known_hosts() -> Path:
    return Path(os.environ["FTPC_KNOWN_HOSTS"])


def connect(server, **kw) -> Client:
    c = Client(server.host, server.port, timeout=5, tls=True, **kw)
    c.connect()
    return c


# ------------------------------------------------------------ chain


def test_a_chain_valid_against_cacert_is_accepted(ca_server, ca_file):
    c = connect(ca_server, cacert=ca_file)
    assert c.login("alice", "secret").user == "alice"
    c.close()
    assert not known_hosts().exists()            # nothing to pin: the chain vouched


def test_a_wrong_host_name_is_not_accepted_by_the_chain(ca, tmp_path, ca_file):
    folder = tmp_path / "wrong"
    folder.mkdir()
    server = TLSFake(certs.server_context(pair_from_trustme(ca.issue_cert("example.org"),
                                                            folder)))
    try:
        with pytest.raises(ServerAuthError) as info:
            connect(server, cacert=ca_file)
        assert info.value.code == "UNKNOWN_SERVER"
        assert "SHA256:" in info.value.message
    finally:
        server.close()


def test_a_chain_that_does_not_validate_falls_back_to_pinning(ca_server):
    with pytest.raises(ServerAuthError) as info:
        connect(ca_server)                       # system store: trustme's CA is unknown
    assert "--trust SHA256:" in info.value.message


# ------------------------------------------------------------ pinning


def test_unknown_server_without_a_terminal_is_refused_with_its_fingerprint(self_signed):
    with pytest.raises(ServerAuthError) as info:
        connect(self_signed)
    assert info.value.code == "UNKNOWN_SERVER"
    assert f"--trust {self_signed.fingerprint}" in info.value.message
    assert str(known_hosts()) in info.value.message


def test_no_credential_is_sent_to_an_unauthenticated_server(self_signed):
    c = Client(self_signed.host, self_signed.port, timeout=5, tls=True)
    with pytest.raises(ServerAuthError):
        c.connect()
    with pytest.raises(ConnectionLost):
        c.login("alice", "secret")
    assert self_signed.requests == []


def test_trust_accepts_that_exact_fingerprint_and_records_it(self_signed):
    c = connect(self_signed, trust=self_signed.fingerprint)
    c.login("alice", "secret")
    c.close()
    line = known_hosts().read_text().strip()
    assert line == f"127.0.0.1:{self_signed.port} {self_signed.fingerprint}"


def test_known_hosts_is_created_private(self_signed):
    connect(self_signed, trust=self_signed.fingerprint).close()
    assert stat.S_IMODE(known_hosts().stat().st_mode) == 0o600
    assert stat.S_IMODE(known_hosts().parent.stat().st_mode) == 0o700


def test_a_pinned_server_connects_without_flags(self_signed):
    connect(self_signed, trust=self_signed.fingerprint).close()
    trust.forget_sessions()
    c = connect(self_signed)
    c.login("alice", "secret")
    c.close()


def test_trust_with_another_fingerprint_is_refused(self_signed):
    other = "SHA256:" + "A" * 43
    with pytest.raises(ServerAuthError) as info:
        connect(self_signed, trust=other)
    assert self_signed.fingerprint in info.value.message
    assert not known_hosts().exists()


def test_a_malformed_trust_value_is_a_usage_error(self_signed):
    with pytest.raises(ValueError):
        Client(self_signed.host, self_signed.port, tls=True, trust="md5:abc")


def test_changed_fingerprint_is_refused_loudly_naming_file_and_line(self_signed):
    path = known_hosts()
    path.parent.mkdir(parents=True)
    key = f"127.0.0.1:{self_signed.port}"
    path.write_text(f"# pins\nother:1 SHA256:{'B' * 43}\n{key} SHA256:{'C' * 43}\n")
    with pytest.raises(ServerAuthError) as info:
        connect(self_signed)
    message = info.value.message
    assert info.value.code == "SERVER_CHANGED"
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message
    assert f"{path}:3" in message
    assert self_signed.fingerprint in message
    assert self_signed.requests == []


def test_changed_fingerprint_is_accepted_with_trust_of_the_new_value(self_signed):
    path = known_hosts()
    path.parent.mkdir(parents=True)
    key = f"127.0.0.1:{self_signed.port}"
    path.write_text(f"other:1 SHA256:{'B' * 43}\n{key} SHA256:{'C' * 43}\n")
    connect(self_signed, trust=self_signed.fingerprint).close()
    lines = path.read_text().splitlines()
    assert lines == [f"other:1 SHA256:{'B' * 43}", f"{key} {self_signed.fingerprint}"]


def test_the_terminal_prompt_yes_pins_the_server(self_signed):
    questions = []

    def prompt(question: str) -> str:
        questions.append(question)
        return "yes"

    notices = []
    connect(self_signed, prompt=prompt, notice=notices.append).close()
    assert self_signed.fingerprint in questions[0] and "(yes/no)" in questions[0]
    assert self_signed.fingerprint in known_hosts().read_text()
    assert "Permanently added" in notices[0]


def test_the_terminal_prompt_no_refuses(self_signed):
    with pytest.raises(ServerAuthError):
        connect(self_signed, prompt=lambda q: "no")
    assert not known_hosts().exists()


def test_the_terminal_prompt_asks_again_on_other_answers(self_signed):
    answers = iter(["maybe", "yes"])
    connect(self_signed, prompt=lambda q: next(answers)).close()
    assert known_hosts().exists()


def test_rotating_the_daemon_certificate_is_detected(self_signed):
    connect(self_signed, trust=self_signed.fingerprint).close()
    trust.forget_sessions()
    self_signed.context = certs.server_context(certs.rotate(self_signed.root))
    with pytest.raises(ServerAuthError) as info:
        connect(self_signed)
    assert info.value.code == "SERVER_CHANGED"


# ------------------------------------------------------------ resumption


def test_a_reconnect_resumes_the_tls_session(self_signed):
    c = connect(self_signed, trust=self_signed.fingerprint)
    c.login("alice", "secret")
    c.reconnect()
    c.close()
    assert self_signed.resumed == [False, True]


def test_quick_reconnects_resume_with_the_ticket_of_the_full_handshake(self_signed):
    c = connect(self_signed, trust=self_signed.fingerprint)
    first = next(iter(trust._sessions.values()))
    c.reconnect()
    c.reconnect()
    c.close()
    assert self_signed.resumed == [False, True, True]
    assert next(iter(trust._sessions.values())) is first


def test_a_resumed_connection_takes_a_fresh_ticket_once_the_old_one_aged(self_signed,
                                                                         monkeypatch):
    c = connect(self_signed, trust=self_signed.fingerprint)
    first = next(iter(trust._sessions.values()))
    monkeypatch.setattr(trust, "TICKET_REUSE_S", 0.0)
    c.reconnect()
    c.close()
    assert self_signed.resumed == [False, True]
    assert next(iter(trust._sessions.values()))[0] is not first[0]


# ------------------------------------------------------------ plain text


def test_tls_client_to_a_plain_server_names_the_flag(plain_server):
    with pytest.raises(ConnectionLost) as info:
        connect(plain_server)
    assert info.value.code == "TLS_UNAVAILABLE"
    assert "--plaintext" in info.value.message
    assert plain_server.requests == []


def test_plain_client_to_a_tls_server_names_the_flag(self_signed):
    c = Client(self_signed.host, self_signed.port, timeout=5, tls=False)
    with pytest.raises(ConnectionLost) as info:
        c.connect()
    assert info.value.code == "TLS_REQUIRED"
    assert "without --plaintext" in info.value.message
    assert self_signed.plain_refused == 1


def test_explicit_plaintext_still_works_with_a_plain_server(plain_server):
    c = Client(plain_server.host, plain_server.port, timeout=5, tls=False)
    c.connect()
    c.login("alice", "secret")
    c.close()


def test_implicit_plaintext_refuses_a_password_to_another_machine():
    security = trust.Security(None, explicit_plaintext=False)

    class Remote:
        def getpeername(self):
            return ("192.0.2.7", 2121)

    with pytest.raises(ServerAuthError) as info:
        security.check_credentials(Remote())
    assert "--plaintext" in info.value.message
    trust.Security(None, explicit_plaintext=True).check_credentials(Remote())


def test_implicit_plaintext_allows_loopback():
    class Local:
        def getpeername(self):
            return ("127.0.0.1", 2121)

    trust.Security(None, explicit_plaintext=False).check_credentials(Local())


# ------------------------------------------------------------ ftpc


def test_ftpc_unknown_server_without_terminal_exits_9_and_shows_how(self_signed, capsys,
                                                                     monkeypatch):
    monkeypatch.setattr(trust, "TLS_BY_DEFAULT", True)
    monkeypatch.setenv("FTPC_PASSWORD", "secret")
    status = ftpc(["--host", "127.0.0.1", "--port", str(self_signed.port),
                   "--user", "alice", "ls"])
    err = capsys.readouterr().err
    assert status == 9
    assert f"--trust {self_signed.fingerprint}" in err
    assert self_signed.requests == []


def test_ftpc_trust_then_plain_calls_work(self_signed, monkeypatch):
    monkeypatch.setattr(trust, "TLS_BY_DEFAULT", True)
    monkeypatch.setenv("FTPC_PASSWORD", "secret")
    base = ["--host", "127.0.0.1", "--port", str(self_signed.port), "--user", "alice"]
    assert ftpc([*base, "--trust", self_signed.fingerprint, "ls"]) == 0
    assert ftpc([*base, "ls"]) == 0
    assert any(isinstance(r, m.Login) for r in self_signed.requests)


def test_ftpc_plaintext_to_a_tls_server_exits_3_naming_the_flag(self_signed, capsys):
    status = ftpc(["--host", "127.0.0.1", "--port", str(self_signed.port), "--user", "alice",
                   "--plaintext", "ls"])
    assert status == 3
    assert "without --plaintext" in capsys.readouterr().err


def test_ftpc_malformed_trust_is_a_usage_error(self_signed, monkeypatch):
    monkeypatch.setattr(trust, "TLS_BY_DEFAULT", True)
    assert ftpc(["--port", str(self_signed.port), "--trust", "nope", "ls"]) == 2


# ------------------------------------------------------------ ftpc on a terminal

_FTPC_TLS = ("import sys; from client import trust; trust.TLS_BY_DEFAULT = True; "
             "from client.cli import main; sys.exit(main())")


def _spawn_ftpc(server, *args: str):
    import sys

    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "FTPC_PASSWORD": "secret", "FTPC_USER": "alice",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return pexpect, pexpect.spawn(
        sys.executable, ["-c", _FTPC_TLS, "--host", "127.0.0.1", "--port", str(server.port),
                         *args], env=env, timeout=20)


def test_ftpc_on_a_terminal_asks_yes_no_and_pins(self_signed):
    pexpect, child = _spawn_ftpc(self_signed, "ls")
    child.expect(r"\(yes/no\)\? ")
    assert self_signed.fingerprint in child.before.decode()
    assert self_signed.requests == []            # nothing sent while asking
    child.sendline("yes")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert self_signed.fingerprint in known_hosts().read_text()


def test_ftpc_on_a_terminal_no_exits_9(self_signed):
    pexpect, child = _spawn_ftpc(self_signed, "ls")
    child.expect(r"\(yes/no\)\? ")
    child.sendline("no")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 9
    assert not known_hosts().exists()
    assert self_signed.requests == []


def test_ftpc_trust_alone_means_tls(self_signed, monkeypatch):
    monkeypatch.setenv("FTPC_PASSWORD", "secret")
    assert ftpc(["--host", "127.0.0.1", "--port", str(self_signed.port), "--user", "alice",
                 "--trust", self_signed.fingerprint, "ls"]) == 0
    assert self_signed.plain_refused == 0


# ------------------------------------------------------------ connect_login: one round trip fewer
# Hello and the login leave with the TLS handshake's last flight (or in the first
# segment in plain text); the promises of connect() still hold.


@pytest.fixture
def tls_sends(monkeypatch) -> list[int]:
    """The size of every segment the client's TLS layer hands to the kernel."""
    sizes: list[int] = []
    flush = TLSStream.flush

    def counting(stream: TLSStream) -> None:
        if stream._out.pending:
            sizes.append(stream._out.pending)
        flush(stream)

    monkeypatch.setattr(TLSStream, "flush", counting)
    return sizes


@pytest.fixture
def plain_sends(monkeypatch) -> list[bytes]:
    sent: list[bytes] = []
    send = Connection.send

    def counting(conn: Connection, data: bytes) -> None:
        sent.append(conn._outbox + data)
        send(conn, data)

    monkeypatch.setattr(Connection, "send", counting)
    return sent


def tls_client(server: TLSFake) -> Client:
    return Client(server.host, server.port, timeout=5, tls=True, trust=server.fingerprint)


def test_hello_and_login_leave_with_the_handshakes_last_flight(self_signed, tls_sends):
    c = tls_client(self_signed)
    assert c.connect_login("alice", "secret").user == "alice"
    c.close()
    # ClientHello, then Finished + hello + login together: two sends, not three.
    assert len(tls_sends) == 2
    assert [type(r) for r in self_signed.requests] == [m.Hello, m.Login]


def test_connect_then_login_takes_one_send_more(self_signed, tls_sends):
    c = tls_client(self_signed)
    c.connect()
    c.login("alice", "secret")
    c.close()
    assert len(tls_sends) == 3


def test_plain_text_connect_login_reads_the_greeting_before_sending_the_login(plain_server,
                                                                             plain_sends):
    c = Client(plain_server.host, plain_server.port, timeout=5, tls=False)
    c.connect_login("alice", "secret")
    c.close()
    assert len(plain_sends) == 2            # hello; then, greeted, the login
    assert [type(r) for r in plain_server.requests] == [m.Hello, m.Login]


def test_connect_login_reads_and_keeps_the_greeting(self_signed):
    c = tls_client(self_signed)
    c.connect_login("alice", "secret")
    assert c.greeting is not None and c.greeting.max_data > 0
    assert c.pwd() == "/"
    c.close()


def test_connect_login_raises_a_refusing_greeting(plain_server):
    plain_server.greeting_error = "TOO_MANY_CONNECTIONS"
    c = Client(plain_server.host, plain_server.port, timeout=5, tls=False)
    with pytest.raises(ConnectionLost) as info:
        c.connect_login("alice", "secret")
    assert info.value.code == "TOO_MANY_CONNECTIONS"
    assert not c.connected


def test_connect_login_sends_no_credential_to_an_unauthenticated_server(self_signed):
    c = Client(self_signed.host, self_signed.port, timeout=5, tls=True)
    with pytest.raises(ServerAuthError):
        c.connect_login("alice", "secret")
    assert self_signed.requests == []


def test_connect_login_of_a_plain_client_to_a_tls_server_sends_no_credential(self_signed,
                                                                              plain_sends):
    c = Client(self_signed.host, self_signed.port, timeout=5, tls=False)
    with pytest.raises(ConnectionLost) as info:
        c.connect_login(token="t" * 43)
    assert info.value.code == "TLS_REQUIRED"
    assert all(b"t" * 43 not in sent for sent in plain_sends)


def test_connect_login_keeps_the_session_ticket_for_the_next_connect(self_signed):
    c = tls_client(self_signed)
    c.connect_login("alice", "secret")
    c.close()
    assert trust._sessions, "no ticket kept after a pipelined login"
    c.connect_login("alice", "secret")
    c.close()
    assert self_signed.resumed == [False, True]


def test_a_reconnect_pipelines_its_login(self_signed, tls_sends):
    c = tls_client(self_signed)
    c.connect_login("alice", "secret")
    before = len(tls_sends)
    c.reconnect()
    assert c.whoami() == "alice"
    c.close()
    # ClientHello, Finished + hello + login, then whoami.
    assert len(tls_sends) - before == 3


def test_ftpc_sends_hello_and_the_login_with_the_handshakes_last_flight(self_signed, tls_sends,
                                                                        monkeypatch):
    monkeypatch.setenv("FTPC_PASSWORD", "secret")
    assert ftpc(["--host", "127.0.0.1", "--port", str(self_signed.port), "--user", "alice",
                 "--trust", self_signed.fingerprint, "ls"]) == 0
    # ClientHello; Finished + hello + login; stat and ls of `ftpc ls`; quit.
    assert len(tls_sends) == 5
    assert [type(r) for r in self_signed.requests][:2] == [m.Hello, m.Login]
