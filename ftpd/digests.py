"""Which digest a request may name: the session's choice at ``hello`` (issue 17).

SHA-256 is always allowed (old clients, ``ftpc hash``'s default); BLAKE3 only
where ``hello`` chose it, which it does only for a store that lists BLAKE3 in
its ``digests`` -- so a store that cannot verify BLAKE3 is never asked to.
"""

from __future__ import annotations

from typing import Any

from protocol import ProtocolError
from protocol.digests import SHA256

__all__ = ["negotiated"]


def negotiated(session: Any, name: str | None) -> str:
    """The digest a request names (None: SHA-256), if this session may use it;
    else a ``BAD_REQUEST`` refusal that says which one the session verifies with."""
    if name is None or name == SHA256:
        return SHA256
    if name != session.digest:
        raise ProtocolError(f"digest {name!r} was not negotiated at hello "
                            f"(this session verifies with {session.digest})",
                            code="BAD_REQUEST", digest=session.digest)
    return name
