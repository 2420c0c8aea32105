"""The S3 blob store and the multipart writer, against a real SeaweedFS (no mocks)."""

from __future__ import annotations

import hashlib
import os

import pytest

pytest.importorskip("boto3", reason="needs the objstore extra: pip install -e '.[objstore]'")

from storage.errors import IntegrityError, NotFound, StorageIOError
from storage.objstore.blobs import MIN_PART_SIZE, BlobConfig, BlobStore, parse_blob_url
from storage.objstore.writer import BlobWriter, Part, choose_part_size
from tests.objstore_services import S3_ACCESS_KEY, S3_SECRET_KEY, SeaweedService

PART = MIN_PART_SIZE


def _config(s3: SeaweedService, bucket: str, **kw: object) -> BlobConfig:
    args: dict[str, object] = {"bucket": bucket, "endpoint": s3.endpoint,
                               "access_key": S3_ACCESS_KEY, "secret_key": S3_SECRET_KEY,
                               "connect_timeout": 1.0, "read_timeout": 10.0, "max_attempts": 1}
    args.update(kw)
    return BlobConfig(**args)  # type: ignore[arg-type]


@pytest.fixture
def blobs(s3_service: SeaweedService, s3_bucket: str) -> BlobStore:
    return BlobStore(_config(s3_service, s3_bucket))


def _data(size: int, seed: int = 1) -> bytes:
    """Deterministic incompressible-ish bytes without holding a generator state."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048   # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def _recording() -> tuple[list[Part], object]:
    recorded: list[Part] = []
    return recorded, recorded.append


# ----------------------------------------------------------------- configuration
def test_blob_url_gives_bucket_endpoint_region_and_prefix() -> None:
    cfg = parse_blob_url("s3://files/ftpd?endpoint=http://127.0.0.1:8333&region=eu-west-1")
    assert (cfg.bucket, cfg.endpoint, cfg.region, cfg.prefix) == (
        "files", "http://127.0.0.1:8333", "eu-west-1", "ftpd/")


def test_blob_url_with_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="credentials"):
        parse_blob_url("s3://AKIA:secret@files?endpoint=http://127.0.0.1:1")


def test_blob_url_with_unknown_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        parse_blob_url("s3://files?endpoint=http://h:1&secret=x")


def test_repr_of_a_blob_store_never_shows_the_secret(blobs: BlobStore) -> None:
    assert S3_SECRET_KEY not in repr(blobs)
    assert S3_ACCESS_KEY not in repr(blobs)


def test_credentials_come_from_the_aws_environment_variables(
        s3_service: SeaweedService, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    store = BlobStore(_config(s3_service, s3_bucket, access_key=None, secret_key=None))
    blob = store.new_blob_id()
    store.put(blob, b"env")
    assert b"".join(store.read(blob)) == b"env"


def test_credentials_come_from_a_credentials_file(
        s3_service: SeaweedService, s3_bucket: str, tmp_path: object,
        monkeypatch: pytest.MonkeyPatch) -> None:
    creds = os.path.join(str(tmp_path), "credentials")
    with open(creds, "w") as f:
        f.write(f"[default]\naws_access_key_id = {S3_ACCESS_KEY}\n"
                f"aws_secret_access_key = {S3_SECRET_KEY}\n")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.path.join(str(tmp_path), "none"))
    store = BlobStore(_config(s3_service, s3_bucket, access_key=None, secret_key=None))
    blob = store.new_blob_id()
    store.put(blob, b"file")
    assert store.size(blob) == 4


def test_wrong_credentials_are_an_io_error_that_does_not_echo_them(
        s3_service: SeaweedService, s3_bucket: str) -> None:
    store = BlobStore(_config(s3_service, s3_bucket, secret_key="not-the-secret"))
    with pytest.raises(StorageIOError) as info:
        store.put(store.new_blob_id(), b"x")
    assert "not-the-secret" not in repr(info.value.to_dict())


def test_ensure_bucket_creates_a_missing_bucket_and_is_idempotent(
        s3_service: SeaweedService) -> None:
    store = BlobStore(_config(s3_service, f"ftpd-new-{os.getpid()}"))
    store.ensure_bucket()
    store.ensure_bucket()
    store.put(store.new_blob_id(), b"ok")


# ----------------------------------------------------------------- whole blobs
def test_blob_ids_are_random_and_distinct(blobs: BlobStore) -> None:
    ids = {blobs.new_blob_id() for _ in range(100)}
    assert len(ids) == 100


def test_ranged_read_returns_exactly_the_range(blobs: BlobStore) -> None:
    blob = blobs.new_blob_id()
    blobs.put(blob, bytes(range(256)) * 4)
    assert b"".join(blobs.read(blob, 10, 20)) == (bytes(range(256)) * 4)[10:20]
    assert b"".join(blobs.read(blob, 1000)) == (bytes(range(256)) * 4)[1000:]


def test_read_streams_in_chunks_no_larger_than_asked(blobs: BlobStore) -> None:
    blob = blobs.new_blob_id()
    data = _data(1 << 20)
    blobs.put(blob, data)
    chunks = list(blobs.read(blob, chunk_size=64 << 10))
    assert max(len(c) for c in chunks) <= 64 << 10
    assert len(chunks) >= 16
    assert b"".join(chunks) == data


def test_deleted_blob_is_not_found_and_deleting_again_succeeds(blobs: BlobStore) -> None:
    blob = blobs.new_blob_id()
    blobs.put(blob, b"bye")
    blobs.delete(blob)
    with pytest.raises(NotFound):
        blobs.size(blob)
    blobs.delete(blob)


def test_reading_a_missing_blob_is_not_found(blobs: BlobStore) -> None:
    with pytest.raises(NotFound):
        list(blobs.read(blobs.new_blob_id()))


# ----------------------------------------------------------------- multipart writer
def test_part_size_is_at_least_the_s3_minimum_and_fits_10000_parts() -> None:
    assert choose_part_size(1, 1 << 20) == MIN_PART_SIZE
    assert choose_part_size(10, 16 << 20) == 16 << 20
    assert choose_part_size(1 << 40) * 10_000 >= 1 << 40


def test_writer_uploads_and_records_each_full_part(blobs: BlobStore) -> None:
    blob = blobs.new_blob_id()
    recorded, on_part = _recording()
    writer = BlobWriter(blobs, blob, blobs.start_multipart(blob), PART, on_part=on_part)
    data = _data(2 * PART + 123)
    for i in range(0, len(data), 1 << 20):        # client-sized writes straddle parts
        writer.write(data[i:i + (1 << 20)])
    assert [p.size for p in recorded] == [PART, PART]
    assert writer.durable_offset == 2 * PART
    assert writer.offset == len(data)
    digest = writer.finish(len(data), hashlib.sha256(data).hexdigest())
    assert digest == hashlib.sha256(data).hexdigest()
    assert [p.size for p in recorded] == [PART, PART, 123]
    assert blobs.size(blob) == len(data)


def test_writer_of_an_empty_blob_stores_an_empty_object(blobs: BlobStore) -> None:
    blob = blobs.new_blob_id()
    writer = BlobWriter(blobs, blob, blobs.start_multipart(blob), PART)
    assert writer.finish(0) == hashlib.sha256(b"").hexdigest()
    assert blobs.size(blob) == 0


def test_wrong_sha256_deletes_the_blob_and_raises_integrity(blobs: BlobStore) -> None:
    blob = blobs.new_blob_id()
    writer = BlobWriter(blobs, blob, blobs.start_multipart(blob), PART)
    writer.write(b"hello")
    with pytest.raises(IntegrityError):
        writer.finish(5, "0" * 64)
    with pytest.raises(NotFound):
        blobs.size(blob)


def test_wrong_size_raises_integrity_before_completing(blobs: BlobStore) -> None:
    blob = blobs.new_blob_id()
    writer = BlobWriter(blobs, blob, blobs.start_multipart(blob), PART)
    writer.write(b"hello")
    with pytest.raises(IntegrityError):
        writer.finish(6)


def test_upload_resumed_by_another_store_completes_and_verifies_by_reading_back(
        s3_service: SeaweedService, s3_bucket: str) -> None:
    node_a = BlobStore(_config(s3_service, s3_bucket))
    node_b = BlobStore(_config(s3_service, s3_bucket))
    data = _data(2 * PART + 4096, seed=7)
    blob = node_a.new_blob_id()
    mpu = node_a.start_multipart(blob)
    recorded, on_part = _recording()
    first = BlobWriter(node_a, blob, mpu, PART, on_part=on_part)
    first.write(data[: PART + 1000])      # one part recorded, 1000 bytes lost in A's spool
    first.close()                         # node A dies
    second = BlobWriter(node_b, blob, mpu, PART, list(recorded))
    assert second.offset == PART           # the resume offset: the recorded parts
    second.write(data[second.offset:])
    assert second.finish(len(data), hashlib.sha256(data).hexdigest()) == \
        hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(b"".join(node_b.read(blob))).hexdigest() == \
        hashlib.sha256(data).hexdigest()


def test_resumed_upload_with_corrupt_bytes_is_caught_by_the_read_back(
        blobs: BlobStore) -> None:
    data = _data(PART + 10, seed=8)
    blob = blobs.new_blob_id()
    mpu = blobs.start_multipart(blob)
    recorded, on_part = _recording()
    first = BlobWriter(blobs, blob, mpu, PART, on_part=on_part)
    first.write(data[:PART])
    first.close()
    second = BlobWriter(blobs, blob, mpu, PART, list(recorded))
    second.write(b"X" * 10)               # not what was declared
    with pytest.raises(IntegrityError):
        second.finish(len(data), hashlib.sha256(data).hexdigest())


def test_part_uploaded_but_not_recorded_is_sent_again_harmlessly(blobs: BlobStore) -> None:
    data = _data(PART + 5, seed=9)
    blob = blobs.new_blob_id()
    mpu = blobs.start_multipart(blob)

    def lost(part: Part) -> None:
        raise StorageIOError("database down")

    first = BlobWriter(blobs, blob, mpu, PART, on_part=lost)
    with pytest.raises(StorageIOError):
        first.write(_data(PART, seed=99))   # different bytes, uploaded as part 1, never recorded
    second = BlobWriter(blobs, blob, mpu, PART, [])
    second.write(data)
    assert second.finish(len(data)) == hashlib.sha256(data).hexdigest()


def test_recorded_parts_with_a_gap_are_refused(blobs: BlobStore) -> None:
    with pytest.raises(ValueError):
        BlobWriter(blobs, blobs.new_blob_id(), "x", PART, [Part(2, PART, '"e"')])


def test_abandoned_multipart_uploads_past_the_ttl_are_aborted_except_live_ones(
        blobs: BlobStore) -> None:
    old, live = blobs.new_blob_id(), blobs.new_blob_id()
    old_mpu, live_mpu = blobs.start_multipart(old), blobs.start_multipart(live)
    ids = {u.upload_id for u in blobs.list_multipart()}
    assert {old_mpu, live_mpu} <= ids
    blobs.abort_stale(ttl=3600)                               # both are young: kept
    assert {old_mpu, live_mpu} <= {u.upload_id for u in blobs.list_multipart()}
    blobs.abort_stale(ttl=-60, keep=frozenset({live_mpu}))   # everything counts as old
    left = {u.upload_id for u in blobs.list_multipart()}
    assert old_mpu not in left
    assert live_mpu in left


# ----------------------------------------------------------------- outages
def test_object_store_down_is_an_io_error(s3_service: SeaweedService, s3_bucket: str) -> None:
    store = BlobStore(BlobConfig(bucket=s3_bucket, endpoint="http://127.0.0.1:9",
                                 access_key="a", secret_key="b", connect_timeout=0.5,
                                 max_attempts=1))
    with pytest.raises(StorageIOError) as info:
        store.put(store.new_blob_id(), b"x")
    assert info.value.code == "IO_ERROR"


@pytest.mark.slow
def test_upload_resumes_after_seaweedfs_is_stopped_and_started(
        s3_service: SeaweedService, s3_bucket: str) -> None:
    blobs = BlobStore(_config(s3_service, s3_bucket))
    data = _data(2 * PART + 77, seed=11)
    blob = blobs.new_blob_id()
    mpu = blobs.start_multipart(blob)
    recorded, on_part = _recording()
    writer = BlobWriter(blobs, blob, mpu, PART, on_part=on_part)
    writer.write(data[:PART])
    assert len(recorded) == 1
    s3_service.stop()
    try:
        with pytest.raises(StorageIOError):
            writer.write(data[PART:])      # the second part cannot go out
    finally:
        s3_service.start()
    resumed = BlobWriter(blobs, blob, mpu, PART, list(recorded))
    assert resumed.offset == PART
    resumed.write(data[resumed.offset:])
    assert resumed.finish(len(data), hashlib.sha256(data).hexdigest()) == \
        hashlib.sha256(data).hexdigest()
