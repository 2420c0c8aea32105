"""Immutable result records handed to the daemon (safe to pass between threads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CommitResult", "Entry", "EntryType", "PartialInfo", "SmallFile", "Usage", "UserInfo"]

EntryType = Literal["file", "dir", "other"]


@dataclass(frozen=True)
class UserInfo:
    name: str
    quota: int
    used: int
    created: float
    disabled: bool
    #: The account's id, never reused (a re-created name gets a new one), and its
    #: generation, bumped whenever its sessions must end (new password, disabled).
    #: A session keeps both from its login and asks ``Store.login_valid`` later.
    uid: int = 0
    generation: int = 0


@dataclass(frozen=True)
class Usage:
    """Quota state: committed bytes, bytes reserved by unfinished uploads, limit."""

    used: int
    reserved: int
    limit: int

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used - self.reserved)


@dataclass(frozen=True)
class Entry:
    """One directory entry; ``type`` is "other" for symlinks, FIFOs, devices..."""

    name: str
    path: str
    type: EntryType
    size: int
    mtime: float


@dataclass(frozen=True)
class PartialInfo:
    """An unfinished upload; ``offset`` is the number of bytes really on disk."""

    path: str
    size: int
    offset: int
    sha256: str | None
    updated: float
    blake3: str | None = None   # declared instead of sha256 (issue 17)


@dataclass(frozen=True)
class CommitResult:
    path: str
    size: int
    sha256: str | None      # None when the upload declared no SHA-256 (nothing was hashed)
    blake3: str | None = None   # the BLAKE3 it was verified against, when it declared one


@dataclass(frozen=True)
class SmallFile:
    """One whole small file to store at once (``Store.store_small_files``).

    ``path`` is as the client named it, relative to ``cwd``; ``data`` is the
    whole content (its length is the size); ``sha256`` (or ``blake3``), when
    given, must match.
    """
    path: str
    data: bytes
    sha256: str | None = None
    overwrite: bool = False
    cwd: str = "/"
    mtime: float | None = None     # applied before the file becomes visible
    mode: int | None = None        # (storage.metadata)
    blake3: str | None = None      # declared instead of sha256 (issue 17)
