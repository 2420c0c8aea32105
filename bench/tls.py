"""Throwaway TLS material for the benchmarks: a self-signed ECDSA P-256
certificate for 127.0.0.1, made with the ``openssl`` command (no Python
dependency), and the client context that trusts exactly it.

The daemon's own TLS (issue 12) makes its own certificate; the harness only
needs one for the raw TLS baseline and for pyftpdlib-style contestants.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path


class NoTls(RuntimeError):
    """TLS material cannot be made here (no ``openssl`` command)."""


def make_cert(folder: Path) -> tuple[Path, Path]:
    """``(cert, key)`` PEM files in ``folder``, valid for IP 127.0.0.1 for a day."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise NoTls("the openssl command is not installed")
    cert, key = folder / "bench-cert.pem", folder / "bench-key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    key.chmod(0o600)
    return cert, key


def client_context(cafile: Path) -> ssl.SSLContext:
    """TLS 1.3 only, trusting ``cafile``, host name (the IP) checked."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx
