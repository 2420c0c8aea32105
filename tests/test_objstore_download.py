"""``BlobDownloadProducer``: ranged GET chunks pulled ahead only as far as the socket drains.

A real blob in the session's SeaweedFS; the pool and the transport are
stand-ins that record what the producer asks of them (the reactor's side).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

pytest.importorskip("boto3", reason="needs the objstore extra: pip install -e '.[objstore]'")

import protocol.messages as m
from ftpd.blob_download import PREFETCH, BlobDownloadProducer
from protocol import DataChunk, MessageStream
from storage.objstore import BlobConfig, BlobStore
from storage.objstore.store import BlobSource
from tests.objstore_services import S3_ACCESS_KEY, S3_SECRET_KEY

MIB = 1 << 20


class StepPool:
    """Runs submitted jobs only when the test says so (as a worker would, later)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Any]] = []

    def submit(self, job: Any, done: Any) -> None:
        self.jobs.append((job, done))

    def run_all(self, limit: int = 1000) -> int:
        ran = 0
        while self.jobs and ran < limit:
            job, done = self.jobs.pop(0)
            try:
                result, error = job(), None
            except Exception as exc:
                result, error = None, exc
            done(result, error)
            ran += 1
        return ran


class Sink:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data


@pytest.fixture
def blob(s3_service: Any, s3_bucket: str) -> tuple[BlobSource, bytes]:
    store = BlobStore(BlobConfig(bucket=s3_bucket, endpoint=s3_service.endpoint,
                                 access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY))
    data = hashlib.sha256(b"d").digest() * (4 * MIB // 32 + 3)
    blob_id = store.new_blob_id()
    store.put(blob_id, data)
    return BlobSource(store, blob_id, len(data)), data


def _producer(source: BlobSource, offset: int = 0) -> BlobDownloadProducer:
    request = m.Get(id=7, path="/f", offset=offset, verify=False)
    return BlobDownloadProducer(request, "/f", source, source.size, offset, 256 * 1024)


def test_pulls_stop_at_the_prefetch_bound_while_the_socket_is_paused(blob: Any) -> None:
    source, _ = blob
    producer, pool, woken = _producer(source), StepPool(), []
    producer.attach(pool, lambda: woken.append(1), lambda: True)      # paused throughout
    pool.run_all()
    assert woken and not pool.jobs                  # it stopped asking by itself
    assert PREFETCH <= producer._fetched < PREFETCH + 512 * 1024
    assert producer._fetched < source.size


def test_a_drained_socket_gets_every_byte_from_the_offset(blob: Any) -> None:
    source, data = blob
    offset = MIB + 3
    producer, pool, sink = _producer(source, offset), StepPool(), Sink()
    producer.attach(pool, lambda: None, lambda: False)
    for _ in range(1000):
        pool.run_all()
        ended = producer.produce(sink)
        if ended is not None:
            break
    assert ended == "ok"
    stream = MessageStream("client", max_data=64 << 20)
    got = b"".join(bytes(e.data) for e in stream.feed(bytes(sink.out))
                   if isinstance(e, DataChunk))
    assert got == data[offset:]
    producer.end("ok", "u")
