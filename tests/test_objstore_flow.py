"""Both layers together on real services: uploads that move between nodes, the collector."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("boto3", reason="needs the objstore extra: pip install -e '.[objstore]'")
pytest.importorskip("psycopg", reason="needs the objstore extra: pip install -e '.[objstore]'")

import psycopg

from storage.errors import NotFound, StorageIOError, UploadBusy
from storage.objstore import BlobConfig, BlobStore, MetaStore, begin_upload, collect
from storage.objstore.blobs import MIN_PART_SIZE
from tests.objstore_services import (
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    PostgresService,
    SeaweedService,
    unique_name,
)

PART = MIN_PART_SIZE


class _Node:
    """What one ftpd node holds: its own pool, lock session and S3 client."""

    def __init__(self, url: str, s3: SeaweedService, bucket: str) -> None:
        self.meta = MetaStore(url, timeout=3.0)
        self.blobs = BlobStore(BlobConfig(bucket=bucket, endpoint=s3.endpoint,
                                          access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY,
                                          connect_timeout=1.0, max_attempts=1))

    def die(self) -> None:
        """The node is gone: its lock session closes, so PostgreSQL frees its locks.

        The server notices the closed session a moment later; wait for that (as a
        client reconnecting to another node would) with a bounded deadline.
        """
        pid = self.meta.locks.session
        self.meta.close()
        with psycopg.connect(self.meta.db.url, autocommit=True) as admin:
            deadline = time.monotonic() + 10
            while admin.execute("SELECT count(*) FROM pg_locks WHERE pid = %s",
                                (pid,)).fetchone()[0]:
                assert time.monotonic() < deadline, "the dead node's locks stayed"
                time.sleep(0.02)


@pytest.fixture
def nodes(pg_database: str, s3_service: SeaweedService,
          s3_bucket: str) -> Iterator[tuple[_Node, _Node]]:
    a, b = _Node(pg_database, s3_service, s3_bucket), _Node(pg_database, s3_service, s3_bucket)
    yield a, b
    for node in (a, b):
        node.meta.close()


@pytest.fixture
def user(nodes: tuple[_Node, _Node]) -> str:
    name = unique_name("f")
    nodes[0].meta.create_user(name, "pwhash", quota=1 << 30)
    return name


def _data(size: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048
    return (block * (size // len(block) + 1))[:size]


def _read(node: _Node, user: str, path: str) -> bytes:
    blob = node.meta.stat(user, path).blob
    assert blob is not None
    return b"".join(node.blobs.read(blob))


def test_upload_begun_on_one_node_resumes_on_another_from_the_recorded_parts(
        nodes: tuple[_Node, _Node], user: str) -> None:
    a, b = nodes
    data = _data(2 * PART + 999, seed=1)
    sha = hashlib.sha256(data).hexdigest()
    up = begin_upload(a.meta, a.blobs, user, "/big", len(data), sha, part_size=PART)
    up.write(data[: PART + 12345])       # one part recorded, the rest only in A's spool
    a.die()                              # without release: A's lock goes with its session
    resumed = begin_upload(b.meta, b.blobs, user, "/big", len(data), sha, part_size=PART)
    assert resumed.offset == PART
    resumed.write(data[resumed.offset:])
    node = resumed.commit()
    assert (node.size, node.sha256) == (len(data), sha)
    assert b.meta.usage(user).used == len(data)
    assert _read(b, user, "/big") == data


def test_blob_completed_by_a_node_that_died_before_publishing_is_verified_and_published(
        nodes: tuple[_Node, _Node], user: str) -> None:
    a, b = nodes
    data = _data(PART + 10, seed=4)
    sha = hashlib.sha256(data).hexdigest()
    up = begin_upload(a.meta, a.blobs, user, "/f", len(data), sha, part_size=PART)
    up.write(data)
    up.writer.finish(len(data), sha)     # completed in S3, then A dies before publish
    a.die()
    resumed = begin_upload(b.meta, b.blobs, user, "/f", len(data), sha, part_size=PART)
    assert resumed.offset == len(data)
    assert resumed.commit().sha256 == sha
    assert _read(b, user, "/f") == data


def test_second_writer_of_one_upload_on_another_node_is_busy(
        nodes: tuple[_Node, _Node], user: str) -> None:
    a, b = nodes
    with begin_upload(a.meta, a.blobs, user, "/f", 10, None), pytest.raises(UploadBusy):
        begin_upload(b.meta, b.blobs, user, "/f", 10, None)


def test_file_is_invisible_until_published(nodes: tuple[_Node, _Node], user: str) -> None:
    a, _ = nodes
    up = begin_upload(a.meta, a.blobs, user, "/f", 5, None)
    up.write(b"hello")
    with pytest.raises(NotFound):
        a.meta.stat(user, "/f")
    up.commit()
    assert _read(a, user, "/f") == b"hello"


def test_new_declaration_for_the_same_path_starts_over(nodes: tuple[_Node, _Node],
                                                       user: str) -> None:
    a, _ = nodes
    with begin_upload(a.meta, a.blobs, user, "/f", PART + 1, None, part_size=PART) as up:
        up.write(_data(PART, seed=2))
    again = begin_upload(a.meta, a.blobs, user, "/f", 3, None)
    assert again.offset == 0
    again.write(b"new")
    again.commit()
    assert _read(a, user, "/f") == b"new"


def test_overwrite_queues_the_old_blob_and_the_collector_deletes_it(
        nodes: tuple[_Node, _Node], user: str) -> None:
    a, _ = nodes
    first = begin_upload(a.meta, a.blobs, user, "/f", 3, None)
    first.write(b"old")
    old_blob = first.commit().blob
    second = begin_upload(a.meta, a.blobs, user, "/f", 3, None, overwrite=True)
    second.write(b"new")
    second.commit()
    assert old_blob is not None
    result = collect(a.meta, a.blobs, partial_ttl=3600)
    assert result.removed >= 1
    with pytest.raises(NotFound):
        a.blobs.size(old_blob)
    assert _read(a, user, "/f") == b"new"


def test_collector_aborts_the_multipart_upload_of_an_aborted_upload(
        nodes: tuple[_Node, _Node], user: str) -> None:
    a, _ = nodes
    with begin_upload(a.meta, a.blobs, user, "/f", 10, None) as up:
        mpu = up.pending.mpu
    a.meta.abort_upload(user, "/f")
    collect(a.meta, a.blobs, partial_ttl=3600)
    assert mpu not in {u.upload_id for u in a.blobs.list_multipart()}


def test_collector_deletes_the_blob_of_an_upload_completed_then_aborted(
        nodes: tuple[_Node, _Node], user: str) -> None:
    a, _ = nodes
    up = begin_upload(a.meta, a.blobs, user, "/f", 3, None)
    up.write(b"abc")
    up.writer.finish(3, None)            # completed in S3, never published...
    blob = up.pending.blob
    up.close()
    a.meta.abort_upload(user, "/f")      # ... and then the upload is given up
    collect(a.meta, a.blobs, partial_ttl=3600)
    with pytest.raises(NotFound):
        a.blobs.size(blob)


def test_collector_killed_after_deleting_runs_again_safely(nodes: tuple[_Node, _Node],
                                                           user: str) -> None:
    a, _ = nodes
    up = begin_upload(a.meta, a.blobs, user, "/f", 1, None)
    up.write(b"x")
    blob = up.commit().blob
    a.meta.remove(user, "/f")
    assert blob is not None
    a.blobs.delete(blob)                 # the first collector died before dequeuing
    collect(a.meta, a.blobs, partial_ttl=3600)
    assert (blob, "") not in a.meta.take_garbage(1000)


@pytest.mark.slow
def test_upload_resumes_after_a_postgresql_outage_mid_upload(
        pg_service: PostgresService, nodes: tuple[_Node, _Node], user: str) -> None:
    a, _ = nodes
    data = _data(2 * PART + 5, seed=3)
    up = begin_upload(a.meta, a.blobs, user, "/f", len(data), None, part_size=PART)
    up.write(data[:PART])
    pg_service.stop()
    try:
        with pytest.raises(StorageIOError):
            up.write(data[PART:])        # the second part cannot be recorded
    finally:
        pg_service.start()
    up.close()
    resumed = begin_upload(a.meta, a.blobs, user, "/f", len(data), None, part_size=PART)
    assert resumed.offset == PART
    resumed.write(data[PART:])
    resumed.commit()
    assert _read(a, user, "/f") == data
