"""The digests the local store verifies uploads with and keeps in its hash cache.

SHA-256 always; BLAKE3 too when the ``blake3`` package is installed (it is a
dependency; an install without it only loses the faster digest).  The daemon
offers BLAKE3 at ``hello`` only when its store lists it in ``Store.digests``.
This package imports nothing of the protocol's, so the two names live here too.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

__all__ = ["BLAKE3", "HEX_RE", "SHA256", "check_digest", "digest_of", "new_hasher",
           "supported"]

SHA256 = "sha256"
BLAKE3 = "blake3"
#: Both digests as stored: 32 bytes, 64 lower-case hex digits.
HEX_RE = re.compile(r"[0-9a-f]{64}")

try:
    from blake3 import blake3 as _blake3
except ImportError:  # pragma: no cover - a dependency; kept for partial installs
    _blake3 = None


def supported() -> tuple[str, ...]:
    """What this process can hash, preferred first."""
    return (BLAKE3, SHA256) if _blake3 is not None else (SHA256,)


def new_hasher(algo: str) -> Any:
    """A fresh ``update``/``hexdigest`` object; BLAKE3 on one thread (a worker's)."""
    if algo == SHA256:
        return hashlib.sha256()
    if algo == BLAKE3 and _blake3 is not None:
        return _blake3(max_threads=1)
    raise ValueError(f"digest {algo!r} is not available")


def digest_of(algo: str, data: bytes) -> str:
    """The hex ``algo`` digest of ``data`` held in memory (a small file)."""
    hasher = new_hasher(algo)
    hasher.update(data)
    return str(hasher.hexdigest())


def check_digest(value: object, algo: str = SHA256) -> str | None:
    """``value`` in lower case (None stays None); ``ValueError`` unless 64 hex digits."""
    if value is None:
        return None
    if not isinstance(value, str) or not HEX_RE.fullmatch(value.lower()):
        raise ValueError(f"{algo} must be 64 hexadecimal digits")
    return value.lower()
