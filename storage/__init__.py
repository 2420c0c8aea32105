"""Everything the daemon keeps on disk: users, confined homes, resumable uploads.

Standard library only.  See :class:`storage.store.Store` for the contract.
"""

from .errors import (
    ERRORS_BY_CODE,
    AccountDisabled,
    AuthFailed,
    BadPassword,
    BadPath,
    BadUsername,
    Exists,
    IntegrityError,
    IsADirectory,
    NoSpace,
    NoSuchUser,
    NotADirectory,
    NotEmpty,
    NotFound,
    OffsetMismatch,
    QuotaExceeded,
    StorageError,
    StorageIOError,
    TooManyPartials,
    UploadBusy,
    UserExists,
)
from .models import CommitResult, Entry, PartialInfo, SmallFile, Usage, UserInfo
from .names import USERNAME_PATTERN
from .sizes import parse_size
from .store import Store
from .upload import Upload

__all__ = [
    "ERRORS_BY_CODE",
    "USERNAME_PATTERN",
    "AccountDisabled",
    "AuthFailed",
    "BadPassword",
    "BadPath",
    "BadUsername",
    "CommitResult",
    "Entry",
    "Exists",
    "IntegrityError",
    "IsADirectory",
    "NoSpace",
    "NoSuchUser",
    "NotADirectory",
    "NotEmpty",
    "NotFound",
    "OffsetMismatch",
    "PartialInfo",
    "QuotaExceeded",
    "SmallFile",
    "StorageError",
    "StorageIOError",
    "Store",
    "TooManyPartials",
    "Upload",
    "UploadBusy",
    "Usage",
    "UserExists",
    "UserInfo",
    "parse_size",
]
