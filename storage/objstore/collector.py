"""The collector: removes blobs nothing points at any more, and abandoned multipart uploads.

Every step stands alone and is idempotent, so a collector killed anywhere
just runs again: a queued blob is deleted (or its multipart upload aborted,
and its blob deleted too: a node may have completed it and died before
publishing) *before* its queue row goes, and deleting or aborting twice is
harmless.
Uploads untouched for ``partial_ttl`` are first expired in the metadata (which
queues them), and multipart uploads the metadata never heard of (a node died
between starting one and recording it) are aborted once they are older than
``partial_ttl``.  Several nodes may collect at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import faults
from .blobs import BlobStore
from .meta import MetaStore

__all__ = ["CollectResult", "collect"]


@dataclass(frozen=True)
class CollectResult:
    expired: int            # unfinished uploads past the TTL, dropped from the metadata
    removed: int            # queued blobs deleted and queued multipart uploads aborted
    orphans: int            # multipart uploads unknown to the metadata, aborted


def collect(meta: MetaStore, blobs: BlobStore, partial_ttl: float, *,
            now: float | None = None, batch: int = 100) -> CollectResult:
    """One bounded pass (at most ``batch`` queued items).  SLOW: a worker's job."""
    expired = meta.expire_uploads(partial_ttl, now)
    removed = 0
    for blob, mpu in meta.take_garbage(batch):
        if mpu:
            blobs.abort(blob, mpu)
            blobs.delete(blob)      # completed before it was dropped: never published
        else:
            blobs.delete(blob)
        faults.crash_point("object.collect_after_delete")
        meta.done_garbage(blob, mpu)
        removed += 1
    orphans = blobs.abort_stale(partial_ttl, now, keep=meta.live_multipart_ids())
    return CollectResult(expired, removed, orphans)
