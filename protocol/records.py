"""The catalogue's shared parts: wire limits, digest patterns, field helpers, and
the two records nested in replies (``Entry``, ``UploadInfo``).

Requests (:mod:`protocol.messages`) and replies (:mod:`protocol.replies`) both
build on these; :mod:`protocol.messages` re-exports everything, so the
catalogue is still one import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .schema import Message, fld

__all__ = ["BLAKE3_RE", "DIGEST_NAME_RE", "MAX_INT", "MAX_MODE", "MAX_PATH_CHARS",
           "PROTOCOL_VERSION", "SHA256_RE", "Entry", "UploadInfo", "id_field", "path_field",
           "user_field"]

PROTOCOL_VERSION = 1
#: Largest integer every JSON implementation represents exactly.
MAX_INT = 2**53 - 1
MAX_PATH_CHARS = 4096
SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: A BLAKE3 digest as sent: its default 32-byte output, 64 lower-case hex digits.
BLAKE3_RE = SHA256_RE
#: A digest name in ``hello``'s offer (names this revision does not know are ignored).
DIGEST_NAME_RE = re.compile(r"[a-z0-9-]{1,32}")
#: Permission bits a put may carry: the file mode's 12 low bits (the server keeps
#: only the 0o777 ones, masked by its umask; never setuid, setgid or sticky).
MAX_MODE = 0o7777


def id_field() -> Any:
    """A request or reply id: an integer every JSON implementation holds exactly."""
    return fld(min=0, max=MAX_INT)


def user_field() -> Any:
    """A user name at the message layer: 1 to 64 characters."""
    return fld(min_len=1, max_len=64)


def path_field() -> Any:
    """A path as sent: 1 to ``MAX_PATH_CHARS`` characters."""
    return fld(min_len=1, max_len=MAX_PATH_CHARS)

# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class Entry(Message):
    """One line of a listing or the answer to ``stat``."""

    name: str = fld(max_len=1024)
    type: str = fld(choices=("file", "dir", "other"))
    size: int = fld(min=0, max=MAX_INT)
    mtime: float = fld(min=0)


@dataclass(frozen=True)
class UploadInfo(Message):
    """An unfinished upload of the logged-in user."""

    path: str = path_field()
    size: int = fld(min=0, max=MAX_INT)
    offset: int = fld(min=0, max=MAX_INT)
    updated: float = fld(min=0)
    sha256: str | None = fld(None, pattern=SHA256_RE)
    blake3: str | None = fld(None, pattern=BLAKE3_RE)
