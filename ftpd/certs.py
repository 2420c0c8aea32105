"""The daemon's TLS certificate: create, load, fingerprint, rotate, and build contexts.

Without ``--tls-cert``/``--tls-key`` the daemon is its own authority, as an
OpenSSH server is: the first start makes a self-signed ECDSA P-256 certificate
and key under ``<root>/tls/`` and every later start reuses them, so clients can
pin the fingerprint once (trust on first use) and notice when it changes.

Fingerprints are written like OpenSSH's ``ssh-keygen -l``: ``SHA256:`` then the
standard base64 (``+/``) of the SHA-256 of the certificate's DER, without
``=`` padding (43 characters).  That is the form users already compare by eye.

The key never exists on disk with a mode wider than 0600, not even for an
instant: it is written to a fresh temporary file opened with mode 0600 and
``O_EXCL``, fsynced, then renamed over the old one.

``cryptography`` is imported only where a key is generated, so loading and
fingerprinting stay on the standard library.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ftpd.tls")

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
#: Self-signed certificates are pinned, not checked against a clock-bound CA
#: policy, so they are made to outlive the installation (ssh host keys never expire).
VALIDITY_DAYS = 3650
#: TLS 1.3 session tickets issued after each full handshake; a reconnecting
#: client resumes with one and skips the certificate exchange and signature.
NUM_TICKETS = 2
MIN_VERSIONS = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}


class CertError(Exception):
    """A certificate or key file is missing, unreadable, or does not match."""


@dataclass(frozen=True)
class CertPair:
    """Where a certificate chain (PEM, leaf first) and its private key live."""

    cert: Path
    key: Path

    def fingerprint(self) -> str:
        return fingerprint_file(self.cert)


def tls_dir(root: str | Path) -> Path:
    return Path(root) / "tls"


def default_pair(root: str | Path) -> CertPair:
    folder = tls_dir(root)
    return CertPair(folder / CERT_NAME, folder / KEY_NAME)


# ------------------------------------------------------------ fingerprints


def fingerprint(der: bytes) -> str:
    """``SHA256:<base64, no padding>`` of a DER certificate, as ``ssh-keygen -l`` prints."""
    digest = hashlib.sha256(der).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def first_cert_der(pem: str) -> bytes:
    """The DER of the first (leaf) certificate of a PEM chain."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = pem.find(begin)
    stop = pem.find(end, start)
    if start < 0 or stop < 0:
        raise CertError("no PEM certificate found")
    try:
        return ssl.PEM_cert_to_DER_cert(pem[start:stop + len(end)] + "\n")
    except ValueError as exc:
        raise CertError(f"bad PEM certificate: {exc}")


def fingerprint_file(path: str | Path) -> str:
    try:
        text = Path(path).read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise CertError(f"cannot read certificate {path}: {exc}")
    return fingerprint(first_cert_der(text))


# ------------------------------------------------------------ creation


def ensure_self_signed(root: str | Path) -> CertPair:
    """The pair under ``<root>/tls/``, made on the first call and reused afterwards."""
    pair = default_pair(root)
    if pair.cert.exists() and pair.key.exists():
        return pair
    return rotate(root)


def rotate(root: str | Path) -> CertPair:
    """Make a new self-signed pair under ``<root>/tls/``, replacing any old one.

    The key is renamed into place before the certificate, so a reader sees
    either the old pair, or (for a moment) the new key with the old
    certificate, which ``load_cert_chain`` rejects and a reload then skips.
    """
    pair = default_pair(root)
    pair.cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(pair.cert.parent, 0o700)
    cert_pem, key_pem = generate_self_signed()
    _write_atomically(pair.key, key_pem, 0o600)
    _write_atomically(pair.cert, cert_pem, 0o644)
    return pair


def generate_self_signed(hostname: str | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, PKCS#8 key PEM): ECDSA P-256, self-signed, SHA-256.

    The names (this host, localhost, 127.0.0.1, ::1) only matter to clients
    that check host names against a CA; pinning clients ignore them.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    host = hostname or socket.gethostname() or "localhost"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ftpd {host}"[:64])])
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
           x509.IPAddress(ipaddress.ip_address("::1"))]
    if host != "localhost":
        try:
            alt.insert(0, x509.DNSName(host))
        except ValueError:
            pass
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem, key_pem


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file created with ``mode`` (never wider), then rename it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)       # the umask may have narrowed it; never widened
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ------------------------------------------------------------ contexts


def resolve(root: str | Path, cert: str | Path | None = None,
            key: str | Path | None = None) -> CertPair:
    """The pair the daemon serves: the given files, or the self-signed pair under root."""
    if (cert is None) != (key is None):
        raise CertError("give both tls_cert and tls_key, or neither")
    if cert is not None and key is not None:
        return CertPair(Path(cert), Path(key))
    return ensure_self_signed(root)


def server_context(pair: CertPair, min_version: str = "1.3") -> ssl.SSLContext:
    """A server context: TLS 1.3 (1.2 only if asked), tickets on, renegotiation off."""
    if min_version not in MIN_VERSIONS:
        raise CertError(f"tls_min_version must be one of {sorted(MIN_VERSIONS)}, "
                        f"not {min_version!r}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSIONS[min_version]
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    # A peer that drops TCP without close_notify is an ordinary EOF, not a fatal
    # alert: frames are length-prefixed, so a truncation shows in the framing.
    ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    ctx.num_tickets = NUM_TICKETS
    try:
        ctx.load_cert_chain(pair.cert, pair.key)
    except (OSError, ssl.SSLError) as exc:
        raise CertError(f"cannot load {pair.cert} / {pair.key}: {exc}")
    return ctx


class ServerCredentials:
    """The daemon's current certificate and the context new connections get.

    ``reload()`` (on SIGHUP) builds a whole new context from the files; live
    connections keep the context they were made with, so nothing is dropped.
    A reload that fails keeps the old context and says why.
    """

    def __init__(self, pair: CertPair, min_version: str = "1.3") -> None:
        self.pair = pair
        self.min_version = min_version
        self.context = server_context(pair, min_version)
        self.fingerprint = pair.fingerprint()

    def reload(self) -> bool:
        """Re-read the files; True when the new certificate is in use."""
        try:
            context = server_context(self.pair, self.min_version)
            fp = self.pair.fingerprint()
        except CertError as exc:
            log.error("tls reload failed, keeping the old certificate: %s", exc)
            return False
        self.context, self.fingerprint = context, fp
        log.info("tls reloaded, fingerprint %s", fp)
        return True


# ------------------------------------------------------------ daemon start-up


def credentials_for(root: str | Path, tls: bool, cert: str = "", key: str = "",
                    min_version: str = "1.3") -> ServerCredentials | None:
    """What ``Server`` needs at start (``None``: plain text).  Takes the Config's
    ``root, tls, tls_cert, tls_key, tls_min_version``; logs the fingerprint line
    (``tls fingerprint SHA256:...``) that ``ftpd tls fingerprint`` also prints."""
    if not tls:
        return None
    creds = ServerCredentials(resolve(root, cert or None, key or None), min_version)
    log.info("tls fingerprint %s", creds.fingerprint)
    return creds


def plaintext_warning(host: str) -> str | None:
    """The warning to log when plain text listens beyond loopback (None: no warning)."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host == "localhost":
            return None
    return (f"TLS is off (--plaintext) and the daemon listens on {host}: passwords, "
            "tokens and files cross the network in clear text")
