"""The digests a session may verify with, and how ``hello`` picks one.

SHA-256 is the protocol's baseline: every peer knows it, and every field that
was there before negotiation existed (``sha256``, ``defer_sha256``) keeps
meaning SHA-256.  BLAKE3 is an optional second digest -- the same strength
class for integrity, about twice as fast on one core -- used only where both
sides said so at ``hello``: the client lists what it can compute in
``digests``, the server answers the one chosen in ``digest``.  A peer without
the ``blake3`` package simply does not offer it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

__all__ = ["BLAKE3", "DIGESTS", "SHA256", "choose", "new_hasher", "supported"]

SHA256 = "sha256"
BLAKE3 = "blake3"
#: Every digest name this protocol revision defines (a request naming another is refused).
DIGESTS = (SHA256, BLAKE3)

try:  # an optional speed-up: without the package a peer negotiates SHA-256
    from blake3 import blake3 as _blake3
except ImportError:  # pragma: no cover - the package is a dependency; kept for old installs
    _blake3 = None


def supported() -> tuple[str, ...]:
    """The digests this process can compute, preferred first."""
    return (BLAKE3, SHA256) if _blake3 is not None else (SHA256,)


def new_hasher(name: str) -> Any:
    """A fresh hash object for ``name`` (``update``/``hexdigest``, like ``hashlib``).

    BLAKE3 runs on one thread (``max_threads=1``): the transfer already hashes on
    a helper thread of its own, beside the threads that move the bytes.
    """
    if name == SHA256:
        return hashlib.sha256()
    if name == BLAKE3 and _blake3 is not None:
        return _blake3(max_threads=1)
    raise ValueError(f"digest {name!r} is not available here")


def choose(offered: Iterable[str] | None, available: Iterable[str]) -> str:
    """The server's pick at ``hello``: BLAKE3 when the client offered it and the
    server can compute it (its store keeps BLAKE3 digests), else SHA-256.  Names
    this revision does not know are ignored, as TLS and SSH ignore unknown
    algorithms in an offer, so a later client may offer more."""
    if offered is not None and BLAKE3 in offered and BLAKE3 in available:
        return BLAKE3
    return SHA256
