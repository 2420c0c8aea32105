"""File contents as immutable objects in an S3-compatible store (SeaweedFS, MinIO, Ceph, AWS).

A blob is written once under a fresh random id and never changed: an
overwrite is a new blob plus a metadata update, so a reader can never see a
half-written object and a blob is unreachable until the metadata points at it.
Large blobs are S3 multipart uploads (see :mod:`storage.objstore.writer`);
reads are ranged GETs handed out in bounded chunks.

Every call blocks on the network: call from worker threads, never the
reactor.  Failures of the service (refused, reset, timeout, 5xx, throttling)
become ``StorageIOError`` (``IO_ERROR``); a missing blob or multipart upload
``NotFound``.  Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``
/ ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_SHARED_CREDENTIALS_FILE`` or ``~/.aws/credentials``) unless given
explicitly; they are never put into messages, logs or ``repr``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import NotFound, StorageIOError

__all__ = ["MIN_PART_SIZE", "MAX_PARTS", "BlobConfig", "BlobStore", "PendingUpload",
           "parse_blob_url"]

_log = logging.getLogger(__name__)

#: S3's smallest part (all but the last part of a multipart upload).
MIN_PART_SIZE = 5 << 20
#: S3's largest part number.
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 16 << 20
DEFAULT_CHUNK = 256 << 10

_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}


@dataclass(frozen=True)
class BlobConfig:
    """Where the blobs live.  Holds no secret unless ``access_key``/``secret_key`` are given,
    and those are excluded from ``repr``."""

    bucket: str
    endpoint: str | None = None
    region: str | None = None
    prefix: str = ""
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 3


def parse_blob_url(url: str) -> BlobConfig:
    """``s3://BUCKET[/PREFIX]?endpoint=http://HOST:PORT&region=R`` -> ``BlobConfig``.

    Credentials are refused in the URL (``s3://key:secret@...``): a URL ends up
    in process lists, shell histories and logs.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.hostname:
        raise ValueError("blob URL must look like s3://BUCKET?endpoint=http://HOST:PORT")
    if parts.username or parts.password:
        raise ValueError("put S3 credentials in the environment or a credentials file, "
                         "not in the URL")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"endpoint", "region"}
    if unknown:
        raise ValueError(f"unknown blob URL parameter(s): {', '.join(sorted(unknown))}")
    prefix = parts.path.strip("/")
    return BlobConfig(bucket=parts.netloc, endpoint=query.get("endpoint"),
                      region=query.get("region"), prefix=f"{prefix}/" if prefix else "")


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


_loader_lock = threading.Lock()
_loader: Any = None


def _botocore_session() -> Any:
    """A new botocore session sharing one model loader with every other.

    Loading the S3 service model costs about half a second per session; the
    loader's cache is read-only afterwards, so sharing it is safe.  Each
    session still resolves its own credentials (the environment may change).
    """
    global _loader
    import botocore.session

    session = botocore.session.get_session()
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)
    return session


@dataclass(frozen=True)
class PendingUpload:
    """A multipart upload the store knows of (for the collector)."""

    key: str
    upload_id: str
    initiated: float


class BlobStore:
    """Thread-safe access to one bucket (boto3 clients are thread-safe)."""

    def __init__(self, config: BlobConfig) -> None:
        import boto3
        from botocore.config import Config

        self.config = config
        session = boto3.session.Session(botocore_session=_botocore_session())
        kwargs: dict[str, Any] = {}
        if config.access_key is not None:
            kwargs = {"aws_access_key_id": config.access_key,
                      "aws_secret_access_key": config.secret_key}
        self._client = session.client(
            "s3", endpoint_url=config.endpoint, region_name=config.region or "us-east-1",
            config=Config(s3={"addressing_style": "path"},
                          connect_timeout=config.connect_timeout,
                          read_timeout=config.read_timeout,
                          retries={"max_attempts": config.max_attempts, "mode": "standard"},
                          max_pool_connections=32),
            **kwargs)

    def __repr__(self) -> str:
        return f"BlobStore({self.config!r})"

    # ----- naming
    @staticmethod
    def new_blob_id() -> str:
        """128 random bits: unguessable and never reused, so no two writers share a blob."""
        return secrets.token_hex(16)

    def key(self, blob_id: str) -> str:
        """Object key of a blob; the two-digit fan-out keeps listings of one prefix short."""
        if len(blob_id) != 32 or any(c not in "0123456789abcdef" for c in blob_id):
            raise ValueError("malformed blob id")
        return f"{self.config.prefix}blobs/{blob_id[:2]}/{blob_id}"

    # ----- error mapping
    def _call(self, what: str, fn: Any, /, **kwargs: Any) -> Any:
        """Run one S3 call; service failures become ``StorageIOError``/``NotFound``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _NOT_FOUND_CODES:
                raise NotFound(f"{what}: no such object or upload in the object store")
            raise StorageIOError(f"object store error during {what}: {code or 'unknown'}",
                                 code=code or None)
        except BotoCoreError as exc:
            # Connection refused/reset, timeouts, credential problems: never print
            # the exception's kwargs (they hold request details), only its class.
            _log.warning("object store unavailable during %s: %s", what, type(exc).__name__)
            raise StorageIOError(f"object store unavailable during {what}",
                                 reason=type(exc).__name__)

    # ----- bucket
    def ensure_bucket(self) -> None:
        """Create the bucket if missing (idempotent); a deployment may pre-create it."""
        try:
            self._call("head bucket", self._client.head_bucket, Bucket=self.config.bucket)
        except NotFound:
            try:
                self._call("create bucket", self._client.create_bucket,
                           Bucket=self.config.bucket)
            except StorageIOError as exc:
                if exc.details.get("code") not in ("BucketAlreadyOwnedByYou",
                                                   "BucketAlreadyExists"):
                    raise

    # ----- whole objects
    def put(self, blob_id: str, data: bytes) -> str:
        """A small blob in one PUT; returns its ETag."""
        out = self._call("put", self._client.put_object, Bucket=self.config.bucket,
                         Key=self.key(blob_id), Body=data)
        return str(out["ETag"])

    def size(self, blob_id: str) -> int:
        out = self._call("head", self._client.head_object, Bucket=self.config.bucket,
                         Key=self.key(blob_id))
        return int(out["ContentLength"])

    def delete(self, blob_id: str) -> None:
        """Idempotent: deleting a missing blob succeeds (S3 semantics), so a collector
        that crashed after the DELETE can simply do it again."""
        self._call("delete", self._client.delete_object, Bucket=self.config.bucket,
                   Key=self.key(blob_id))

    def read(self, blob_id: str, start: int = 0, end: int | None = None,
             chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        """Stream bytes ``[start, end)`` in chunks of at most ``chunk_size``.

        One ranged GET; the body is read chunk by chunk as the caller pulls, so
        the whole object is never in memory and a slow consumer gives
        back-pressure down to the TCP connection.  Close the generator (or
        exhaust it) to release the connection.  A break mid-stream raises
        ``StorageIOError``; resume with a new ``read`` from the next offset.
        """
        if start < 0 or (end is not None and end < start):
            raise ValueError("bad range")
        if end == start:
            return iter(())
        rng = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        out = self._call("get", self._client.get_object, Bucket=self.config.bucket,
                         Key=self.key(blob_id), Range=rng)
        return self._chunks(out["Body"], chunk_size)

    def _chunks(self, body: Any, chunk_size: int) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError

        try:
            while True:
                try:
                    data = body.read(chunk_size)
                except (BotoCoreError, OSError) as exc:
                    raise StorageIOError("object store connection lost while reading",
                                         reason=type(exc).__name__)
                if not data:
                    return
                yield data
        finally:
            body.close()

    # ----- multipart
    def start_multipart(self, blob_id: str) -> str:
        """Begin a multipart upload of a new blob; returns the S3 upload id."""
        out = self._call("start multipart", self._client.create_multipart_upload,
                         Bucket=self.config.bucket, Key=self.key(blob_id))
        return str(out["UploadId"])

    def upload_part(self, blob_id: str, upload_id: str, number: int, body: Any) -> str:
        """Upload part ``number`` (1-based) from bytes or a seekable file; returns its ETag.

        Uploading a number again replaces that part, which is what makes a part
        whose recording was lost harmless: the resumer sends it again.
        """
        if not 1 <= number <= MAX_PARTS:
            raise ValueError("part number out of range")
        out = self._call("upload part", self._client.upload_part, Bucket=self.config.bucket,
                         Key=self.key(blob_id), UploadId=upload_id, PartNumber=number,
                         Body=body)
        return str(out["ETag"])

    def list_parts(self, blob_id: str, upload_id: str) -> list[tuple[int, int, str]]:
        """``(number, size, etag)`` of the parts S3 holds (for audits; the metadata is
        the authority for resuming)."""
        parts: list[tuple[int, int, str]] = []
        marker = 0
        while True:
            out = self._call("list parts", self._client.list_parts,
                             Bucket=self.config.bucket, Key=self.key(blob_id),
                             UploadId=upload_id, PartNumberMarker=marker)
            parts += [(int(p["PartNumber"]), int(p["Size"]), str(p["ETag"]))
                      for p in out.get("Parts", [])]
            if not out.get("IsTruncated"):
                return parts
            marker = int(out["NextPartNumberMarker"])

    def complete(self, blob_id: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        """Assemble ``(number, etag)`` parts into the blob (the blob exists from now on)."""
        self._call("complete multipart", self._client.complete_multipart_upload,
                   Bucket=self.config.bucket, Key=self.key(blob_id), UploadId=upload_id,
                   MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})

    def abort(self, blob_id: str, upload_id: str) -> None:
        """Drop a multipart upload and its parts; an unknown upload counts as done."""
        try:
            self._call("abort multipart", self._client.abort_multipart_upload,
                       Bucket=self.config.bucket, Key=self.key(blob_id), UploadId=upload_id)
        except NotFound:
            pass

    def list_multipart(self) -> Iterator[PendingUpload]:
        """Every unfinished multipart upload under our prefix, page by page."""
        kwargs: dict[str, Any] = {"Bucket": self.config.bucket,
                                  "Prefix": f"{self.config.prefix}blobs/"}
        while True:
            out = self._call("list multipart", self._client.list_multipart_uploads, **kwargs)
            for up in out.get("Uploads", []):
                initiated = up.get("Initiated")
                stamp = (initiated.timestamp() if isinstance(initiated, _dt.datetime)
                         else 0.0)
                yield PendingUpload(str(up["Key"]), str(up["UploadId"]), stamp)
            if not out.get("IsTruncated"):
                return
            kwargs["KeyMarker"] = out.get("NextKeyMarker", "")
            kwargs["UploadIdMarker"] = out.get("NextUploadIdMarker", "")

    def abort_stale(self, ttl: float, now: float | None = None,
                    keep: frozenset[str] = frozenset()) -> int:
        """Abort multipart uploads started more than ``ttl`` seconds ago, except the upload
        ids in ``keep`` (those the metadata still lists as live).  Returns how many.

        Safe to crash at any step and run again: each abort stands alone.
        """
        cutoff = (time.time() if now is None else now) - ttl
        stale = [up for up in self.list_multipart()
                 if up.initiated < cutoff and up.upload_id not in keep]
        for up in stale:
            try:
                self._call("abort multipart", self._client.abort_multipart_upload,
                           Bucket=self.config.bucket, Key=up.key, UploadId=up.upload_id)
            except NotFound:
                pass
        return len(stale)

