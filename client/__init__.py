"""The client library and the ``ftpc`` command.

``Client`` is a blocking, one-connection client: one method per protocol
command, typed results, typed exceptions, resumable and verified transfers.
Only ``protocol`` is imported from the rest of the project.
"""

from .client import Client
from .connection import FAST as FAST_DIGESTS
from .errors import (
    AuthError,
    Cancelled,
    ConnectionLost,
    FtpError,
    IntegrityError,
    NotFoundError,
    PathError,
    QuotaError,
    RegistrationError,
    RequestError,
    ServerAuthError,
    ServerError,
    TransferError,
    error_for,
)
from .results import (
    Entry,
    GetResult,
    HashResult,
    Listing,
    MoveResult,
    PutResult,
    QuotaInfo,
    Session,
    StatResult,
    UploadInfo,
)
from .tree import get_tree, put_tree

__all__ = [
    "FAST_DIGESTS", "AuthError", "Cancelled", "Client", "ConnectionLost", "Entry", "FtpError",
    "GetResult",
    "HashResult", "IntegrityError", "Listing", "MoveResult", "NotFoundError", "PathError",
    "PutResult", "QuotaError", "QuotaInfo", "RegistrationError", "RequestError",
    "ServerAuthError", "ServerError", "Session", "StatResult", "TransferError", "UploadInfo",
    "error_for", "get_tree", "put_tree",
]
