"""The second storage backend (issue 18): metadata in PostgreSQL, file data in S3.

- :class:`MetaStore` (:mod:`.meta`): users, tokens, throttle, quotas and
  reservations, the folder tree, unfinished uploads, hash cache, collector queue.
- :class:`BlobStore` (:mod:`.blobs`): immutable blobs in one bucket; ranged reads.
- :class:`BlobWriter` (:mod:`.writer`): a blob as a multipart upload spooled to
  the part size, resumable from the recorded parts by any node.
- :func:`begin_upload` (:mod:`.transfer`): the whole upload sequence over both
  layers (begin or resume, lock, write, verify, publish).
- :func:`collect` (:mod:`.collector`): deletes replaced blobs and aborts
  abandoned multipart uploads; safe to crash at any step.

Needs the ``objstore`` extra (``psycopg[binary,pool]``, ``boto3``); nothing in
``storage`` imports this package, so the default backend stays standard-library
only.  See docs/OBJSTORE.md.
"""

from .blobs import DEFAULT_PART_SIZE, MIN_PART_SIZE, BlobConfig, BlobStore, parse_blob_url
from .collector import collect
from .meta import MetaStore
from .namespace import Node
from .pending import Pending
from .transfer import UploadHandle, begin_upload
from .writer import BlobWriter, Part, choose_part_size

__all__ = ["DEFAULT_PART_SIZE", "MIN_PART_SIZE", "BlobConfig", "BlobStore", "BlobWriter",
           "MetaStore", "Node", "Part", "Pending", "UploadHandle", "begin_upload",
           "choose_part_size", "collect", "parse_blob_url"]
