"""Who the server is: TLS on the client, certificate chains, and ssh-style pinning.

A server is authenticated, in this order, by

1. a certificate chain that validates against ``--cacert FILE`` (or the system
   store without it), with the host name checked -- the curl way; or
2. a fingerprint pinned for ``host:port`` in the known-hosts file
   (``FTPC_KNOWN_HOSTS``, default ``~/.config/ftpc/known_hosts``; one
   ``host:port SHA256:...`` line per server) -- the ssh way.

An unknown server is asked about on a terminal (yes/no, as ssh does) and
refused otherwise, with its fingerprint and the ``--trust`` flag to accept
it.  A server whose pinned fingerprint changed is refused loudly whatever the
flags, except ``--trust`` with exactly the new value.  Every such failure is a
``ServerAuthError`` (exit status 9), raised before a single request -- so
before any credential -- has been sent.

Fingerprints are ``SHA256:`` + unpadded standard base64 of the SHA-256 of the
certificate's DER, as ``ssh-keygen -l`` prints and ``ftpd tls fingerprint`` shows.

Handshakes: with a pin (or ``--trust``) for the server, one handshake without
chain checking, then the pin; otherwise one with chain checking and, only if
that fails, a second one to learn the fingerprint.  Sessions (TLS 1.3 tickets)
are kept per ``host:port`` for the life of the process, so a reconnect resumes.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConnectionLost, ServerAuthError
from .tls_stream import TLSStream

#: Whether Client() and ftpc use TLS when neither tls= nor --plaintext says.
TLS_BY_DEFAULT = True
FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
#: TLS record types a server's first byte may be: handshake, or an alert refusing us.
_TLS_FIRST_BYTES = (0x16, 0x15)
#: A prompt: shows the question, returns the answer line.
Prompt = Callable[[str], str]


def fingerprint(der: bytes) -> str:
    digest = hashlib.sha256(der).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def check_fingerprint(text: str) -> str:
    text = text.strip()
    if not FINGERPRINT.match(text):
        raise ValueError(f"not a fingerprint: {text!r} (expected SHA256: and 43 base64 "
                         "characters, as `ftpd tls fingerprint` prints)")
    return text


def host_key(host: str, port: int) -> str:
    """``host:port``, or ``[v6addr]:port`` as ssh writes it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def default_known_hosts() -> Path:
    env = os.environ.get("FTPC_KNOWN_HOSTS")
    if env:
        return Path(env)
    return Path.home() / ".config" / "ftpc" / "known_hosts"


# ------------------------------------------------------------ known hosts


class KnownHosts:
    """The pinning file: ``host:port SHA256:...`` lines; ``#`` comments."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_known_hosts()

    def lookup(self, key: str) -> tuple[str, int] | None:
        """(fingerprint, line number) of the first entry for ``key``."""
        try:
            lines = self.path.read_text("utf-8").splitlines()
        except FileNotFoundError:
            return None
        for number, line in enumerate(lines, 1):
            parts = line.split()
            if len(parts) >= 2 and not parts[0].startswith("#") and parts[0] == key:
                return parts[1], number
        return None

    def add(self, key: str, fp: str) -> None:
        """Pin ``fp`` for ``key``, replacing an old entry (file and folder made private)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            old = self.path.read_text("utf-8").splitlines()
        except FileNotFoundError:
            old = []
        kept = [line for line in old if line.split()[:1] != [key]]
        kept.append(f"{key} {fp}")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, ("\n".join(kept) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


# ------------------------------------------------------------ policy


@dataclass
class TrustOptions:
    """How this client decides it talks to the right server."""

    cacert: str | None = None               # CA bundle for the chain check (else system store)
    trust: str | None = None                # --trust / FTPC_TRUST: accept exactly this
    known_hosts: KnownHosts = field(default_factory=KnownHosts)  # or a path
    prompt: Prompt | None = None            # None: no terminal, refuse unknown servers
    notice: Callable[[str], None] | None = None   # "Permanently added ..." goes here

    def __post_init__(self) -> None:
        if not isinstance(self.known_hosts, KnownHosts):
            self.known_hosts = KnownHosts(self.known_hosts)
        if self.trust:
            self.trust = check_fingerprint(self.trust)


@dataclass
class Security:
    """A client's choice: TLS with ``options``, or plain text (explicitly asked or not)."""

    options: TrustOptions | None
    explicit_plaintext: bool = False

    @classmethod
    def make(cls, tls: bool | None = None, **trust: object) -> Security:
        """``tls=None``: the default (TLS_BY_DEFAULT); ``tls=False`` is an explicit choice."""
        use_tls = TLS_BY_DEFAULT if tls is None else tls
        if not use_tls:
            return cls(None, explicit_plaintext=tls is False)
        return cls(TrustOptions(**trust))  # type: ignore[arg-type]

    def check_credentials(self, sock: socket.socket) -> None:
        """Refuse to send a credential in clear text to another machine unless plain
        text was asked for explicitly (a TLS connection is authenticated already)."""
        if self.options is not None or self.explicit_plaintext:
            return
        try:
            peer = sock.getpeername()[0]
            if ipaddress.ip_address(peer.split("%")[0]).is_loopback:
                return
        except (OSError, ValueError):
            peer = "?"
        raise ServerAuthError(
            "CLEARTEXT_REFUSED",
            f"refusing to send credentials in clear text to {peer}: connect with TLS, "
            "or give --plaintext explicitly if the network is trusted")


def terminal_prompt(question: str) -> str:
    """Ask on the terminal (stderr, so stdout stays clean for results)."""
    sys.stderr.write(question)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.strip()


_contexts: dict[str | None, ssl.SSLContext] = {}
#: (host key, context id) -> (the session to resume, when it was stored: monotonic s)
_sessions: dict[tuple[str, int], tuple[ssl.SSLSession, float]] = {}

#: A resumed connection keeps resuming with the ticket it used for this long before
#: the newest ticket replaces it.  Fetching a session from CPython's ``ssl`` copies it
#: (certificate chain included) and costs about as much CPU as the resumed handshake
#: itself; a quick reconnect loop would pay it every time.  RFC 8446 (C.4) advises
#: against reusing a ticket because the ticket links connections for an observer:
#: within these seconds they already share the client's address, and the tickets a
#: server hands out are reused nowhere else.  A full handshake always stores its ticket.
TICKET_REUSE_S = 300.0


def _chain_context(cacert: str | None) -> ssl.SSLContext:
    ctx = _contexts.get(cacert)
    if ctx is None:
        ctx = ssl.create_default_context(cafile=cacert)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        _contexts[cacert] = ctx
    return ctx


def _pin_context() -> ssl.SSLContext:
    """No chain check: the fingerprint decides (and is checked before any request)."""
    ctx = _contexts.get("\0pin")
    if ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        _contexts["\0pin"] = ctx
    return ctx


def remember_session(sock: socket.socket, key: str) -> None:
    """Keep an authenticated connection's session for the next connect to ``key``
    (a resumed one keeps the ticket it came with for ``TICKET_REUSE_S``)."""
    if not isinstance(sock, TLSStream):
        return
    where = (key, id(sock.context))
    now = time.monotonic()
    if sock.session_reused:
        held = _sessions.get(where)
        if held is not None and now - held[1] < TICKET_REUSE_S:
            return
    session = sock.session
    if session is not None and session.has_ticket:
        _sessions[where] = (session, now)


def forget_sessions() -> None:
    _sessions.clear()


# ------------------------------------------------------------ connecting


def open_tls(dial: Callable[[], socket.socket], host: str, port: int,
             options: TrustOptions, timeout: float | None) -> TLSStream:
    """A TLS socket to an authenticated server, or ``ServerAuthError``/``ConnectionLost``."""
    key = host_key(host, port)
    pinned = options.known_hosts.lookup(key)
    if pinned is None and options.trust is None:
        try:
            return _handshake(dial(), _chain_context(options.cacert), host, key, timeout)
        except ssl.SSLCertVerificationError as exc:
            chain_error = exc.verify_message or exc.reason or str(exc)
        sock = _handshake(dial(), _pin_context(), host, key, timeout)
        return _unknown(sock, key, options, chain_error)
    sock = _handshake(dial(), _pin_context(), host, key, timeout)
    if sock.session_reused:
        return sock                     # resumed a session authenticated earlier
    fp = fingerprint(sock.getpeercert(binary_form=True) or b"")
    if fp == options.trust:
        if pinned is None or pinned[0] != fp:
            _record(options, key, fp)
        return sock
    if pinned is not None and pinned[0] == fp:
        return sock
    sock.close()
    try:                                # a chain that validates still wins
        return _handshake(dial(), _chain_context(options.cacert), host, key, timeout)
    except ssl.SSLCertVerificationError:
        pass
    if pinned is not None:
        raise ServerAuthError("SERVER_CHANGED", _changed_message(key, fp, pinned, options))
    raise ServerAuthError(
        "UNKNOWN_SERVER",
        f"the server {key} presented {fp}, not the fingerprint given with --trust "
        f"({options.trust}); not connecting")


def _unknown(sock: TLSStream, key: str, options: TrustOptions,
             chain_error: str) -> TLSStream:
    fp = fingerprint(sock.getpeercert(binary_form=True) or b"")
    if options.prompt is not None:
        question = (f"The authenticity of server '{key}' can't be established "
                    f"({chain_error}).\nTLS certificate fingerprint is {fp}.\n"
                    f"Compare it with `ftpd tls fingerprint` on the server.\n"
                    f"Are you sure you want to continue connecting (yes/no)? ")
        for _ in range(3):
            try:
                answer = options.prompt(question)
            except (EOFError, OSError):
                break
            if answer == "yes" or answer == fp:
                _record(options, key, fp)
                return sock
            if answer == "no":
                break
            question = "Please type 'yes', 'no' or the fingerprint: "
        sock.close()
        raise ServerAuthError("UNKNOWN_SERVER",
                              f"server {key} not trusted (fingerprint {fp})")
    sock.close()
    raise ServerAuthError(
        "UNKNOWN_SERVER",
        f"cannot authenticate the server {key}: {chain_error}, and no fingerprint is "
        f"pinned for it in {options.known_hosts.path}.\nIts TLS certificate "
        f"fingerprint is {fp}.\nIf `ftpd tls fingerprint` on the server prints the same, "
        f"trust it with: --trust {fp} (or FTPC_TRUST={fp})")


def _record(options: TrustOptions, key: str, fp: str) -> None:
    try:
        options.known_hosts.add(key, fp)
    except OSError as exc:
        if options.notice:
            options.notice(f"could not record {key} in {options.known_hosts.path}: {exc}")
        return
    if options.notice:
        options.notice(f"Permanently added '{key}' ({fp}) to the list of known servers "
                       f"({options.known_hosts.path}).")


def _changed_message(key: str, fp: str, pinned: tuple[str, int],
                     options: TrustOptions) -> str:
    bar = "@" * 59
    path = options.known_hosts.path
    return (f"\n{bar}\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n{bar}\n"
            "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n"
            "Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n"
            "It is also possible that the server's certificate was just replaced "
            "(ftpd tls rotate).\n"
            f"The TLS certificate fingerprint sent by {key} is\n{fp}\n"
            f"and the one pinned for it is\n{pinned[0]}\n"
            f"Offending entry: {path}:{pinned[1]}\n"
            f"Remove that line (or run once with --trust {fp} after checking it "
            "with the server's administrator) to connect again.\n"
            "Refusing to connect.")


def _handshake(raw: socket.socket, ctx: ssl.SSLContext, host: str, key: str,
               timeout: float | None) -> TLSStream:
    """TLS handshake on a connected socket, telling a plain-text server apart."""
    deadline = None if timeout is None else time.monotonic() + timeout
    held = _sessions.get((key, id(ctx)))
    try:
        stream = TLSStream(raw, ctx, host, held[0] if held is not None else None)
    except (OSError, ValueError) as exc:
        raw.close()
        raise ConnectionLost("CONNECTION_FAILED", f"TLS to {key}: {exc}")
    first = True
    try:
        while True:
            try:
                stream.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            data = _recv(raw, deadline, key)
            if first and data:
                first = False               # look before OpenSSL reads the server's first byte
                if data[0] not in _TLS_FIRST_BYTES:
                    raise ConnectionLost(
                        "TLS_UNAVAILABLE",
                        f"the server at {key} does not speak TLS (a plain-text daemon, "
                        "ftpd serve --plaintext): connect with --plaintext, only on a "
                        "network you trust")
            stream.feed(data)
        raw.settimeout(timeout)
        return stream
    except ssl.SSLCertVerificationError:
        raw.close()
        raise
    except ssl.SSLError as exc:
        raw.close()
        raise ConnectionLost("TLS_FAILED", f"TLS handshake with {key} failed: "
                             f"{exc.reason or exc}")
    except OSError as exc:
        raw.close()
        raise ConnectionLost("CONNECTION_LOST", f"TLS handshake with {key}: "
                             f"{exc.strerror or exc}")
    except BaseException:
        raw.close()
        raise


def _recv(raw: socket.socket, deadline: float | None, key: str) -> bytes:
    """The server's next bytes during the handshake, within what is left of the timeout."""
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left <= 0:
        raise ConnectionLost("TIMEOUT", f"TLS handshake with {key} timed out")
    raw.settimeout(left)
    try:
        return raw.recv(65536)
    except TimeoutError:
        raise ConnectionLost("TIMEOUT", f"TLS handshake with {key} timed out") from None
